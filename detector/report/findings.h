/*
 * The findings of this process. Identical findings (same kind, API and stack) are stored once
 * with a count. Recording happens on hooks' slow paths, from any thread.
 */
#ifndef EXTSAN_FINDINGS_H
#define EXTSAN_FINDINGS_H

#include "stacks.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * Every kind of finding, X(constant, name): the name is the kind's in the reports and in
 * suppression files, listed in this order where all are (the CLI's list is the same).
 */
#define FINDING_KINDS(X)                                                                           \
    X(FINDING_CAPSULE_WITHOUT_GIL, "capsule-without-gil")                                          \
    /* any other C-API function called without an attached thread state (call_check.h) */          \
    X(FINDING_CALL_WITHOUT_GIL, "call-without-gil")                                                \
    X(FINDING_HIDDEN_REFERENCE, "hidden-reference")                                                \
    X(FINDING_INCOMPLETE_TRAVERSE, "incomplete-traverse")                                          \
    X(FINDING_LEAKED_CYCLE, "leaked-cycle")                                                        \
    /* HAVE_GC without tp_traverse, seen at creation (3.9, 3.10) */                                \
    X(FINDING_TRAVERSE_MISSING_GC, "traverse-missing-gc")                                          \
    /* objects a repeated piece of work leaves alive, references unexplained (leak_check.h) */     \
    X(FINDING_REFERENCE_LEAK, "reference-leak")                                                    \
    /* the process was killed by a crash signal (signals.h) */                                     \
    X(FINDING_DEADLY_SIGNAL, "deadly-signal")

enum finding_kind {
#define DECLARE_KIND(constant, name) constant,
    FINDING_KINDS(DECLARE_KIND)
#undef DECLARE_KIND
};

enum {
#define COUNT_KIND(constant, name) +1
    FINDING_KIND_COUNT = 0 FINDING_KINDS(COUNT_KIND)
#undef COUNT_KIND
};

struct type_record;
struct heap_details; /* what the heap analysis found, owned by the finding (heap_analysis.h) */
struct suppression_rule;

/* The JSON and text name of a kind, e.g. "capsule-without-gil"; NULL for no kind. */
static inline const char *finding_kind_name(int kind)
{
    static const char *const names[] = {
#define NAME_KIND(constant, name) [constant] = name,
        FINDING_KINDS(NAME_KIND)
#undef NAME_KIND
    };
    return kind >= 0 && kind < FINDING_KIND_COUNT ? names[kind] : NULL;
}

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
    uint32_t python_site; /* site_id: the Python code that made the first call; 0 unknown */
    stack_id stack;
    unsigned long count;
    /* Findings about a type: the type, its name (copied: the type may be gone by exit time),
       and for the analysis' kinds what it found. */
    struct type_record *type;
    char type_name[256];
    struct heap_details *heap;
    /* deadly-signal: the signal, its si_code, and the faulting address (SIGSEGV, SIGBUS) */
    int signal;
    int signal_code;
    uintptr_t fault_address;
    /* reference-leak: the objects leaked per repetition (the fewest of any), the repetitions
       measured, and the references no referrer explains on the example (python_site, stack:
       where it was allocated) */
    unsigned leaked_per_repetition, repetitions;
    long unexplained_references;
    /* The test (context.h) current at the first occurrence; for the heap analysis' kinds, the
       one the example holder was allocated in. NULL when none was set. */
    const char *context;
    bool text_written; /* its text block is already on stderr */
    /* The suppressions rule that matched (suppressions.h); decided once, at report time. */
    const struct suppression_rule *suppressed_by;
    bool suppression_decided;
    struct finding *next;
};

/* Describes the calling thread. */
void thread_describe(struct thread_description *out);

/*
 * Records one occurrence of a call made without the GIL (kind capsule-without-gil or
 * call-without-gil) at the caller's stack (extsan's own frames are dropped): one finding per
 * kind, API and stack. `api` must outlive the finding. capsule_name is NULL for an unnamed
 * capsule, an unknown object or another call; thread describes the calling thread as it was when
 * the call was made. Returns the stored finding, NULL when out of memory; *first says whether
 * this call made it (decided under the findings' lock: of two threads making the same call,
 * exactly one is first).
 */
struct finding *findings_record_call(enum finding_kind kind, const char *api,
                                     const char *capsule_name,
                                     const struct thread_description *thread, bool *first);

/*
 * Records a finding about a type (once per kind and type; a repeat only counts). The stack is
 * the type's creation stack. Returns the stored finding, NULL when out of memory.
 */
struct finding *findings_record_type(enum finding_kind kind, struct type_record *type);

/* The finding of `kind` about `type` recorded so far by the heap analysis, or NULL. */
struct finding *findings_find_heap(enum finding_kind kind, struct type_record *type);

/*
 * A leaked-cycle finding like `details` (same holder type, allocation site, object count and
 * types) recorded so far, or NULL.
 */
struct finding *findings_find_leaked_cycle(struct type_record *type,
                                           const struct heap_details *details);

/*
 * Records a heap-analysis finding, taking ownership of details. Returns the stored finding,
 * NULL when out of memory (details then stay the caller's).
 */
struct finding *findings_record_heap(enum finding_kind kind, struct type_record *type,
                                     struct heap_details *details);

/*
 * Records the deadly-signal finding of a crash: the signal as siginfo describes it and the
 * stack of the thread it hit (already captured, pcs[0] the faulting instruction). In a signal
 * handler, on the path that may allocate (signals.c). NULL when out of memory.
 */
struct finding *findings_record_deadly(int signal, int code, uintptr_t fault_address,
                                       const uintptr_t *pcs, unsigned depth,
                                       const struct thread_description *thread);

/*
 * Records a reference-leak finding about objects of type `type_name` allocated at `site`, or
 * counts one more check that found the same (same type and site): the figures are the latest.
 * NULL when out of memory.
 */
struct finding *findings_record_leak(const char *type_name, uint32_t site, unsigned per_repetition,
                                     unsigned repetitions, long unexplained_references);
/* Calls visit for each finding in order of first occurrence, under the findings lock. */
void findings_for_each(void (*visit)(struct finding *finding, void *context), void *context);

/* The same, from the finding numbered `first` on (0: the first one made). */
void findings_for_each_since(unsigned first, void (*visit)(struct finding *finding, void *context),
                             void *context);

unsigned findings_count(void);

/* In a forked child: the parent's findings are the parent's to report. */
void findings_reset_after_fork(void);

#endif
