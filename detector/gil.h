/* "Does this thread hold the GIL?", and borrowing it for a call that was made without it. */
#ifndef EXTSAN_GIL_H
#define EXTSAN_GIL_H

#include "python_api.h"

#include <stdbool.h>

/*
 * True when the calling thread has an attached thread state. Never PyGILState_Check(): that
 * answers 1 for every thread once a subinterpreter has existed. Hot path: no locks, no
 * allocation.
 */
bool gil_held(void);

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
