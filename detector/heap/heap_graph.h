/*
 * The heap analysis' own graph, shared by its passes: internal to the analysis (heap_*.c), not
 * for the rest of extsan, whose interface is heap_analysis.h. Which file holds what:
 *
 *   heap_graph.c      the graph's memory (huge pages), the address index, nodes and edges
 *   heap_enumerate.c  passes enumerate and account
 *   heap_scan.c       passes probe and scan
 *   heap_validate.c   passes validate and reach
 *   heap_cycles.c     names of types and edges, the cycle search
 *   heap_report.c     pass report
 *   heap_analysis.c   the passes in order, progress, the public API
 *
 * What the analysis knows of memory is in memory_map.h (mappings) and heap_blocks.h (extents).
 */
#ifndef EXTSAN_HEAP_GRAPH_H
#define EXTSAN_HEAP_GRAPH_H

#include "memory_map.h"
#include "pointer_set.h"
#include "registry.h"
#include "signals.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- the graph ------------------------------------------------------------------------------- */

#define NO_NODE                 UINT32_MAX
#define MAX_PATH_DEPTH          5
#define MAX_SINGLE_HOLDER_DEPTH 2      /* path entries that one holder alone can vouch for */
#define BLOCKS_PER_HOLDER       64     /* heap blocks one holder's scan may visit */
#define CHAIN_SEARCH_LIMIT      200000 /* nodes a cycle search may visit */
#define MAX_CYCLE_SEARCHES      8      /* holders per type searched for a cycle back to them */
#define MAX_INSTANCE_NODES      ((1u << 27) - 1) /* what struct node's `instance` can number */

/*
 * 16 bytes, four to a cache line: `account` updates the node of every reference it counts, and
 * the graph has a node per object, so its size is the memory traffic of the passes.
 */
struct node {
    PyObject *object;
    int32_t unexplained;    /* refcount not (yet) explained by references from other nodes */
    uint32_t instance : 27; /* a live extension instance: 1 + its index in graph.instances */
    /* Its traverse runs in `account`: the collector tracks it, or it is a container the
       collector untracked (discover_untracked). */
    uint32_t traversed : 1;
    /* A reference to it counts in `account`: its type is collected or an extension's (see
       may_be_node). Decided when the node is made, so that counting reads no object. */
    uint32_t countable : 1;
    uint32_t reached : 1;
    uint32_t visited_own_type : 1; /* its traverse visited Py_TYPE(object) */
    uint32_t is_type : 1;          /* PyType_Check(object), kept for the cycle searches */
};

/* A node that is a live extension instance: a holder whose memory `scan` reads. */
struct instance_node {
    struct instance_record *record;
    bool own_type_reported; /* its missed type visit is in a finding already */
    bool holder_counted;    /* counted among its type's holders of hidden references */
};

struct edge {
    uint32_t from, to;
    int32_t hidden; /* the accepted candidate of a hidden edge; -1 for a visible one */
};

/* A pointer found in a holder's memory: a hidden reference if `validate` accepts it. */
struct candidate {
    uint32_t holder, referent;
    uint16_t path[MAX_PATH_DEPTH]; /* byte offsets: in the holder, then in each heap block */
    uint8_t depth;                 /* entries used in path */
    bool accepted;
    bool own_type; /* the ob_type reference of a heap type's instance that its traverse skips */
    bool self_reference; /* the referent is the holder itself */
    /* It lies in a heap block's last word, which the allocator's rounding may have left
       unwritten (in glibc, the next chunk's prev_size field). */
    bool last_word;
    /* Every word of its block before it is 0 or names a Python object: an array of them. */
    bool after_objects_only;
    uint8_t evidence;       /* enum heap_block_kind of the block it lies in; NONE: the holder */
    uint32_t evidence_size; /* that block's (or the holder's) extent in bytes */
};

