/*
 * locks.c: a fork while another thread holds one of extsan's locks leaves every lock free in the
 * child (the forking thread waits for it, holds all of them across fork, and releases them in
 * both processes), and the parent goes on unharmed.
 */
#define _GNU_SOURCE
#include "check.h"

#include "locks.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static atomic_bool holding;

/* Holds `lock` for a while, as a report being written does. */
static void *hold_for_a_while(void *lock)
{
    lock_acquire((enum extsan_lock)(long)lock);
    atomic_store(&holding, true);
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    lock_release((enum extsan_lock)(long)lock);
    return NULL;
}

/* In a child: takes every lock once, in order; exits 0, or is killed by the alarm if one hangs. */
static void child_takes_every_lock(void)
{
    alarm(10);
    for (int lock = 0; lock < LOCK_COUNT; lock++) {
        lock_acquire((enum extsan_lock)lock);
        lock_release((enum extsan_lock)lock);
    }
    _exit(0);
}

static void test_fork_while_a_lock_is_held(enum extsan_lock lock)
{
    atomic_store(&holding, false);
    pthread_t thread;
    pthread_create(&thread, NULL, hold_for_a_while, (void *)(long)lock);
    while (!atomic_load(&holding))
        sched_yield();
    pid_t child = fork();
    if (child == 0)
        child_takes_every_lock();
    int status = 0;
    CHECK(child > 0 && waitpid(child, &status, 0) == child, "fork or wait failed");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the child could not take every lock after a fork while lock %d was held (status %#x)",
          (int)lock, status);
    pthread_join(thread, NULL);
    lock_acquire(lock); /* and the parent can still take it */
    lock_release(lock);
}

int main(void)
{
    locks_hold_across_fork();
    locks_hold_across_fork(); /* twice: registered once */
    for (int lock = 0; lock < LOCK_COUNT; lock++)
        test_fork_while_a_lock_is_held((enum extsan_lock)lock);
    return checks_summary();
}
