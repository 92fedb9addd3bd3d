/*
 * Every lock of extsan's, in one table, and what fork does with them.
 *
 * The child of fork has only the thread that forked. A lock another thread held at that moment
 * would stay held in the child forever, and the data it guards might be half-changed. So the
 * forking thread takes every lock just before fork (pthread_atfork's prepare) and releases them
 * in both processes after: the child starts with each lock free and each structure consistent.
 *
 * They are taken in the order of this enum, which is the order in which extsan's code nests them
 * (a thread holding one may take a later one, never an earlier one), so prepare cannot deadlock
 * with a thread that holds one lock and waits for the next. None is ever held while waiting for
 * the GIL, which the thread calling os.fork() holds.
 */
#ifndef EXTSAN_LOCKS_H
#define EXTSAN_LOCKS_H

enum extsan_lock {
    LOCK_REPORT,    /* report.c: one report written at a time */
    LOCK_FINDINGS,  /* findings.c: the list of findings */
    LOCK_CONTEXTS,  /* context.c: interned test names */
    LOCK_TYPES,     /* registry.c: type records */
    LOCK_SITES,     /* allocation_sites.c: site records */
    LOCK_SYMBOLIZE, /* symbolize.c: the libdwfl session (libdw may load libdebuginfod) */
    LOCK_PATCH,     /* got_patch.c: GOT rewriting, also when a dlsym follows a load */
    LOCK_DEPOT,     /* stacks.c: the stack depot's writers */
    /* gil.c: creating and deleting the thread state of a thread that borrows the GIL */
    LOCK_THREAD_STATES,
    LOCK_COUNT
};

void lock_acquire(enum extsan_lock lock);
void lock_release(enum extsan_lock lock);

/*
 * Registers the fork handlers that hold every lock across fork. Call once, before any other
 * module registers a child handler that takes a lock: child handlers run in the order they were
 * registered, and the locks must be free by then.
 */
void locks_hold_across_fork(void);

#endif
