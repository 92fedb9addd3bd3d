#define _GNU_SOURCE
#include "findings.h"
#include "locks.h"

#include "context.h"
#include "gil.h"
#include "heap_analysis.h"
#include "registry.h"
#include "options.h"
#include "symbolize.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct finding *first_finding, *last_finding;
static unsigned finding_total;

void thread_describe(struct thread_description *out)
{
    out->tid = gettid();
    if (pthread_getname_np(pthread_self(), out->name, sizeof out->name) != 0)
        out->name[0] = '\0';
    out->has_python_state = thread_has_python_state();
}

/* Appends a new finding; LOCK_FINDINGS held. */
static struct finding *append_finding(enum finding_kind kind, stack_id stack)
{
    struct finding *finding = calloc(1, sizeof *finding);
    if (!finding)
        return NULL;
    finding->kind = kind;
    finding->stack = stack;
    finding->count = 1;
    finding->context = context_current();
    if (last_finding)
        last_finding->next = finding;
    else
        first_finding = finding;
    last_finding = finding;
    finding_total++;
    return finding;
}

/* The first finding `matches` accepts (the finding and `wanted`); LOCK_FINDINGS held. */
static struct finding *first_match(bool (*matches)(const struct finding *, const void *),
                                   const void *wanted)
{
    struct finding *finding = first_finding;
    while (finding && !matches(finding, wanted))
        finding = finding->next;
    return finding;
}

/* A finding about a type, as `wanted` (kind, type, and whether it must be the analysis'). */
struct type_key {
    enum finding_kind kind;
    const struct type_record *type;
    bool from_analysis;
};

static bool is_about_type(const struct finding *finding, const void *wanted)
{
    const struct type_key *key = wanted;
    return finding->kind == key->kind && finding->type == key->type &&
           (!key->from_analysis || finding->heap);
}

struct finding *findings_record_type(enum finding_kind kind, struct type_record *type)
{
    lock_acquire(LOCK_FINDINGS);
    struct finding *finding = first_match(is_about_type, &(struct type_key){kind, type, false});
    if (finding)
        finding->count++;
    else if ((finding = append_finding(kind, type->created_at))) {
        finding->type = type;
        snprintf(finding->type_name, sizeof finding->type_name, "%s", type->type->tp_name);
    }
    lock_release(LOCK_FINDINGS);
    return finding;
}

struct finding *findings_find_heap(enum finding_kind kind, struct type_record *type)
{
    lock_acquire(LOCK_FINDINGS);
    struct finding *finding = first_match(is_about_type, &(struct type_key){kind, type, true});
    lock_release(LOCK_FINDINGS);
    return finding;
}

static bool same_leaked_cycle(const struct heap_details *a, const struct heap_details *b)
{
    if (a->example_site != b->example_site || a->objects != b->objects ||
        a->type_count != b->type_count)
        return false;
    for (unsigned i = 0; i < a->type_count; i++)
        if (a->types[i].count != b->types[i].count || strcmp(a->types[i].name, b->types[i].name))
            return false;
    return true;
}

struct leaked_cycle_key {
    const struct type_record *type;
    const struct heap_details *details;
};

static bool is_like_leaked_cycle(const struct finding *finding, const void *wanted)
{
    const struct leaked_cycle_key *key = wanted;
    return finding->kind == FINDING_LEAKED_CYCLE && finding->type == key->type &&
           same_leaked_cycle(finding->heap, key->details);
}

struct finding *findings_find_leaked_cycle(struct type_record *type,
                                           const struct heap_details *details)
{
    lock_acquire(LOCK_FINDINGS);
    struct finding *finding =
        first_match(is_like_leaked_cycle, &(struct leaked_cycle_key){type, details});
    lock_release(LOCK_FINDINGS);
    return finding;
}

struct finding *findings_record_heap(enum finding_kind kind, struct type_record *type,
                                     struct heap_details *details)
{
    lock_acquire(LOCK_FINDINGS);
    struct finding *finding = append_finding(kind, type->created_at);
    if (finding) {
        finding->type = type;
        finding->heap = details;
        snprintf(finding->type_name, sizeof finding->type_name, "%s", details->type_name);
        /* The test that allocated the example holder, not the one running the analysis; none
           when its site is unknown (the running test need not have made it). */
        const struct allocation_site *site = allocation_site_get(details->example_site);
        finding->context = site ? site->context : NULL;
    }
    lock_release(LOCK_FINDINGS);
    return finding;
}

