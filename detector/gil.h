/* "Does this thread hold the GIL?", and borrowing it for a call that was made without it. */
#ifndef EXTSAN_GIL_H
#define EXTSAN_GIL_H

#include "python_api.h"

#include <stdbool.h>

/*
 * The thread state the calling thread has attached (it holds the GIL), NULL when it has none.
 * Never PyGILState_Check(): that answers 1 for every thread once a subinterpreter has existed.
 * Inline: it is every wrapper's fast path, with no lock and no allocation.
 */
static inline PyThreadState *gil_attached_thread_state(void)
{
    PyThreadState *current = python_api.unchecked_thread_state();
#if PY_VERSION_HEX >= 0x030C0000
    /* 3.12+: the getter reads this thread's own attached state. */
    return current;
#else
    /*
     * 3.9-3.11: the getter returns the global GIL holder, possibly another thread's state.
     * It is ours when it is this thread's gilstate state (the common case, a pointer compare)
     * or, for a state made by hand or in a subinterpreter, when it was created on this thread.
     * The holder cannot be freed while we read it unless it is dropped concurrently, a window
     * of a few instructions on an already-buggy path (we only get here when it is not ours).
     */
    if (!current)
        return NULL;
    if (current == python_api.gilstate_this_thread())
        return current;
    return current->thread_id == python_api.thread_ident() ? current : NULL;
#endif
}

/* True when the calling thread has an attached thread state (holds the GIL). */
static inline bool gil_held(void)
{
    return gil_attached_thread_state() != NULL;
}

/* True when the calling thread has a Python thread state at all, attached or not. */
bool thread_has_python_state(void);

/* Whether the C API can be judged at all: the interpreter is initialized and not yet gone. */
bool python_is_running(void);

struct gil_borrow {
    bool taken;
    PyGILState_STATE state;
};

/*
 * Takes the GIL for the calling thread if that is safe (running, not finalizing: a thread that
 * asks for the GIL during finalization is terminated). Returns false when it was not taken.
 */
bool gil_borrow(struct gil_borrow *borrow);
void gil_give_back(struct gil_borrow *borrow);

#endif
