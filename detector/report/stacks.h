/*
 * Native stacks: capture with libunwind, and a depot that stores each distinct stack once and
 * names it by a small integer, so that findings and (later) every live instance can refer to
 * their stack for the cost of one word.
 */
#ifndef EXTSAN_STACKS_H
#define EXTSAN_STACKS_H

#include <stdint.h>

#define STACK_MAX_DEPTH 128

/* 0 means "no stack". */
typedef uint32_t stack_id;

/*
 * Fills pcs with up to max_depth return addresses of the calling thread, the caller of
 * stack_capture first, after dropping `skip` more frames. Async-signal-safe; does not allocate.
 */
unsigned stack_capture(uintptr_t *pcs, unsigned max_depth, unsigned skip);

/*
 * The stack of the thread a signal interrupted, from the ucontext_t the handler was given:
 * pcs[0] is the interrupted instruction, then its callers. Async-signal-safe; does not allocate.
 */
unsigned stack_capture_interrupted(void *ucontext, uintptr_t *pcs, unsigned max_depth);

/*
 * The stack of whoever called into extsan: captures the calling thread's stack, drops the
 * innermost frames that lie in extsan's own library (however the compiler inlined them), keeps
 * up to max_depth of the rest and stores them. 0 when nothing could be captured or stored.
 */
stack_id stack_capture_caller(unsigned max_depth);

/* Stores a stack (once per distinct content) and returns its id; 0 if out of memory. */
stack_id stack_depot_put(const uintptr_t *pcs, unsigned depth);

/* The frames of a stored stack; *depth receives their count. NULL for id 0 or an unknown id. */
const uintptr_t *stack_depot_get(stack_id id, unsigned *depth);

/* Forgets every stack (used in a forked child before it records its own). */
void stack_depot_reset_after_fork(void);

#endif
