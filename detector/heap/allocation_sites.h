/*
 * Allocation sites: the cache that turns a cheap identity (return address of the allocating
 * call, innermost Python code object and instruction) into a site id, and the site records.
 *
 * The fast path is one probe of an open-addressing table that is only ever added to. A miss
 * captures the native stack into the stack depot and the Python stack (file, qualified name,
 * line) into a new record. The code object that names a site is not kept alive: a program that
 * compiles code as it goes (eval, exec, numpy's tests) would keep every code object that ever
 * made an instance, and the reference-leak check would see them leaked. A code object born at a
 * dead one's address, with the same first line, instruction, native caller and test, takes its
 * site: its Python stack can then be another code's.
 */
#ifndef EXTSAN_ALLOCATION_SITES_H
#define EXTSAN_ALLOCATION_SITES_H

#include "python_stack.h"
#include "registry.h"

struct site_key {
    uintptr_t return_address;
    struct python_position python;
    const char *context; /* context_current() (interned: compared by address) */
};

static inline bool site_key_equal(const struct site_key *a, const struct site_key *b)
{
    return a->return_address == b->return_address && a->python.code == b->python.code &&
           a->python.instruction == b->python.instruction &&
           a->python.first_line == b->python.first_line && a->context == b->context;
}

/* The site found last: a loop allocating from one place finds it without hashing. */
extern struct site_key site_last_key;
extern site_id site_last_found; /* 0: none */

site_id site_lookup_in_cache(const struct site_key *key);

/*
 * The site of key, or 0 when it is not cached yet. Called with the registry's lock held (the
 * table may grow under a concurrent site_add otherwise).
 */
static inline site_id site_lookup(const struct site_key *key)
{
    if (site_last_found && site_key_equal(key, &site_last_key))
        return site_last_found;
    return site_lookup_in_cache(key);
}

/*
 * Makes the record of a site missed by site_lookup: captures the stacks of the calling thread,
 * which holds the GIL (`thread`). Runs Python C-API calls: never with the registry's lock held.
 * Returns the new site's id, to be published with site_publish, or 0 when out of memory.
 */
site_id site_create(const struct site_key *key, PyThreadState *thread);

/*
 * The same for `thread`, the calling thread's own thread state while it is detached (a call
 * made without the GIL), which must not call the C API: its frames cannot change meanwhile, and
 * are read without it (names that are not already UTF-8 in memory are left out). The site is
 * for a finding, never cached.
 */
site_id site_create_detached(PyThreadState *thread);

/*
 * Enters `site` (from site_create) into the cache under `key`, with the registry's lock held.
 * When another thread published the same key meanwhile, returns that site instead (the new
 * record stays unused).
 */
site_id site_publish(const struct site_key *key, site_id site);

size_t sites_memory_bytes(void);
size_t sites_count(void);

/* In a forked child, after the stack depot was reset: stores every site's stack again. */
void sites_restore_stacks_after_fork(void);

#endif
