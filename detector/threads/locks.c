#define _GNU_SOURCE
#include "locks.h"

#include <pthread.h>

static pthread_mutex_t locks[LOCK_COUNT] = {
    [0 ... LOCK_COUNT - 1] = PTHREAD_MUTEX_INITIALIZER,
};

void lock_acquire(enum extsan_lock lock)
{
    pthread_mutex_lock(&locks[lock]);
}

void lock_release(enum extsan_lock lock)
{
    pthread_mutex_unlock(&locks[lock]);
}

static void acquire_all(void)
{
    for (int lock = 0; lock < LOCK_COUNT; lock++)
        pthread_mutex_lock(&locks[lock]);
}

/* In the parent, and in the child, where the forking thread lives on and owns them all. */
static void release_all(void)
{
    for (int lock = LOCK_COUNT - 1; lock >= 0; lock--)
        pthread_mutex_unlock(&locks[lock]);
}

static void register_fork_handlers(void)
{
    pthread_atfork(acquire_all, release_all, release_all);
}

void locks_hold_across_fork(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_handlers);
}
