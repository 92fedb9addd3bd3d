/*
 * The capsule-without-gil check. Every capsule wrapper brackets the real call with
 * capsule_call_begin/capsule_call_end; capsule destruction is bracketed the same way through
 * the capsule type's tp_dealloc slot, which sees every capsule freed, with or without a C
 * destructor, while PyCapsule_GetDestructor keeps returning what the caller set.
 */
#ifndef EXTSAN_CAPSULE_CHECK_H
#define EXTSAN_CAPSULE_CHECK_H

#include "gil.h"
#include "options.h"

struct capsule_call {
    struct gil_borrow borrowed;
};

/* The api names used for calls that are not a C-API function. */
#define CAPSULE_DESTRUCTION "capsule destruction"

/*
 * Slow path of capsule_call_begin: records the finding and, with the protect option, takes the
 * GIL for the duration of the call so that it cannot crash.
 */
void capsule_call_without_gil(struct capsule_call *call, const char *api, PyObject *capsule,
                              const char *name);

/*
 * Brackets one capsule call. Inline, because it is the cost every correct capsule call pays:
 * one call into the runtime for the thread state and a compare. `capsule` is the capsule
 * argument (NULL for New and Import); `name` the name argument.
 */
static inline void capsule_call_begin(struct capsule_call *call, const char *api, PyObject *capsule,
                                      const char *name)
{
    call->borrowed.how = BORROW_NONE;
    if (__builtin_expect(!extsan_options.check_capsules || gil_held(), 1))
        return;
    capsule_call_without_gil(call, api, capsule, name);
}

static inline void capsule_call_end(struct capsule_call *call)
{
    if (__builtin_expect(call->borrowed.how != BORROW_NONE, 0))
        gil_give_back(&call->borrowed);
}

/* Puts extsan's tp_dealloc on the capsule type; the original is kept and called. */
void capsule_check_install(void);

#endif