struct map_entry { /* of address_index.spill */
    uintptr_t key; /* 0: empty */
    uint32_t value;
};
/* Object address -> node index: see the address index in heap_graph.c. */
#define GRANULE_BITS    5
#define REGION_BITS     12
#define GIB_BITS        30
#define ADDRESS_BITS    47 /* user space of x86-64 and arm64 without 5-level page tables */
#define LEAF_ENTRIES    (1u << (REGION_BITS - GRANULE_BITS))
#define REGIONS_PER_GIB (1u << (GIB_BITS - REGION_BITS))

struct address_index {
    uint32_t *directory;                        /* 1 << (ADDRESS_BITS - GIB_BITS) entries */
    uint32_t (*region_tables)[REGIONS_PER_GIB]; /* per GiB in use */
    size_t region_table_count, region_table_capacity;
    uint32_t (*leaves)[LEAF_ENTRIES]; /* per region in use */
    size_t leaf_count, leaf_capacity;
    /* open addressing, linear probing, at most two thirds full */
    struct map_entry *spill;
    size_t spill_mask, spill_count;
};

/*
 * describe_cycle's breadth-first search, its arrays kept from one search to the next: a node is
 * in the current search when mark[node] == count, reached through edge parent_edge[node].
 */
struct cycle_search {
    uint32_t *mark, *parent_edge, *queue;
    uint32_t count;
};

struct graph {
    struct node *nodes;
    size_t node_count, node_capacity;
    struct address_index index;
    struct instance_node *instances; /* in the registry's order */
    size_t instance_count, instance_capacity;
    uint32_t *instance_order; /* the instances' node indexes, ascending: the holders to visit */
    size_t ordered_count;
    struct edge *edges; /* the visible ones (grouped by source, in node order), then the hidden */
    size_t edge_count, edge_capacity, visible_edge_count;
    struct candidate *candidates;
    size_t candidate_count, candidate_capacity;
    /* Once `reach` built them: node i's edge indexes are adjacency[first_out[i] .. first_out[i +
       1]), in edge order. */
    uint32_t *adjacency, *first_out;
    struct cycle_search search;
    struct memory_map *memory;
    struct pointer_set live_types; /* every live readied type, from the type walk */
    /* Registry records found stale by `enumerate` (their objects were freed unseen), to drop
       from the registry once the passes are done with its records. */
    PyObject **stale;
    size_t stale_count, stale_capacity;
    uint32_t current_source; /* the node whose traverse is running */
    PyObject *current_type;  /* and its type */
    /* and its managed dict (object_managed_dict), cleared once its traverse visits it */
    PyObject *current_managed_dict;
    /* Whether objects of a type can be nodes at all (collected, or extension instances),
       cached by type address. */
    struct {
        PyTypeObject *type;
        bool may_be_node;
    } type_cache[256];
    bool out_of_memory;
    bool interrupted;    /* an interrupt stopped the passes (signals.h) */
    const char *failure; /* why the passes could not run, or NULL */
    const char *pass;    /* the pass running, or the last one entered */
    struct timespec pass_start;
};

/* The largest refcount a live object is taken to have (judge_record, other_object_at). */
#define MAX_PLAUSIBLE_REFCOUNT ((Py_ssize_t)UINT32_MAX)

/*
 * Whether a pass's loop at step `step` goes on: a few times per million steps it looks whether
 * an interrupt arrived (signals.h), and stops the analysis if one did.
 */
static inline bool keep_going(struct graph *graph, size_t step)
{
    if ((step & 0x3FFF) == 0 && signals_interrupted())
        graph->interrupted = true;
    return !graph->interrupted;
}

/* ---- heap_graph.c ---------------------------------------------------------------------------- */

extern size_t huge_page_budget; /* bytes the arrays may still advise */
extern size_t huge_page_asked;  /* bytes they advised */

void plan_huge_pages(void);
void *big_alloc(size_t bytes);
/* Makes room for element `count`, doubling from about 64 KiB; false when out of memory. */
bool grow(void **array, size_t *capacity, size_t count, size_t element_size);

uint32_t node_lookup(const struct graph *graph, uintptr_t address);
bool index_init(struct address_index *index);