/* Identical call findings: same kind, same API, same stack. */
struct call_key {
    enum finding_kind kind;
    const char *api;
    stack_id stack;
};

static bool is_same_call(const struct finding *finding, const void *wanted)
{
    const struct call_key *key = wanted;
    return finding->kind == key->kind && !strcmp(finding->api, key->api) &&
           finding->stack == key->stack;
}

struct finding *findings_record_call(enum finding_kind kind, const char *api,
                                     const char *capsule_name,
                                     const struct thread_description *thread, bool *first)
{
    stack_id stack = stack_capture_caller((unsigned)extsan_options.stack_depth);
    lock_acquire(LOCK_FINDINGS);
    struct finding *finding = first_match(is_same_call, &(struct call_key){kind, api, stack});
    *first = finding == NULL;
    if (finding) {
        finding->count++;
    } else if ((finding = append_finding(kind, stack))) {
        finding->api = api;
        finding->has_capsule_name = capsule_name != NULL;
        if (capsule_name)
            snprintf(finding->capsule, sizeof finding->capsule, "%s", capsule_name);
        finding->thread = *thread;
    }
    lock_release(LOCK_FINDINGS);
    return finding;
}

struct finding *findings_record_deadly(int signal, int code, uintptr_t fault_address,
                                       const uintptr_t *pcs, unsigned depth,
                                       const struct thread_description *thread)
{
    stack_id stack = stack_depot_put(pcs, depth);
    lock_acquire(LOCK_FINDINGS);
    struct finding *finding = append_finding(FINDING_DEADLY_SIGNAL, stack);
    if (finding) {
        finding->signal = signal;
        finding->signal_code = code;
        finding->fault_address = fault_address;
        finding->thread = *thread;
    }
    lock_release(LOCK_FINDINGS);
    return finding;
}

struct leak_key {
    const char *type_name;
    uint32_t site;
};

static bool is_same_leak(const struct finding *finding, const void *wanted)
{
    const struct leak_key *key = wanted;
    return finding->kind == FINDING_REFERENCE_LEAK && finding->python_site == key->site &&
           !strcmp(finding->type_name, key->type_name);
}

struct finding *findings_record_leak(const char *type_name, uint32_t site, unsigned per_repetition,
                                     unsigned repetitions, long unexplained_references)
{
    const struct allocation_site *where = allocation_site_get(site);
    lock_acquire(LOCK_FINDINGS);
    struct finding *finding = first_match(is_same_leak, &(struct leak_key){type_name, site});
    if (finding) {
        finding->count++;
    } else if ((finding = append_finding(FINDING_REFERENCE_LEAK, where ? where->native : 0))) {
        snprintf(finding->type_name, sizeof finding->type_name, "%s", type_name);
        finding->python_site = site;
    }
    if (finding) {
        finding->leaked_per_repetition = per_repetition;
        finding->repetitions = repetitions;
        finding->unexplained_references = unexplained_references;
    }
    lock_release(LOCK_FINDINGS);
    return finding;
}

void findings_for_each_since(unsigned first, void (*visit)(struct finding *finding, void *context),
                             void *context)
{
    lock_acquire(LOCK_FINDINGS);
    unsigned index = 0;
    for (struct finding *finding = first_finding; finding; finding = finding->next)
        if (index++ >= first)
            visit(finding, context);
    lock_release(LOCK_FINDINGS);
}

void findings_for_each(void (*visit)(struct finding *finding, void *context), void *context)
{
    findings_for_each_since(0, visit, context);
}

unsigned findings_count(void)
{
    lock_acquire(LOCK_FINDINGS);
    unsigned total = finding_total;
    lock_release(LOCK_FINDINGS);
    return total;
}

void findings_reset_after_fork(void)
{
    first_finding = last_finding = NULL; /* the parent's records stay allocated, unreferenced */
    finding_total = 0;
}
