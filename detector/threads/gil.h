/* "Does this thread hold the GIL?", and borrowing it for a call that was made without it. */
#ifndef EXTSAN_GIL_H
#define EXTSAN_GIL_H

#include "python_api.h"

#include <stdatomic.h>
#include <stdbool.h>

/*
 * Thread-local storage read at a fixed offset from the thread pointer. The default model calls
 * __tls_get_addr on every access, which on the wrappers' fast paths costs as much as the rest of
 * their work; initial-exec takes a few bytes of the static TLS space glibc keeps for libraries
 * loaded later.
 */
#define EXTSAN_THREAD_LOCAL _Thread_local __attribute__((tls_model("initial-exec")))

/*
 * Where the runtime keeps the attached thread state, read directly once located (gil.c): the
 * getter it exports costs a call, and in a shared libpython a __tls_get_addr, on every
 * wrapper's fast path. NULL until located, and forever when it cannot be: then the getter.
 */
#if PY_VERSION_HEX >= 0x030C0000
/* 3.12+: this thread's instance of the runtime's thread-local variable. */
extern EXTSAN_THREAD_LOCAL PyThreadState **gil_thread_state_variable;
#else
/* 3.9-3.11: the runtime's global "GIL holder" field, and this thread's id as the runtime
   records it (pthread_self), cached. */
extern PyThreadState *_Atomic *_Atomic gil_holder_variable;
extern EXTSAN_THREAD_LOCAL unsigned long gil_this_thread;
#endif

/* Locates the variables above if it can; returns the attached thread state either way. */
PyThreadState *gil_locate_thread_state(void);

#if PY_VERSION_HEX < 0x030C0000
/* The thread state this thread was last found to hold the GIL with (3.9-3.11). */
extern EXTSAN_THREAD_LOCAL PyThreadState *gil_own_state;

/* gil.c: whether `current`, the GIL holder and not gil_own_state, is this thread's. */
PyThreadState *gil_identify_holder(PyThreadState *current, unsigned long this_thread);

/*
 * 3.9-3.11: the GIL holder `current` is this thread's attached state, or NULL. The holder is
 * usually another thread's when it is not the state this thread last held the GIL with, and
 * that thread may free it at any moment after releasing the GIL: it is never dereferenced here
 * unless it is that remembered state (gil_identify_holder reads it safely). The thread id
 * compare catches a remembered state that was deleted and whose memory now holds another
 * thread's state, which then holds the GIL and is alive.
 */
static inline PyThreadState *gil_holder_if_ours(PyThreadState *current, unsigned long this_thread)
{
    if (!current)
        return NULL;
    if (__builtin_expect(current == gil_own_state && current->thread_id == this_thread, 1))
        return current;
    return gil_identify_holder(current, this_thread);
}
#endif

/*
 * The thread state the calling thread has attached (it holds the GIL), NULL when it has none.
 * Never PyGILState_Check(): that answers 1 for every thread once a subinterpreter has existed.
 * Inline: it is every wrapper's fast path, with no lock and no allocation.
 */
static inline PyThreadState *gil_attached_thread_state(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyThreadState **variable = gil_thread_state_variable;
    return __builtin_expect(variable != NULL, 1) ? *variable : gil_locate_thread_state();
#else
    PyThreadState *_Atomic *holder =
        atomic_load_explicit(&gil_holder_variable, memory_order_relaxed);
    unsigned long this_thread = gil_this_thread;
    if (__builtin_expect(!holder || !this_thread, 0))
        return gil_locate_thread_state();
    return gil_holder_if_ours(atomic_load_explicit(holder, memory_order_relaxed), this_thread);
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
    enum { BORROW_NONE, BORROW_ENSURED, BORROW_CREATED } how;
    PyGILState_STATE state; /* BORROW_ENSURED: what PyGILState_Release restores */
    PyThreadState *created; /* BORROW_CREATED: the thread state made for the call */
};

/*
 * Takes the GIL for the calling thread if that is safe (running, not finalizing: a thread that
 * asks for the GIL during finalization is terminated). Returns false when it was not taken.
 */
bool gil_borrow(struct gil_borrow *borrow);
void gil_give_back(struct gil_borrow *borrow);

#endif