/* Sizes the node array for `entries` nodes; false when out of memory. */
bool reserve_nodes(struct graph *graph, size_t entries);
uint32_t add_node(struct graph *graph, PyObject *object, int32_t unexplained, bool traversed);
/* The instance record of a node; NULL for a node that is no extension instance. */
struct instance_record *instance_of(const struct graph *graph, const struct node *node);
struct instance_node *instance_node_of(const struct graph *graph, const struct node *node);
void add_edge(struct graph *graph, uint32_t from, uint32_t to, int32_t hidden);
void graph_free(struct graph *graph);

/*
 * The type of the object at `address` when its header is mapped and names a live type, which is
 * then safe to read; NULL otherwise.
 */
PyTypeObject *live_type_at(const struct graph *graph, uintptr_t address);

/* ---- heap_enumerate.c: passes enumerate and account ------------------------------------------ */

bool enumerate_nodes(struct graph *graph, PyObject *tracked_objects);
/* Whether a registry record's object is proven alive, so safe to read (see judge_record). */
bool record_alive(const struct graph *graph, const struct instance_record *record);
/* Lists the object of a stale record, to drop once the passes are done (graph.stale). */
void list_stale(struct graph *graph, PyObject *object);
/*
 * Makes the live object `object`, which is no node, a node when it is a container the collector
 * does not track: its type is collected, it is not immortal, and it is not in the collector's
 * lists. Returns the node, or NO_NODE. Static objects are left out: a loaded object's static
 * types are never tracked, and the runtime's type_traverse refuses them.
 */
uint32_t discover_untracked(struct graph *graph, PyObject *object);
bool account_visible_references(struct graph *graph);
/*
 * Runs the traverse of nodes `first` onwards, including those the traverses add. The visible
 * edges stay grouped by source in node order, as visible_edge_consumed needs.
 */
void account_nodes_from(struct graph *graph, size_t first);

/* ---- heap_scan.c: passes probe and scan ------------------------------------------------------ */

/*
 * Whether any live instance the scan would read might hold a candidate or miss its type's visit:
 * false proves the analysis would find nothing. Needs graph.memory and graph.live_types only.
 */
bool probe_instances(struct graph *graph);
void scan_instances(struct graph *graph);
/*
 * A heap type's instance owns a reference to its type; a traverse that does not visit it hides
 * that reference (and a cycle through the type, e.g. a class attribute holding an instance).
 */
void add_missed_type_references(struct graph *graph);
/* A checked heap type's own instance whose traverse did not visit Py_TYPE(self) (3.9+ rule). */
bool misses_own_type_visit(struct graph *graph, const struct node *node);

/* ---- heap_validate.c: passes validate and reach ---------------------------------------------- */

void validate_candidates(struct graph *graph);
/* False when out of memory. */
bool reach_from_roots(struct graph *graph);

/* ---- heap_cycles.c: names and the cycle search ----------------------------------------------- */

/*
 * The full name of a type, module.Qualname ("function" for builtins), read from its C
 * structures: an attribute lookup could run Python code of the program (a metaclass's
 * __getattribute__) while the analysis holds borrowed pointers into the heap. A static type's
 * tp_name is "module.Qualname" already (the runtime's own have no module part); a heap type
 * keeps its qualified name, and its module in its __dict__.
 */
void type_full_name(PyTypeObject *type, char *out, size_t size);
void format_path(const struct candidate *candidate, char *out, size_t size);
/*
 * Writes the cycle that hidden edge `hidden_edge` closes: holder --hidden--> referent, then the
 * shortest path back to the holder (restricted to leaked nodes when `leaked_only`). Returns
 * false when there is no such path within the search limit.
 */
bool describe_cycle(struct graph *graph, size_t hidden_edge, bool leaked_only, char **chain_out,
                    char **dot_out);

/* ---- heap_report.c: pass report -------------------------------------------------------------- */

/* hidden-reference and incomplete-traverse: one finding per holder type. */
void report_hidden_references(struct graph *graph);
/* incomplete-traverse for heap types whose traverse does not visit their own type (3.9+). */
void report_missed_type_visits(struct graph *graph);
/* leaked-cycle: one finding per group of leaked nodes connected to a hidden edge's holder. */
void report_leaked_cycles(struct graph *graph);

#endif
