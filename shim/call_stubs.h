/*
 * The generic wrapper of every C-API function an extension imports (issue: call-without-gil).
 *
 * The GOT patcher points each such slot at a stub of its own, taken from a fixed pool in
 * extsan's text (so that unwinders and symbolisers know the code): the stub pushes its number
 * and jumps to one common routine, which checks that the calling thread has an attached thread
 * state with a few loads and compares and then jumps to the real function, leaving every
 * argument register, %rax (a variadic call's vector count), the stack and the return value as
 * the caller made them. Only without one does it save the argument registers and call into C
 * (call_check.h), before the same jump: the real function always runs.
 *
 * x86_64 only; elsewhere call_stubs_assign returns NULL and calls stay unchecked.
 */
#ifndef EXTSAN_CALL_STUBS_H
#define EXTSAN_CALL_STUBS_H

#include <stdbool.h>

/* Stubs in the pool: more than the functions of any CPython's C API. */
#define CALL_STUB_COUNT 4096

/*
 * Whether `name` was judged already (call_stubs_assign), and then its stub in *stub (NULL: not
 * one to wrap). LOCK_PATCH held.
 */
bool call_stubs_lookup(const char *name, void **stub);

/*
 * Records the judgement of `name`: a stub for the function whose real address is `real`, or
 * none when real is NULL (not a function to check). Returns the stub; NULL when real is, or the
 * pool is used up, or the architecture has none. LOCK_PATCH held.
 */
void *call_stubs_assign(const char *name, void *real);

/* True when address is one of the pool's stubs. */
bool call_stubs_contains(const void *address);

#endif
