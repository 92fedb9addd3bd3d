/*
 * The findings of this process. Identical findings (same kind, API and stack) are stored once
 * with a count. Recording happens on hooks' slow paths, from any thread.
 */
#ifndef EXTSAN_FINDINGS_H
#define EXTSAN_FINDINGS_H

#include "stacks.h"

#include <stdbool.h>
#include <sys/types.h>

enum finding_kind {
    FINDING_CAPSULE_WITHOUT_GIL,
};

/* The JSON and text name of a kind, e.g. "capsule-without-gil". */
const char *finding_kind_name(enum finding_kind kind);

struct thread_description {
    pid_t tid;
    char name[16];
    bool has_python_state;
};

struct finding {
    enum finding_kind kind;
    const char *api;   /* static string: "PyCapsule_New", "capsule destruction", ... */
    char capsule[128]; /* the capsule's name, when has_capsule_name */
    bool has_capsule_name;
    struct thread_description thread; /* of the first occurrence */
    stack_id stack;
    unsigned long count;
    bool text_written; /* its text block is already on stderr */
    struct finding *next;
};

/* Describes the calling thread. */
void thread_describe(struct thread_description *out);

/*
 * Records one occurrence of a capsule-without-gil finding at the caller's stack (extsan's own
 * frames are dropped). capsule_name is NULL for an unnamed capsule or an unknown object; thread
 * describes the calling thread as it was when the call was made.
 * Returns the stored finding, NULL when out of memory.
 */
struct finding *findings_record_capsule(const char *api, const char *capsule_name,
                                        const struct thread_description *thread);

/* Calls visit for each finding in order of first occurrence, under the findings lock. */
void findings_for_each(void (*visit)(struct finding *finding, void *context), void *context);

unsigned findings_count(void);

/* In a forked child: the parent's findings are the parent's to report. */
void findings_reset_after_fork(void);

#endif
