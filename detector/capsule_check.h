/*
 * The capsule-without-gil check. Every capsule wrapper brackets the real call with
 * capsule_call_begin/capsule_call_end; capsule destruction is bracketed the same way through
 * the capsule type's tp_dealloc slot, which sees every capsule freed, with or without a C
 * destructor, while PyCapsule_GetDestructor keeps returning what the caller set.
 */
#ifndef EXTSAN_CAPSULE_CHECK_H
#define EXTSAN_CAPSULE_CHECK_H

#include "gil.h"

struct capsule_call {
    struct gil_borrow borrowed;
};

/* The api names used for calls that are not a C-API function. */
#define CAPSULE_DESTRUCTION "capsule destruction"

/*
 * Fast path (GIL held): two function calls and a compare. Slow path: records the finding and,
 * with the protect option, takes the GIL for the duration of the call so it cannot crash.
 * `capsule` is the capsule argument (NULL for New and Import); `name` the name argument.
 */
void capsule_call_begin(struct capsule_call *call, const char *api, PyObject *capsule,
                        const char *name);
void capsule_call_end(struct capsule_call *call);

/* Puts extsan's tp_dealloc on the capsule type; the original is kept and called. */
void capsule_check_install(void);

#endif
