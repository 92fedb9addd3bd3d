/*
 * The exit analysis of references hidden from the cyclic GC. Runs once per process from a Python
 * atexit callback (GIL held, every object still alive), and also on demand before that
 * (heap_analysis_check_now), as named passes; a SIGINT meant to raise KeyboardInterrupt stops
 * it between steps (signals.h), and its findings are written out as soon as it ends:
 *
 *   collect    a full collection, so what is left is alive or hidden from the collector
 *   enumerate  every tracked object and every extension instance proven alive becomes a node
 *              (a registry record may have outlived its object: it is checked before it is read,
 *              and dropped when stale)
 *   account    each node's refcount minus the references tp_traverse shows ("unexplained")
 *   scan       extension instances' memory (and heap blocks it points to) for pointers to nodes
 *   validate   a pointer counts as a hidden reference only while its referent has unexplained
 *              references left, and never when the holder's traverse already visits it
 *   reach      the collector's reachability from nodes still unexplained, over visible and
 *              hidden edges: what it does not reach is garbage kept alive by hidden references
 *   report     hidden-reference / incomplete-traverse per type, leaked-cycle per cycle
 *
 * Where each pass is: collect, the order of the passes, their progress and this API in
 * heap_analysis.c; enumerate and account in heap_enumerate.c; scan in heap_scan.c; validate and
 * reach in heap_validate.c; report in heap_report.c, with the names of types and edges and the
 * cycle search in heap_cycles.c. The graph they share, its memory and its address index, is
 * heap_graph.c, declared in heap_graph.h (internal to the analysis); what is known of memory,
 * memory_map.c (mappings) and heap_blocks.c (heap blocks' extents).
 */
#ifndef EXTSAN_HEAP_ANALYSIS_H
#define EXTSAN_HEAP_ANALYSIS_H

#include "debug_members.h"
#include "registry.h"

#include <stdbool.h>

#define HEAP_MAX_REFERENTS 8
#define HEAP_MAX_TYPES     8

/* What the analysis attaches to a finding (finding->heap). */
struct heap_details {
    char type_name[256];  /* the holder type, module.Qualname */
    site_id example_site; /* allocation site of an example holder (hidden-reference: the oldest) */
    /* hidden-reference and incomplete-traverse */
    unsigned instances; /* holders with at least one hidden reference */
    struct heap_referent {
        char type_name[128];
        char path[64]; /* "+16", or "+24->+8" through a heap block */
        unsigned count;
        /* What the word that holds it lies in, whose extent bounded the scan: "instance" (the
           holder's own tp_basicsize/tp_itemsize extent), or heap_block_kind_name()'s. */
        const char *evidence;
        unsigned evidence_bytes;
        /* The member that holds it, from the extension's debug info (debug_members.h). */
        enum member_naming naming;
        struct member_name member;
    } referents[HEAP_MAX_REFERENTS];
    unsigned referent_count;
    bool missed_type_visit;  /* a heap type whose traverse does not visit Py_TYPE(self) */
    bool inherited_traverse; /* the traverse was inherited from a base that cannot know */
    char *chain;             /* a cycle through a hidden reference, written out; or NULL */
    bool never_collectable;  /* that cycle is reachable today and can never be collected */
    unsigned cycle_searches; /* holders searched for such a cycle so far */
    /* leaked-cycle */
    unsigned objects;
    struct {
        char name[128];
        unsigned count;
    } types[HEAP_MAX_TYPES];
    unsigned type_count;
    char *dot; /* the cycle as a Graphviz digraph, or NULL */
};

/*
 * Arranges for the analysis to run at interpreter exit: registers the atexit callback, once per
 * process. Call with the GIL held, once the interpreter is initialized.
 */
void heap_analysis_arm(void);

/* The exit analysis: runs the passes now (GIL held) and records the findings; once. */
void heap_analysis_run(void);

/*
 * An analysis before the exit one (the pytest plugin's check after each test; GIL held): what
 * it finds is recorded, and no later analysis counts the same holders again (the marks of
 * struct instance_record). Returns the number of findings it added; 0 once the exit analysis
 * ran.
 */
unsigned heap_analysis_check_now(void);

/*
 * How far the analysis got ("not run", "running scan", "done", "interrupted by SIGINT during
 * account", "failed: ..."): plain ASCII, readable from a signal handler.
 */
const char *heap_analysis_state(void);

/* False when an analysis started and did not finish (interrupted, out of memory, ...). */
bool heap_analysis_completed(void);

#endif
