/*
 * What the program is doing now, as its test runner names it: the pytest plugin sets the node id
 * of the running test (extsan_set_context in shim/activate.c), and what extsan records from then
 * on carries it. A finding names the context current when it was first recorded; an allocation
 * site names the context its instances were allocated in (the context is part of the site's
 * identity, see allocation_sites.h), so a leak found later names the test that created it.
 *
 * Each distinct context is interned once and never freed: a context is a pointer, compared by
 * address, valid for the life of the process (a forked child included).
 */
#ifndef EXTSAN_CONTEXT_H
#define EXTSAN_CONTEXT_H

#include <stdatomic.h>
#include <stddef.h>

extern const char *_Atomic current_context;

/* The current context (interned), or NULL when none is set. Lock-free, any thread. */
static inline const char *context_current(void)
{
    return atomic_load_explicit(&current_context, memory_order_acquire);
}

/* Makes `name` the current context (interning a copy); NULL or "" clears it. Any thread. */
void context_set(const char *name);

/* Bytes the interned contexts use. */
size_t context_memory_bytes(void);

#endif
