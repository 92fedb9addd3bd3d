#define _GNU_SOURCE
#include "heap_analysis.h"

#include "findings.h"
#include "heap_blocks.h"
#include "gil.h"
#include "log.h"
#include "memory_map.h"
#include "options.h"
#include "report.h"
#include "signals.h"
#include "pointer_set.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- the graph ------------------------------------------------------------------------------ */

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

/*
 * Object address -> node index, without hashing: a table with an entry per 32-byte granule of
 * memory, so that a lookup is one read. A tracked object takes at least 32 bytes (the collector's
 * header, a refcount, a type), so no two of them start in the same granule; two untracked
 * instances smaller than that can, and the second one goes to `spill`, a hash map (as does an
 * address beyond the directory). Neighbouring objects have neighbouring entries: the passes meet
 * objects roughly in allocation order, so they read the table nearly in order, where a hash
 * sends every lookup to a random cache line.
 *
 * The table covers only the 4 KiB regions where some node starts: a pymalloc pool (4 KiB up to
 * 3.9, 16 KiB from 3.10 on) holds one size class, so the regions of ints and strings, never
 * nodes, need none, and a lookup of one stops early. Three levels: the directory, by GiB, names a
 * region table, which names the leaf of each region, whose entries hold node index + 1 (0: none).
 * Tables and leaves are numbered from 1 (0: none) in arrays that grow by mremap.
 *
 * A lookup confirms that the node found starts at the address, since `scan` asks about arbitrary
 * words, which may point inside an object.
 */
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

/* ---- the graph's memory ---------------------------------------------------------------------- */

/*
 * The graph's arrays come straight from mmap and grow with mremap, which moves pages instead of
 * copying them. At a million nodes they span some 40 MB, and faulting that in 4 KiB pages, at
 * about a microsecond each, costs a quarter of the passes: so they ask for transparent huge
 * pages, but only as many as the kernel has free. A fault in a region advised MADV_HUGEPAGE takes
 * a free 2 MiB block when there is one; when there is none, the kernel may first compact memory
 * (defrag=madvise, the usual default), and the analysis stalled there for over 100 ms. The
 * budget is half of the free blocks /proc/buddyinfo listed when the analysis began.
 */
static size_t huge_page_size;   /* 0: no transparent huge pages */
static size_t huge_page_budget; /* bytes the arrays may still advise */
static size_t huge_page_asked;  /* bytes they advised */

static void plan_huge_pages(void)
{
    huge_page_size = huge_page_budget = huge_page_asked = 0;
    FILE *file = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "re");
    unsigned long size = 0;
    if (!file)
        return;
    if (fscanf(file, "%lu", &size) != 1)
        size = 0;
    fclose(file);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned order = 0; /* of a huge page, in the buddy allocator's terms */
    while (order < 32 && page << order < size)
        order++;
    if (!size || page << order != size || !(file = fopen("/proc/buddyinfo", "re")))
        return;
    /* "Node 0, zone   Normal   9071   8496 ...": the free blocks of each order, from 0 up. The
       DMA zone serves no ordinary allocation. */
    size_t free_huge_pages = 0;
    char line[512];
    while (fgets(line, sizeof line, file)) {
        char zone[32];
        int consumed = 0;
        if (sscanf(line, "Node %*d, zone %31s%n", zone, &consumed) != 1 || !strcmp(zone, "DMA"))
            continue;
        char *counts = line + consumed;
        for (unsigned block_order = 0;; block_order++) {
            char *end;
            unsigned long blocks = strtoul(counts, &end, 10);
            if (end == counts)
                break;
            if (block_order >= order)
                free_huge_pages += blocks << (block_order - order);
            counts = end;
        }
    }
    fclose(file);
    huge_page_size = size;
    huge_page_budget = free_huge_pages / 2 * size;
}

/* An array grew from old_bytes to new_bytes: huge pages for it while the budget lasts. */
static void advise_huge_pages(void *array, size_t old_bytes, size_t new_bytes)
{
    if (!huge_page_size || new_bytes < huge_page_size)
        return;
    /* Rounded to whole huge pages: what the fault of a partly used one takes. */
    size_t added = (new_bytes - old_bytes + huge_page_size - 1) / huge_page_size * huge_page_size;
    if (added <= huge_page_budget) {
        huge_page_budget -= added;
        huge_page_asked += added;
        madvise(array, new_bytes, MADV_HUGEPAGE); /* a hint: failure only costs speed */
    } else {
        huge_page_budget = 0;
        madvise(array, new_bytes, MADV_NOHUGEPAGE); /* its first part may have been advised */
    }
}

static void *big_resize(void *array, size_t old_bytes, size_t new_bytes)
{
    void *resized =
        array ? mremap(array, old_bytes, new_bytes, MREMAP_MAYMOVE)
              : mmap(NULL, new_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (resized == MAP_FAILED)
        return NULL;
    advise_huge_pages(resized, array ? old_bytes : 0, new_bytes);
    return resized;
}

static void *big_alloc(size_t bytes)
{
    return big_resize(NULL, 0, bytes);
}

static void big_free(void *array, size_t bytes)
{
    if (array)
        munmap(array, bytes);
}

/* Makes room for element `count`, doubling from about 64 KiB; false when out of memory. */
static bool grow(void **array, size_t *capacity, size_t count, size_t element_size)
{
    if (count < *capacity)
        return true;
    size_t first = element_size < 65536 ? 65536 / element_size : 1;
    size_t new_capacity = *capacity ? 2 * *capacity : first;
    void *grown = big_resize(*array, *capacity * element_size, new_capacity * element_size);
    if (!grown)
        return false;
    *array = grown;
    *capacity = new_capacity;
    return true;
}

/* ---- the address index ----------------------------------------------------------------------- */

static size_t hash_address(uintptr_t address)
{
    return (size_t)((address >> 4) * 0x9E3779B97F4A7C15ull >> 17);
}

static uint32_t spill_lookup(const struct address_index *index, uintptr_t address)
{
    for (size_t slot = hash_address(address) & index->spill_mask;;
         slot = (slot + 1) & index->spill_mask) {
        if (index->spill[slot].key == address)
            return index->spill[slot].value;
        if (index->spill[slot].key == 0)
            return NO_NODE;
    }
}

static void spill_put(struct address_index *index, uintptr_t address, uint32_t node)
{
    size_t slot = hash_address(address) & index->spill_mask;
    while (index->spill[slot].key != 0)
        slot = (slot + 1) & index->spill_mask;
    index->spill[slot] = (struct map_entry){address, node};
}

static bool spill_insert(struct address_index *index, uintptr_t address, uint32_t node)
{
    size_t size = index->spill ? index->spill_mask + 1 : 0;
    if (3 * (index->spill_count + 1) > 2 * size) {
        struct map_entry *old = index->spill;
        size_t new_size = size ? 2 * size : 256;
        index->spill = calloc(new_size, sizeof *index->spill);
        if (!index->spill) {
            index->spill = old;
            return false;
        }
        index->spill_mask = new_size - 1;
        for (size_t i = 0; i < size; i++)
            if (old[i].key)
                spill_put(index, old[i].key, old[i].value);
        free(old);
    }
    spill_put(index, address, node);
    index->spill_count++;
    return true;
}

static uint32_t node_lookup(const struct graph *graph, uintptr_t address)
{
    const struct address_index *index = &graph->index;
    if (address >> ADDRESS_BITS == 0) {
        uint32_t table = index->directory[address >> GIB_BITS];
        uint32_t leaf =
            table ? index->region_tables[table - 1][(address >> REGION_BITS) % REGIONS_PER_GIB] : 0;
        uint32_t entry =
            leaf ? index->leaves[leaf - 1][(address >> GRANULE_BITS) % LEAF_ENTRIES] : 0;
        if (entry && graph->nodes[entry - 1].object == (PyObject *)address)
            return entry - 1;
    }
    return index->spill_count ? spill_lookup(index, address) : NO_NODE;
}

/* The entry of the granule at `address`, making its tables; NULL when out of memory. */
static uint32_t *index_entry(struct address_index *index, uintptr_t address)
{
    uint32_t *table = &index->directory[address >> GIB_BITS];
    if (!*table) {
        if (!grow((void **)&index->region_tables, &index->region_table_capacity,
                  index->region_table_count, sizeof *index->region_tables))
            return NULL;
        *table = (uint32_t)++index->region_table_count;
    }
    uint32_t *leaf = &index->region_tables[*table - 1][(address >> REGION_BITS) % REGIONS_PER_GIB];
    if (!*leaf) {
        if (!grow((void **)&index->leaves, &index->leaf_capacity, index->leaf_count,
                  sizeof *index->leaves))
            return NULL;
        *leaf = (uint32_t)++index->leaf_count;
    }
    return &index->leaves[*leaf - 1][(address >> GRANULE_BITS) % LEAF_ENTRIES];
}

static bool index_insert(struct address_index *index, uintptr_t address, uint32_t node)
{
    if (address >> ADDRESS_BITS)
        return spill_insert(index, address, node);
    uint32_t *entry = index_entry(index, address);
    if (!entry)
        return false;
    if (*entry)
        return spill_insert(index, address, node);
    *entry = node + 1;
    return true;
}

#define DIRECTORY_BYTES (((size_t)1 << (ADDRESS_BITS - GIB_BITS)) * sizeof(uint32_t))

static bool index_init(struct address_index *index)
{
    index->directory = big_alloc(DIRECTORY_BYTES); /* 512 KiB, of which a page or two is used */
    return index->directory != NULL;
}

static void index_free(struct address_index *index)
{
    big_free(index->directory, DIRECTORY_BYTES);
    big_free(index->region_tables, index->region_table_capacity * sizeof *index->region_tables);
    big_free(index->leaves, index->leaf_capacity * sizeof *index->leaves);
    free(index->spill);
}

/* ---- nodes and edges ------------------------------------------------------------------------- */

/* Sizes the node array for `entries` nodes; false when out of memory. */
static bool reserve_nodes(struct graph *graph, size_t entries)
{
    if (entries <= graph->node_capacity)
        return true;
    struct node *grown = graph->nodes
                             ? big_resize(graph->nodes, graph->node_capacity * sizeof *grown,
                                          entries * sizeof *grown)
                             : big_alloc(entries * sizeof *grown);
    if (!grown)
        return false;
    graph->nodes = grown;
    graph->node_capacity = entries;
    return true;
}

static bool may_be_node(struct graph *graph, PyTypeObject *type)
{
    size_t slot = ((uintptr_t)type >> 4) % 256;
    if (graph->type_cache[slot].type != type) {
        graph->type_cache[slot].type = type;
        graph->type_cache[slot].may_be_node =
            (type->tp_flags & Py_TPFLAGS_HAVE_GC) || registry_find_type_or_ancestor(type);
    }
    return graph->type_cache[slot].may_be_node;
}

static uint32_t add_node(struct graph *graph, PyObject *object, int32_t unexplained, bool traversed)
{
    if (graph->node_count == graph->node_capacity &&
        !reserve_nodes(graph, 2 * graph->node_capacity + 1024)) {
        graph->out_of_memory = true;
        return NO_NODE;
    }
    uint32_t index = (uint32_t)graph->node_count;
    if (!index_insert(&graph->index, (uintptr_t)object, index)) {
        graph->out_of_memory = true;
        return NO_NODE;
    }
    graph->node_count++;
    graph->nodes[index] = (struct node){.object = object,
                                        .unexplained = unexplained,
                                        .traversed = traversed,
                                        .countable = may_be_node(graph, Py_TYPE(object)),
                                        .is_type = PyType_Check(object) != 0};
    return index;
}

/* The instance record of a node; NULL for a node that is no extension instance. */
static struct instance_record *instance_of(const struct graph *graph, const struct node *node)
{
    return node->instance ? graph->instances[node->instance - 1].record : NULL;
}

static struct instance_node *instance_node_of(const struct graph *graph, const struct node *node)
{
    return &graph->instances[node->instance - 1];
}

static void add_edge(struct graph *graph, uint32_t from, uint32_t to, int32_t hidden)
{
    if (!grow((void **)&graph->edges, &graph->edge_capacity, graph->edge_count,
              sizeof *graph->edges)) {
        graph->out_of_memory = true;
        return;
    }
    graph->edges[graph->edge_count++] = (struct edge){from, to, hidden};
}

static void graph_free(struct graph *graph)
{
    big_free(graph->nodes, graph->node_capacity * sizeof *graph->nodes);
    index_free(&graph->index);
    big_free(graph->instances, graph->instance_capacity * sizeof *graph->instances);
    big_free(graph->instance_order, (graph->instance_count + 1) * sizeof *graph->instance_order);
    big_free(graph->edges, graph->edge_capacity * sizeof *graph->edges);
    big_free(graph->candidates, graph->candidate_capacity * sizeof *graph->candidates);
    free(graph->adjacency);
    free(graph->first_out);
    free(graph->search.mark);
    free(graph->search.parent_edge);
    free(graph->search.queue);
    memory_map_free(graph->memory);
    pointer_set_clear(&graph->live_types);
    big_free(graph->stale, graph->stale_capacity * sizeof *graph->stale);
}

/* Immortal objects (3.12+) have no meaningful refcount: never nodes, never targets. */
static bool is_immortal(PyObject *object)
{
#if PY_VERSION_HEX >= 0x030C0000
    return _Py_IsImmortal(object);
#else
    (void)object;
    return false;
#endif
}

/* A refcount as the graph keeps it: 32 bits, plenty for anything not immortal. */
static int32_t refcount_of(PyObject *object)
{
    Py_ssize_t count = Py_REFCNT(object);
    return count > INT32_MAX / 2 ? INT32_MAX / 2 : (int32_t)count;
}

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

/* ---- pass: enumerate -------------------------------------------------------------------------
 * After it: every object the collector tracks and every live extension instance is a node, with
 * `unexplained` = its refcount (less the reference gc.get_objects' list holds). Registry records
 * whose object is not proven alive are left out, and the stale ones listed for dropping.
 */

/*
 * A registry record may be stale: its object was freed without passing through a slot extsan
 * wrapped (a dealloc that calls its base's dealloc function directly, memory released by hand,
 * a deallocation without the GIL), and the memory may since hold anything or be unmapped. So
 * nothing of the object is read before the record proves alive:
 *   - its header lies in mapped memory (the analysis' snapshot of /proc/self/maps);
 *   - its type is a live type: one the type walk reached, so reading it is safe;
 *   - the record's type is that type or one of its bases;
 *   - its refcount is a count: at least 1 and at most 2^32 - 1 (3.12+ immortals included). A
 *     deallocated object had a count of 0 before its memory was released, and the allocators
 *     write a pointer (pymalloc's and glibc's free lists; the high bits of a user-space address,
 *     or safe-linking's mangling of one) or zero over the first word of a freed block;
 *   - an object of a GC type is one the collector tracks: its list holds live objects only, and
 *     extension instances are tracked for as long as they live. An untracked one is left out of
 *     this analysis but not dropped: it may be alive and not yet tracked.
 */
enum record_state { RECORD_LIVE, RECORD_UNTRACKED, RECORD_STALE };

#define MAX_PLAUSIBLE_REFCOUNT ((Py_ssize_t)UINT32_MAX)

/*
 * The type of the object at `address` when its header is mapped and names a live type, which is
 * then safe to read; NULL otherwise.
 */
static PyTypeObject *live_type_at(const struct graph *graph, uintptr_t address)
{
    if (!memory_map_readable(graph->memory, address, sizeof(PyObject)))
        return NULL;
    PyTypeObject *type = Py_TYPE((PyObject *)address);
    return pointer_set_contains(&graph->live_types, type) ? type : NULL;
}

static enum record_state judge_record(const struct graph *graph,
                                      const struct instance_record *record, bool tracked)
{
    PyObject *object = record->object;
    PyTypeObject *type = live_type_at(graph, (uintptr_t)object);
    if (!type)
        return RECORD_STALE;
    Py_ssize_t refcount = Py_REFCNT(object);
    if (refcount < 1 || refcount > MAX_PLAUSIBLE_REFCOUNT)
        return RECORD_STALE;
    PyTypeObject *ancestor = type;
    while (ancestor && ancestor != record->type->type)
        ancestor = ancestor->tp_base;
    if (!ancestor)
        return RECORD_STALE;
    if (PyType_IS_GC(type) && !tracked)
        return RECORD_UNTRACKED;
    return RECORD_LIVE;
}

static void list_instance(struct instance_record *instance, void *context)
{
    struct graph *graph = context;
    if (!grow((void **)&graph->instances, &graph->instance_capacity, graph->instance_count,
              sizeof *graph->instances)) {
        graph->out_of_memory = true;
        return;
    }
    graph->instances[graph->instance_count++] = (struct instance_node){.record = instance};
}

/*
 * Makes every extension instance proven alive a node (if it is not one already), in the
 * registry's order, and lists the stale records. The records are listed first, so that each
 * object can be fetched a few records ahead: the registry's order is its hash order, a random
 * walk through the heap (a prefetch of memory that is not mapped does not fault). Entries of
 * graph.instances are reused in place for the instances that become (or are) nodes.
 */
static void add_instance_nodes(struct graph *graph)
{
    size_t listed = graph->instance_count;
    graph->instance_count = 0;
    const size_t ahead = 16;
    for (size_t k = 0; k < listed && !graph->out_of_memory; k++) {
        if (k + ahead < listed)
            __builtin_prefetch(graph->instances[k + ahead].record->object);
        struct instance_record *instance = graph->instances[k].record;
        uint32_t index = node_lookup(graph, (uintptr_t)instance->object);
        enum record_state state = judge_record(graph, instance, index != NO_NODE);
        if (state == RECORD_STALE && grow((void **)&graph->stale, &graph->stale_capacity,
                                          graph->stale_count, sizeof *graph->stale))
            graph->stale[graph->stale_count++] = instance->object;
        if (state != RECORD_LIVE)
            continue;
        if (index == NO_NODE && !is_immortal(instance->object))
            index = add_node(graph, instance->object, refcount_of(instance->object), false);
        if (index == NO_NODE)
            continue;
        struct node *node = &graph->nodes[index];
        if (node->instance) { /* a second record of the object: the last one counts */
            instance_node_of(graph, node)->record = instance;
            continue;
        }
        if (graph->instance_count == MAX_INSTANCE_NODES) {
            graph->out_of_memory = true;
            return;
        }
        graph->instances[graph->instance_count++] = (struct instance_node){.record = instance};
        node->instance = (uint32_t)graph->instance_count;
    }
}

static PyObject *call_gc(const char *function)
{
    PyObject *gc = python_api.PyImport_ImportModule("gc");
    PyObject *callable = gc ? python_api.PyObject_GetAttrString(gc, function) : NULL;
    PyObject *result = callable ? python_api.PyObject_CallFunctionObjArgs(callable, NULL) : NULL;
    if (callable)
        python_api.Py_DecRef(callable);
    if (gc)
        python_api.Py_DecRef(gc);
    return result;
}

static bool enumerate_nodes(struct graph *graph, PyObject *tracked_objects)
{
    Py_ssize_t count = PyList_GET_SIZE(tracked_objects);
    size_t instances = registry_instance_count();
    if (!index_init(&graph->index) || !reserve_nodes(graph, (size_t)count + instances + 1024))
        return false;
    graph->instance_capacity = instances + 1024;
    graph->instances = big_alloc(graph->instance_capacity * sizeof *graph->instances);
    if (!graph->instances) {
        graph->instance_capacity = 0;
        return false;
    }
    /* Memory latency is the cost here: fetch the objects a few steps ahead. */
    const Py_ssize_t ahead = 16;
    for (Py_ssize_t i = 0; i < count && keep_going(graph, (size_t)i); i++) {
        if (i + ahead < count)
            __builtin_prefetch(PyList_GET_ITEM(tracked_objects, i + ahead));
        PyObject *object = PyList_GET_ITEM(tracked_objects, i);
        if (!is_immortal(object))
            add_node(graph, object, refcount_of(object) - 1, true);
    }
    registry_for_each_instance(list_instance, graph);
    add_instance_nodes(graph);
    return !graph->out_of_memory;
}

/* ---- pass: account ---------------------------------------------------------------------------
 * After it: each node's `unexplained` is its refcount less the references that the traverse of
 * some node visits, and every such reference is a visible edge. Also: instance_order lists the
 * instance nodes in node order.
 *
 * The collector untracks a dict or a tuple that holds only objects it does not collect (a
 * non-GC extension instance, say), and such a container can still close a cycle: `d = {}; d["h"]
 * = Holder(d)`. So a container met as a traverse's target, or as a pointer in a holder's memory,
 * becomes a node too (discover_untracked), and its own traverse runs like any other: nodes made
 * during the pass are appended, and the pass's loop reaches them. The scan's discoveries are
 * accounted after it (account_discovered).
 */

/*
 * Makes the live object `object`, which is no node, a node when it is a container the collector
 * does not track: its type is collected, it is not immortal, and it is not in the collector's
 * lists. Returns the node, or NO_NODE. Static objects are left out: a loaded object's static
 * types are never tracked, and the runtime's type_traverse refuses them.
 */
static uint32_t discover_untracked(struct graph *graph, PyObject *object)
{
    if (!PyType_IS_GC(Py_TYPE(object)) || PyType_Check(object) || is_immortal(object) ||
        !memory_map_data_extent(graph->memory, (uintptr_t)object, 1) ||
        python_api.PyObject_GC_IsTracked(object))
        return NO_NODE;
    return add_node(graph, object, refcount_of(object), true);
}

static int visit_and_account(PyObject *target, void *context)
{
    struct graph *graph = context;
    if (target == graph->current_type)
        graph->nodes[graph->current_source].visited_own_type = true;
    if (!target)
        return 0;
    uint32_t index = node_lookup(graph, (uintptr_t)target);
    if (index == NO_NODE)
        index = discover_untracked(graph, target);
    if (index == NO_NODE || !graph->nodes[index].countable)
        return 0;
    graph->nodes[index].unexplained--;
    add_edge(graph, graph->current_source, index, -1);
    return 0;
}

/*
 * Runs the traverse of nodes `first` onwards, including those the traverses add. The visible
 * edges stay grouped by source in node order, as visible_edge_consumed needs.
 */
static void account_nodes_from(struct graph *graph, size_t first)
{
    const size_t ahead = 8; /* fetch the object a few traverses ahead */
    for (size_t i = first; i < graph->node_count && keep_going(graph, i); i++) {
        if (i + ahead < graph->node_count)
            __builtin_prefetch(graph->nodes[i + ahead].object);
        struct node *node = &graph->nodes[i];
        /* The passes over holders visit the instances alone: listed here, where every node is
           read anyway. Nodes made by discovery are never instances. */
        if (node->instance)
            graph->instance_order[graph->ordered_count++] = (uint32_t)i;
        if (!node->traversed)
            continue;
        PyTypeObject *type = Py_TYPE(node->object);
        if (!type->tp_traverse)
            continue;
        graph->current_source = (uint32_t)i;
        graph->current_type = (PyObject *)type;
        /* The visit may add nodes and move the array: `node` is not read after it. */
        type->tp_traverse(node->object, visit_and_account, graph);
    }
    graph->visible_edge_count = graph->edge_count;
}

static bool account_visible_references(struct graph *graph)
{
    graph->instance_order = big_alloc((graph->instance_count + 1) * sizeof *graph->instance_order);
    if (!graph->instance_order)
        return false;
    account_nodes_from(graph, 0);
    return !graph->out_of_memory;
}

/* ---- pass: scan ------------------------------------------------------------------------------
 * After it: every pointer to a node found in an extension instance's memory, or in heap blocks
 * reached from it through up to scan_hops pointers, is a candidate. Memory is read only inside
 * mappings listed readable in /proc/self/maps, so the scan cannot fault.
 */

struct scan_state {
    struct graph *graph;
    uint32_t holder;
    uintptr_t visited_blocks[BLOCKS_PER_HOLDER];
    unsigned visited_count;
    uint16_t path[MAX_PATH_DEPTH];
    /* What the memory read at each depth is: the holder (HEAP_BLOCK_NONE) at depth 0, then the
       heap blocks followed, with their extents. */
    uint8_t block_kind[MAX_PATH_DEPTH];
    uint32_t block_size[MAX_PATH_DEPTH];
};

static struct candidate *add_candidate(struct scan_state *scan, uint32_t referent, unsigned depth,
                                       bool last_word, bool after_objects_only)
{
    struct graph *graph = scan->graph;
    if (!grow((void **)&graph->candidates, &graph->candidate_capacity, graph->candidate_count,
              sizeof *graph->candidates)) {
        graph->out_of_memory = true;
        return NULL;
    }
    struct candidate *candidate = &graph->candidates[graph->candidate_count++];
    *candidate = (struct candidate){.holder = scan->holder,
                                    .referent = referent,
                                    .depth = (uint8_t)depth,
                                    .self_reference = referent == scan->holder,
                                    .last_word = last_word,
                                    .after_objects_only = after_objects_only,
                                    .evidence = scan->block_kind[depth - 1],
                                    .evidence_size = scan->block_size[depth - 1]};
    memcpy(candidate->path, scan->path, sizeof candidate->path);
    return candidate;
}

static bool already_visited(struct scan_state *scan, uintptr_t block)
{
    for (unsigned i = 0; i < scan->visited_count; i++)
        if (scan->visited_blocks[i] == block)
            return true;
    if (scan->visited_count == BLOCKS_PER_HOLDER)
        return true; /* budget spent: treat as seen */
    scan->visited_blocks[scan->visited_count++] = block;
    return false;
}

/*
 * The object at `address` when it is a Python object that is no node (a static one, an untracked
 * one, an immortal one): its header is mapped, its type word names a live type and its refcount
 * is a count. NULL otherwise. Its fields are its own, not the holder's: the scan does not walk
 * through it (through an array's dtype into the dtype's type, say).
 */
static PyObject *other_object_at(const struct graph *graph, uintptr_t address)
{
    PyTypeObject *type = live_type_at(graph, address);
    if (!type)
        return NULL;
    Py_ssize_t refcount = Py_REFCNT((PyObject *)address);
    return refcount >= 1 && refcount <= MAX_PLAUSIBLE_REFCOUNT ? (PyObject *)address : NULL;
}

/* PyGC_Head, two words before every collected object in 3.9-3.13 (internal from 3.9 on). */
#define GC_HEADER_SIZE (2 * sizeof(uintptr_t))

/*
 * A live collected object the collector does not track, found at `address` by the scan, made a
 * node (discover_untracked); NO_NODE when it is none. The collector's header before the object
 * must be mapped too, since PyObject_GC_IsTracked reads it.
 */
static uint32_t discover_untracked_at(struct graph *graph, uintptr_t address)
{
    PyObject *object = other_object_at(graph, address);
    if (!object || !PyType_IS_GC(Py_TYPE(object)) ||
        !memory_map_readable(graph->memory, address - GC_HEADER_SIZE, GC_HEADER_SIZE))
        return NO_NODE;
    return discover_untracked(graph, object);
}

static void scan_words(struct scan_state *scan, uintptr_t start, size_t length, unsigned depth)
{
    struct graph *graph = scan->graph;
    bool objects_only = true; /* so far in this block */
    for (size_t offset = 0; offset + sizeof(uintptr_t) <= length; offset += sizeof(uintptr_t)) {
        uintptr_t word = *(const uintptr_t *)(start + offset);
        if (!word)
            continue;
        if (word < 4096 || word % sizeof(void *) != 0) {
            objects_only = false;
            continue;
        }
        scan->path[depth] = (uint16_t)(depth == 0 ? offset + sizeof(PyObject) : offset);
        uint32_t referent = node_lookup(graph, word);
        if (referent == NO_NODE)
            referent = discover_untracked_at(graph, word);
        if (referent != NO_NODE) {
            /* A type keeps nothing collectable alive through a field. */
            bool last_word = depth > 0 && offset + sizeof(uintptr_t) == length;
            if (!graph->nodes[referent].is_type)
                add_candidate(scan, referent, depth + 1, last_word, objects_only);
            continue;
        }
        if (other_object_at(graph, word))
            continue;
        objects_only = false;
        if (depth + 1 >= (unsigned)extsan_options.scan_hops + 1 || depth + 1 >= MAX_PATH_DEPTH)
            continue;
        enum heap_block_kind kind;
        size_t window = heap_block_extent(graph->memory, word, &kind);
        if (window && !already_visited(scan, word)) {
            scan->block_kind[depth + 1] = (uint8_t)kind;
            scan->block_size[depth + 1] = (uint32_t)window;
            scan_words(scan, word, window, depth + 1);
        }
    }
}

/*
 * The bytes of an object that may hold its references, from the header on: tp_basicsize plus
 * the items of a variable-size object, as _PyObject_VAR_SIZE computes them. Items smaller than a
 * pointer (the characters of a name) hold none, and the rounding after them is slack that no
 * one wrote. A record's size can exceed the extent only when the record outlived its object and
 * the memory now holds a smaller one.
 */
static size_t object_extent(PyObject *object, struct memory_map *memory)
{
    PyTypeObject *type = Py_TYPE(object);
    if (!type->tp_itemsize || type->tp_itemsize % sizeof(void *) != 0 ||
        !memory_map_readable(memory, (uintptr_t)object, sizeof(PyVarObject)))
        return (size_t)type->tp_basicsize;
    Py_ssize_t items = Py_SIZE(object);
    return _PyObject_VAR_SIZE(type, items < 0 ? -items : items);
}

/* Bytes of an instance that belong to it, from the header on. */
static size_t instance_extent(const struct graph *graph, const struct node *node)
{
    size_t recorded = instance_of(graph, node)->size;
    size_t bound = object_extent(node->object, graph->memory);
    if (recorded)
        return recorded < bound ? recorded : bound;
    /* Unknown allocation (PyObject_Init on memory extsan did not see allocated): the header and
       one pointer, what the smallest wrapper (nanobind's for an external C++ object) has. */
    size_t minimal = sizeof(PyObject) + sizeof(void *);
    return bound < minimal ? bound : minimal;
}

/*
 * The holders whose memory is scanned and whose traverse is judged: instances of the user's
 * extension types (the registry holds no type of the runtime's or the standard library's), not
 * of a binding library's own machinery (nanobind's nb_func, pybind11's pybind11_type: correct,
 * and not the user's to fix).
 */
static bool holder_is_checked(const struct graph *graph, const struct node *node)
{
    return node->instance && !instance_of(graph, node)->type->binding_machinery;
}

/* A checked heap type's own instance whose traverse did not visit Py_TYPE(self) (3.9+ rule). */
static bool misses_own_type_visit(struct graph *graph, const struct node *node)
{
    if (!node->traversed || node->visited_own_type || !holder_is_checked(graph, node))
        return false;
    PyTypeObject *type = Py_TYPE(node->object);
    /* Classes made by an extension metaclass are the runtime's type objects underneath. */
    return !PyType_Check(node->object) && instance_of(graph, node)->type->type == type &&
           (type->tp_flags & Py_TPFLAGS_HEAPTYPE) && type->tp_traverse;
}

static void scan_instances(struct graph *graph)
{
    struct scan_state scan = {.graph = graph};
    for (size_t k = 0; k < graph->ordered_count && keep_going(graph, k); k++) {
        uint32_t i = graph->instance_order[k];
        struct node *node = &graph->nodes[i];
        if (!holder_is_checked(graph, node))
            continue;
        size_t extent = instance_extent(graph, node);
        uintptr_t body = (uintptr_t)node->object + sizeof(PyObject);
        if (extent <= sizeof(PyObject) ||
            !memory_map_readable(graph->memory, (uintptr_t)node->object, extent))
            continue;
        scan.holder = (uint32_t)i;
        scan.visited_count = 0;
        scan.block_kind[0] = HEAP_BLOCK_NONE;
        scan.block_size[0] = (uint32_t)extent;
        scan_words(&scan, body, extent - sizeof(PyObject), 0);
    }
}

/*
 * A heap type's instance owns a reference to its type; a traverse that does not visit it hides
 * that reference (and a cycle through the type, e.g. a class attribute holding an instance).
 */
static void add_missed_type_references(struct graph *graph)
{
    for (size_t k = 0; k < graph->ordered_count; k++) {
        uint32_t i = graph->instance_order[k];
        struct node *node = &graph->nodes[i];
        if (!misses_own_type_visit(graph, node))
            continue;
        uint32_t type = node_lookup(graph, (uintptr_t)Py_TYPE(node->object));
        if (type == NO_NODE)
            continue;
        struct scan_state scan = {.graph = graph, .holder = (uint32_t)i};
        scan.path[0] = offsetof(PyObject, ob_type);
        scan.block_size[0] = sizeof(PyObject);
        struct candidate *candidate = add_candidate(&scan, type, 1, false, false);
        if (candidate)
            candidate->own_type = true;
    }
}

/* ---- pass: validate --------------------------------------------------------------------------
 * After it: a candidate is accepted, and becomes a hidden edge, when
 *   - its path stands as a field's (path_stands). A field holds its reference in every instance;
 *     a stale word in memory no one wrote since its last use does not, and refcounts cannot
 *     tell them apart when the stale word names an object something unseen owns. So a path
 *     must recur in most instances of the holder's type that hold candidates at all (or the
 *     type has one instance), with two exceptions each way:
 *       - a path that recurs in no other instance stands when it ends in an array of objects
 *         (every word of its block before it is 0 or names one) at an object that has exactly
 *         one reference nothing else explains: an owned array's item sits at an index of its
 *         own in each instance, and arrays of integers (an array's dimensions) or of code
 *         pointers (a C callback's struct) are no such array;
 *       - a path through two heap blocks or more, or to a block's last word, stands only when
 *         it recurs in two instances at least: each hop adds words no one may have written (a
 *         lock's tail that its init left alone: numpy's StringDType met one in the sem_t of its
 *         string allocator's lock), and an allocation's rounding leaves the last word of its
 *         block unwritten (a name's bytes, a 16-byte struct in a 24-byte chunk),
 *   - the holder's traverse does not already visit that referent, and
 *   - the referent still had an unexplained reference for it (direct pointers are weighed
 *     before pointers found deeper).
 * The referent's `unexplained` drops by one per accepted candidate. Self-references are weighed
 * last, by rules of their own (validate_self_references).
 */

static struct type_record *holder_type(const struct graph *graph, const struct candidate *c)
{
    return instance_of(graph, &graph->nodes[c->holder])->type;
}

static int compare_by_type_and_path(const void *left, const void *right, void *context)
{
    const struct graph *graph = context;
    const struct candidate *a = left, *b = right;
    uintptr_t type_a = (uintptr_t)holder_type(graph, a), type_b = (uintptr_t)holder_type(graph, b);
    if (type_a != type_b)
        return (type_a > type_b) - (type_a < type_b);
    if (a->depth != b->depth)
        return a->depth - b->depth;
    int paths = memcmp(a->path, b->path, a->depth * sizeof a->path[0]);
    if (paths)
        return paths;
    return (a->holder > b->holder) - (a->holder < b->holder);
}

static bool same_path(const struct candidate *a, const struct candidate *b)
{
    return a->depth == b->depth && !memcmp(a->path, b->path, a->depth * sizeof a->path[0]);
}

/*
 * Whether a candidate's path is evidence enough of a field (see the pass's rules above): `usual`
 * when it recurs in most holders of its type that hold candidates (or the type has one), in
 * `holders` of them.
 */
static bool path_stands(const struct graph *graph, const struct candidate *candidate, bool usual,
                        size_t holders)
{
    bool recurs = usual && holders >= 2;
    if (candidate->depth > MAX_SINGLE_HOLDER_DEPTH || candidate->last_word)
        return recurs;
    if (usual)
        return true;
    return candidate->after_objects_only && graph->nodes[candidate->referent].unexplained == 1;
}

/* Marks (rejected = true) the candidates whose path does not stand (path_stands). */
static void reject_inconsistent_paths(struct graph *graph, bool *rejected)
{
    qsort_r(graph->candidates, graph->candidate_count, sizeof *graph->candidates,
            compare_by_type_and_path, graph);
    for (size_t type_start = 0; type_start < graph->candidate_count;) {
        struct type_record *type = holder_type(graph, &graph->candidates[type_start]);
        size_t type_end = type_start;
        while (type_end < graph->candidate_count &&
               holder_type(graph, &graph->candidates[type_end]) == type)
            type_end++;
        /* Holders of this type with candidates: count distinct holder indexes. */
        size_t holders = 0;
        for (size_t i = type_start; i < type_end; i++) {
            bool seen = false;
            for (size_t j = type_start; j < i && !seen; j++)
                seen = graph->candidates[j].holder == graph->candidates[i].holder;
            holders += !seen;
            if (holders > 64)
                break; /* enough to judge by */
        }
        for (size_t run = type_start; run < type_end;) {
            size_t run_end = run, run_holders = 0;
            uint32_t last_holder = NO_NODE;
            while (run_end < type_end &&
                   same_path(&graph->candidates[run], &graph->candidates[run_end])) {
                run_holders += graph->candidates[run_end].holder != last_holder;
                last_holder = graph->candidates[run_end].holder;
                run_end++;
            }
            bool usual = holders <= 1 || 2 * run_holders > (holders > 64 ? 64 : holders);
            for (size_t i = run; i < run_end; i++)
                rejected[i] = !path_stands(graph, &graph->candidates[i], usual, run_holders);
            run = run_end;
        }
        type_start = type_end;
    }
}

/* The order candidates are weighed in: by depth, then holder; self-references last. */
static int compare_candidates(const void *left, const void *right, void *context)
{
    const struct candidate *a = left, *b = right;
    if (a->self_reference != b->self_reference)
        return a->self_reference - b->self_reference;
    if (a->self_reference)
        return compare_by_type_and_path(left, right, context);
    if (a->depth != b->depth)
        return a->depth - b->depth;
    return (a->holder > b->holder) - (a->holder < b->holder);
}

static int compare_addresses(const void *left, const void *right)
{
    uintptr_t a = *(const uintptr_t *)left, b = *(const uintptr_t *)right;
    return (a > b) - (a < b);
}

static int compare_by_holder(const void *left, const void *right)
{
    const struct candidate *a = left, *b = right;
    return (a->holder > b->holder) - (a->holder < b->holder);
}

static void accept_candidate(struct graph *graph, size_t i)
{
    struct candidate *candidate = &graph->candidates[i];
    graph->nodes[candidate->referent].unexplained--;
    candidate->accepted = true;
    add_edge(graph, candidate->holder, candidate->referent, (int32_t)i);
}

/*
 * Weighs the self-references, candidates[first..], after every other candidate (they come sorted
 * by type and path). A pointer to the holder in its own memory is a reference it owns only in a
 * defect (a callback set to the object itself); a design where an object points to itself keeps
 * a borrowed pointer (a trampoline's back-pointer to its Python object). By refcounts alone the
 * two look alike whenever something the graph does not see (a C static, a C++ container) owns
 * the object, so a self-reference is accepted only
 *   - when no holder of the same type with a self-pointer at the same path has its references
 *     all explained without it (that holder is a witness that the field is borrowed), and
 *   - when the holder's self-references explain exactly the references still unexplained: but
 *     for them the holder would be garbage, and
 *   - when no static variable of a loaded object points to the holder (a C static that owns
 *     it). A borrowed back-pointer that passes all three is the last word of an object that
 *     unseen heap memory owns (a C++ container), which the exit analysis rarely meets.
 */
static void validate_self_references(struct graph *graph, size_t first)
{
    size_t kept = first;
    for (size_t run = first; run < graph->candidate_count;) {
        size_t run_end = run;
        bool witnessed = false;
        while (run_end < graph->candidate_count &&
               holder_type(graph, &graph->candidates[run_end]) ==
                   holder_type(graph, &graph->candidates[run]) &&
               same_path(&graph->candidates[run], &graph->candidates[run_end])) {
            witnessed |= graph->nodes[graph->candidates[run_end].holder].unexplained <= 0;
            run_end++;
        }
        for (size_t i = run; i < run_end && !witnessed; i++)
            graph->candidates[kept++] = graph->candidates[i];
        run = run_end;
    }
    graph->candidate_count = kept;
    /* Per holder (sorted by node index, which is no address order), whether its self-references
       explain exactly what is left; then one look through static data for them all. */
    qsort(graph->candidates + first, kept - first, sizeof *graph->candidates, compare_by_holder);
    size_t holders = 0;
    uintptr_t *addresses = malloc((kept - first + 1) * sizeof *addresses);
    bool *owned_by_static = calloc(kept - first + 1, sizeof *owned_by_static);
    if (!addresses || !owned_by_static)
        goto done;
    for (size_t group = first; group < kept;) {
        size_t group_end = group;
        uint32_t holder = graph->candidates[group].holder;
        while (group_end < kept && graph->candidates[group_end].holder == holder)
            group_end++;
        if (graph->nodes[holder].unexplained == (int32_t)(group_end - group))
            addresses[holders++] = (uintptr_t)graph->nodes[holder].object;
        group = group_end;
    }
    qsort(addresses, holders, sizeof *addresses, compare_addresses);
    memory_map_find_in_static_data(graph->memory, addresses, holders, owned_by_static);
    for (size_t i = first; i < kept; i++) {
        uintptr_t object = (uintptr_t)graph->nodes[graph->candidates[i].holder].object;
        const uintptr_t *at =
            bsearch(&object, addresses, holders, sizeof *addresses, compare_addresses);
        if (at && !owned_by_static[at - addresses])
            accept_candidate(graph, i);
    }
done:
    free(addresses);
    free(owned_by_static);
}

/*
 * True, consuming it, when the holder's traverse visited the referent once more than used.
 * `account` appended the visible edges grouped by source, in node order: binary search.
 */
static bool visible_edge_consumed(struct graph *graph, size_t visible_edges, uint32_t holder,
                                  uint32_t referent)
{
    size_t low = 0, high = visible_edges;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        if (graph->edges[middle].from < holder)
            low = middle + 1;
        else
            high = middle;
    }
    for (size_t e = low; e < visible_edges && graph->edges[e].from == holder; e++) {
        struct edge *edge = &graph->edges[e];
        if (edge->to == referent && edge->hidden == -1) {
            edge->hidden = -2; /* consumed: still a visible edge, matched to one pointer */
            return true;
        }
    }
    return false;
}

static void validate_candidates(struct graph *graph)
{
    bool *rejected = calloc(graph->candidate_count + 1, sizeof *rejected);
    if (!rejected) {
        graph->out_of_memory = true;
        return;
    }
    reject_inconsistent_paths(graph, rejected);
    size_t kept = 0;
    for (size_t i = 0; i < graph->candidate_count; i++)
        if (!rejected[i])
            graph->candidates[kept++] = graph->candidates[i];
    graph->candidate_count = kept;
    free(rejected);
    qsort_r(graph->candidates, graph->candidate_count, sizeof *graph->candidates,
            compare_candidates, graph);
    size_t visible_edges = graph->visible_edge_count, consumed = 0, i = 0;
    for (; i < graph->candidate_count && !graph->candidates[i].self_reference; i++) {
        struct candidate *candidate = &graph->candidates[i];
        struct node *holder = &graph->nodes[candidate->holder];
        if (holder->traversed && Py_TYPE(holder->object)->tp_traverse &&
            visible_edge_consumed(graph, visible_edges, candidate->holder, candidate->referent)) {
            consumed++;
            continue;
        }
        if (graph->nodes[candidate->referent].unexplained > 0)
            accept_candidate(graph, i);
    }
    for (size_t e = 0; consumed && e < visible_edges; e++)
        if (graph->edges[e].hidden == -2)
            graph->edges[e].hidden = -1;
    validate_self_references(graph, i);
}

/* ---- pass: reach -----------------------------------------------------------------------------
 * After it: a node is `reached` when a path of visible or hidden edges leads to it from a node
 * with unexplained references left (a reference from outside the graph: a root). The others are
 * garbage that only hidden references keep alive. Only the holders of hidden edges and what they
 * lead to are ever asked, so without a hidden edge the pass does nothing.
 */

/* Groups the edge indexes by source node (first_out, adjacency), in edge order. */
static bool build_adjacency(struct graph *graph)
{
    graph->first_out = calloc(graph->node_count + 1, sizeof *graph->first_out);
    graph->adjacency = malloc((graph->edge_count + 1) * sizeof *graph->adjacency);
    if (!graph->first_out || !graph->adjacency)
        return false;
    for (size_t e = 0; e < graph->edge_count; e++)
        graph->first_out[graph->edges[e].from]++;
    for (size_t i = 1; i < graph->node_count; i++)
        graph->first_out[i] += graph->first_out[i - 1];
    /* first_out[i] is now the end of node i's edges; placing them from the last one down leaves
       it at their start. */
    for (size_t e = graph->edge_count; e-- > 0;)
        graph->adjacency[--graph->first_out[graph->edges[e].from]] = (uint32_t)e;
    graph->first_out[graph->node_count] = (uint32_t)graph->edge_count;
    return true;
}

/* False when out of memory. */
static bool reach_from_roots(struct graph *graph)
{
    if (graph->edge_count == graph->visible_edge_count)
        return true; /* no hidden edge */
    if (!build_adjacency(graph))
        return false;
    uint32_t *queue = malloc((graph->node_count + 1) * sizeof *queue);
    if (!queue) {
        for (size_t i = 0; i < graph->node_count; i++)
            graph->nodes[i].reached = true; /* cannot tell: claim no leak */
        return true;
    }
    size_t head = 0, tail = 0;
    for (size_t i = 0; i < graph->node_count; i++)
        if (graph->nodes[i].unexplained > 0) {
            graph->nodes[i].reached = true;
            queue[tail++] = (uint32_t)i;
        }
    while (head < tail) {
        uint32_t from = queue[head++];
        for (uint32_t k = graph->first_out[from]; k < graph->first_out[from + 1]; k++) {
            uint32_t to = graph->edges[graph->adjacency[k]].to;
            if (!graph->nodes[to].reached) {
                graph->nodes[to].reached = true;
                queue[tail++] = to;
            }
        }
    }
    free(queue);
    return true;
}

/* ---- names and chains ------------------------------------------------------------------------ */

/*
 * The str value of `dict` under a str key, found by walking it with PyDict_Next and comparing the
 * keys' text: a lookup could run a key's __eq__. NULL when there is none.
 */
static const char *dict_text(PyObject *dict, const char *wanted)
{
    if (!dict || !PyDict_Check(dict))
        return NULL;
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (python_api.PyDict_Next(dict, &position, &key, &value)) {
        if (!PyUnicode_Check(key) || !PyUnicode_Check(value))
            continue;
        const char *text = python_api.PyUnicode_AsUTF8(key);
        if (text && !strcmp(text, wanted))
            return python_api.PyUnicode_AsUTF8(value);
    }
    return NULL;
}

/*
 * The full name of a type, module.Qualname ("function" for builtins), read from its C
 * structures: an attribute lookup could run Python code of the program (a metaclass's
 * __getattribute__) while the analysis holds borrowed pointers into the heap. A static type's
 * tp_name is "module.Qualname" already (the runtime's own have no module part); a heap type
 * keeps its qualified name, and its module in its __dict__.
 */
static void type_full_name(PyTypeObject *type, char *out, size_t size)
{
    PyObject *error_type, *error_value, *error_traceback;
    python_api.PyErr_Fetch(&error_type, &error_value, &error_traceback);
    const char *qualname = NULL, *module = NULL;
    if (type->tp_flags & Py_TPFLAGS_HEAPTYPE) {
        PyObject *name = ((PyHeapTypeObject *)type)->ht_qualname;
        qualname = name && PyUnicode_Check(name) ? python_api.PyUnicode_AsUTF8(name) : NULL;
        module = dict_text(type->tp_dict, "__module__");
    }
    if (qualname && module && strcmp(module, "builtins") != 0)
        snprintf(out, size, "%s.%s", module, qualname);
    else if (qualname)
        snprintf(out, size, "%s", qualname);
    else
        snprintf(out, size, "%s", type->tp_name);
    python_api.PyErr_Clear(); /* text that is not UTF-8 */
    python_api.PyErr_Restore(error_type, error_value, error_traceback);
}

/*
 * The instance dictionary of `object` where the runtime keeps it, or NULL: at tp_dictoffset, or
 * for a managed dict (3.11+) in the third word before the object, whose low bit tags inline
 * values rather than a dict on 3.12.
 */
static PyObject *instance_dict(PyObject *object)
{
    PyTypeObject *type = Py_TYPE(object);
    if (type->tp_dictoffset > 0)
        return *(PyObject **)((char *)object + type->tp_dictoffset);
#if PY_VERSION_HEX >= 0x030B0000
    if (type->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        uintptr_t word = ((const uintptr_t *)object)[-3];
        return word & 1 ? NULL : (PyObject *)word;
    }
#endif
    return NULL;
}

/*
 * How `from` refers to `to`, for a visible edge: "[0]", "['key']", "__closure__", or "". Read
 * from the objects' C structures, like type_full_name.
 */
static void visible_edge_label(PyObject *from, PyObject *to, char *out, size_t size)
{
    out[0] = '\0';
    if (PyTuple_Check(from) || PyList_Check(from)) {
        Py_ssize_t length = PyTuple_Check(from) ? PyTuple_GET_SIZE(from) : PyList_GET_SIZE(from);
        for (Py_ssize_t i = 0; i < length; i++) {
            PyObject *item =
                PyTuple_Check(from) ? PyTuple_GET_ITEM(from, i) : PyList_GET_ITEM(from, i);
            if (item == to) {
                snprintf(out, size, "[%zd]", i);
                return;
            }
        }
        return;
    }
    if (PyDict_Check(from)) {
        Py_ssize_t position = 0;
        PyObject *key, *value;
        while (python_api.PyDict_Next(from, &position, &key, &value)) {
            if (value == to && PyUnicode_Check(key)) {
                snprintf(out, size, "['%s']", python_api.PyUnicode_AsUTF8(key));
                return;
            }
        }
        return;
    }
    if (Py_TYPE(from) == python_api.function_type) {
        PyFunctionObject *function = (PyFunctionObject *)from;
        if (function->func_closure == to)
            snprintf(out, size, "__closure__");
        else if (function->func_globals == to)
            snprintf(out, size, "__globals__");
        else if (function->func_defaults == to)
            snprintf(out, size, "__defaults__");
        return;
    }
    if (Py_TYPE(from) == python_api.cell_type) {
        snprintf(out, size, "cell_contents");
        return;
    }
    if (Py_TYPE(from) == python_api.method_type) {
        snprintf(out, size, ((PyMethodObject *)from)->im_self == to ? "__self__" : "__func__");
        return;
    }
    if (instance_dict(from) == to)
        snprintf(out, size, "__dict__");
}

static void format_path(const struct candidate *candidate, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < candidate->depth && used < size; i++)
        used += snprintf(out + used, size - used, "%s+%u", i ? "->" : "", candidate->path[i]);
}

/* A growable string for chains and DOT text. */
struct text {
    char *data;
    size_t length, capacity;
};

static void text_append(struct text *text, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    char piece[1024];
    int length = vsnprintf(piece, sizeof piece, format, arguments);
    va_end(arguments);
    if (length < 0)
        return;
    if ((size_t)length >= sizeof piece)
        length = sizeof piece - 1;
    if (text->length + length + 1 > text->capacity) {
        size_t capacity = (text->capacity + length + 1) * 2;
        char *grown = realloc(text->data, capacity);
        if (!grown)
            return;
        text->data = grown;
        text->capacity = capacity;
    }
    memcpy(text->data + text->length, piece, length + 1);
    text->length += length;
}

/*
 * Whether a cycle through a hidden edge may pass through `node`. A leaked cycle stays among the
 * leaked nodes. A cycle reachable today counts only through objects whose every reference the
 * graph explains: a path through a root (a module kept in sys.modules, a type, anything with a
 * reference from outside) links nearly everything to everything, and would outlive the cycle.
 */
static bool may_close_cycle(const struct node *node, bool is_holder, bool leaked_only)
{
    if (leaked_only)
        return !node->reached;
    return is_holder || (node->unexplained <= 0 && !node->is_type);
}

/*
 * Writes the cycle that hidden edge `hidden_edge` closes: holder --hidden--> referent, then the
 * shortest path back to the holder (restricted to leaked nodes when `leaked_only`). Returns
 * false when there is no such path within the search limit.
 */
static bool describe_cycle(struct graph *graph, size_t hidden_edge, bool leaked_only,
                           char **chain_out, char **dot_out)
{
    const struct edge *closing = &graph->edges[hidden_edge];
    uint32_t holder = closing->from, start = closing->to;
    struct cycle_search *search = &graph->search;
    if (!search->mark) {
        search->mark = calloc(graph->node_count, sizeof *search->mark);
        search->parent_edge = malloc(graph->node_count * sizeof *search->parent_edge);
        search->queue = malloc(graph->node_count * sizeof *search->queue);
    }
    if (!search->mark || !search->parent_edge || !search->queue)
        return false;
    uint32_t mark = ++search->count;
    uint32_t *parent_edge = search->parent_edge, *queue = search->queue;
    bool found = start == holder; /* a self-reference is the whole cycle */
    size_t head = 0, tail = 0;
    queue[tail++] = start;
    search->mark[start] = mark;
    parent_edge[start] = (uint32_t)hidden_edge;
    while (head < tail && tail < CHAIN_SEARCH_LIMIT && !found) {
        uint32_t from = queue[head++];
        for (uint32_t k = graph->first_out[from]; k < graph->first_out[from + 1] && !found; k++) {
            uint32_t e = graph->adjacency[k];
            uint32_t to = graph->edges[e].to;
            if (search->mark[to] == mark ||
                !may_close_cycle(&graph->nodes[to], to == holder, leaked_only))
                continue;
            search->mark[to] = mark;
            parent_edge[to] = e;
            if (to == holder)
                found = true;
            else
                queue[tail++] = to;
        }
    }
    if (!found)
        return false;
    /* Walk back from the holder to list the edges in order. */
    size_t path[64], length = 0;
    for (uint32_t at = holder; length < 64;) {
        size_t e = parent_edge[at];
        path[length++] = e;
        if (e == hidden_edge)
            break;
        at = graph->edges[e].from;
    }
    struct text chain = {0}, dot = {0};
    char name[256], label[128];
    text_append(&dot, "digraph extsan_cycle {\n  node [shape=box];\n");
    type_full_name(Py_TYPE(graph->nodes[holder].object), name, sizeof name);
    text_append(&chain, "%s", name);
    for (size_t i = length; i-- > 0;) {
        const struct edge *edge = &graph->edges[path[i]];
        if (edge->hidden >= 0)
            format_path(&graph->candidates[edge->hidden], label, sizeof label);
        else
            visible_edge_label(graph->nodes[edge->from].object, graph->nodes[edge->to].object,
                               label, sizeof label);
        type_full_name(Py_TYPE(graph->nodes[edge->to].object), name, sizeof name);
        if (edge->hidden >= 0)
            text_append(&chain, " --hidden @%s--> %s", label, name);
        else if (label[0])
            text_append(&chain, " --%s--> %s", label, name);
        else
            text_append(&chain, " --> %s", name);
        char from_name[256];
        type_full_name(Py_TYPE(graph->nodes[edge->from].object), from_name, sizeof from_name);
        text_append(&dot, "  n%u [label=\"%s\"];\n  n%u -> n%u [label=\"%s%s\"%s];\n", edge->from,
                    from_name, edge->from, edge->to, edge->hidden >= 0 ? "hidden @" : "", label,
                    edge->hidden >= 0 ? ", color=red, style=bold" : "");
    }
    text_append(&dot, "}\n");
    *chain_out = chain.data;
    *dot_out = dot.data;
    return true;
}

/* ---- pass: report ---------------------------------------------------------------------------- */

static void add_referent(struct heap_details *details, const char *type_name, const char *path,
                         const struct candidate *candidate)
{
    for (unsigned i = 0; i < details->referent_count; i++)
        if (!strcmp(details->referents[i].type_name, type_name) &&
            !strcmp(details->referents[i].path, path)) {
            details->referents[i].count++;
            return;
        }
    if (details->referent_count == HEAP_MAX_REFERENTS)
        return;
    unsigned i = details->referent_count++;
    snprintf(details->referents[i].type_name, sizeof details->referents[i].type_name, "%s",
             type_name);
    snprintf(details->referents[i].path, sizeof details->referents[i].path, "%s", path);
    details->referents[i].count = 1;
    details->referents[i].evidence = candidate->evidence == HEAP_BLOCK_NONE
                                         ? "instance"
                                         : heap_block_kind_name(candidate->evidence);
    details->referents[i].evidence_bytes = candidate->evidence_size;
}

/* Whether holder type `type` has no traverse that could know about the field at `offset`. */
static enum finding_kind classify_type(PyTypeObject *type, const struct candidate *candidate,
                                       bool *inherited)
{
    *inherited = false;
    if (!type->tp_traverse || !(type->tp_flags & Py_TPFLAGS_HAVE_GC))
        return FINDING_HIDDEN_REFERENCE;
    PyTypeObject *base = type->tp_base;
    if (base && base->tp_traverse == type->tp_traverse &&
        candidate->path[0] >= (size_t)base->tp_basicsize) {
        *inherited = true;
        return FINDING_HIDDEN_REFERENCE;
    }
    return FINDING_INCOMPLETE_TRAVERSE;
}

static struct heap_details *new_details(struct type_record *type,
                                        const struct instance_record *holder)
{
    struct heap_details *details = calloc(1, sizeof *details);
    if (!details)
        return NULL;
    type_full_name(type->type, details->type_name, sizeof details->type_name);
    details->example_site = holder->allocated_at;
    return details;
}

/* hidden-reference and incomplete-traverse: one finding per holder type. */
static void report_hidden_references(struct graph *graph)
{
    for (size_t e = graph->visible_edge_count; e < graph->edge_count; e++) {
        const struct edge *edge = &graph->edges[e];
        const struct candidate *candidate = &graph->candidates[edge->hidden];
        struct node *holder_node = &graph->nodes[candidate->holder];
        struct instance_node *holder = instance_node_of(graph, holder_node);
        if (holder->record->counted_hidden && !holder->holder_counted)
            continue; /* counted by an earlier analysis */
        struct type_record *type = holder->record->type;
        bool inherited = false;
        enum finding_kind kind = candidate->own_type
                                     ? FINDING_INCOMPLETE_TRAVERSE
                                     : classify_type(type->type, candidate, &inherited);
        struct finding *finding = findings_find_heap(kind, type);
        bool first_for_holder = !holder->holder_counted;
        holder->holder_counted = true;
        holder->record->counted_hidden = true;
        if (!finding) {
            struct heap_details *details = new_details(type, holder->record);
            if (!details || !(finding = findings_record_heap(kind, type, details))) {
                free(details);
                continue;
            }
            details->inherited_traverse = inherited;
        } else if (first_for_holder) {
            finding->count++;
        }
        struct heap_details *details = finding->heap;
        if (first_for_holder)
            details->instances++;
        /* The example is the holder from the oldest site (ids grow as sites are made): the same
           whatever the graph's order, and the first test that made such a holder. */
        site_id site = holder->record->allocated_at;
        if (first_for_holder && site && (!details->example_site || site < details->example_site)) {
            details->example_site = site;
            const struct allocation_site *where = allocation_site_get(site);
            finding->context = where ? where->context : NULL;
        }
        if (candidate->own_type) {
            details->missed_type_visit = true;
            holder->own_type_reported = true;
        }
        char name[128], path[64];
        type_full_name(Py_TYPE(graph->nodes[candidate->referent].object), name, sizeof name);
        format_path(candidate, path, sizeof path);
        add_referent(details, name, path, candidate);
        /* A holder reachable today whose hidden reference leads back to it: never collectable.
           A few holders per type tell; searching from every one would cost a pass each. */
        if (!details->chain && holder_node->reached &&
            details->cycle_searches < MAX_CYCLE_SEARCHES) {
            details->cycle_searches++;
            char *dot = NULL;
            if (describe_cycle(graph, e, false, &details->chain, &dot))
                details->never_collectable = true;
            free(dot);
        }
    }
}

/* incomplete-traverse for heap types whose traverse does not visit their own type (3.9+). */
static void report_missed_type_visits(struct graph *graph)
{
    for (size_t k = 0; k < graph->ordered_count; k++) {
        struct node *node = &graph->nodes[graph->instance_order[k]];
        struct instance_node *instance = instance_node_of(graph, node);
        if (!misses_own_type_visit(graph, node) || instance->own_type_reported ||
            (instance->record->counted_hidden && !instance->holder_counted))
            continue;
        instance->holder_counted = true;
        instance->record->counted_hidden = true;
        struct type_record *type = instance->record->type;
        struct finding *finding = findings_find_heap(FINDING_INCOMPLETE_TRAVERSE, type);
        if (!finding) {
            struct heap_details *details = new_details(type, instance->record);
            if (!details ||
                !(finding = findings_record_heap(FINDING_INCOMPLETE_TRAVERSE, type, details))) {
                free(details);
                continue;
            }
        }
        finding->heap->instances++;
        finding->heap->missed_type_visit = true;
    }
}

/* leaked-cycle: one finding per group of leaked nodes connected to a hidden edge's holder. */
static void report_leaked_cycles(struct graph *graph)
{
    if (graph->edge_count == graph->visible_edge_count)
        return; /* no hidden edge */
    uint32_t next_component = 1;
    /* Per node: which leaked group it is in, 0 for none yet. */
    uint32_t *component_of = calloc(graph->node_count + 1, sizeof *component_of);
    uint32_t *stack = malloc((graph->node_count + 1) * sizeof *stack);
    if (!component_of || !stack)
        goto done;
    for (size_t e = graph->visible_edge_count; e < graph->edge_count; e++) {
        const struct edge *edge = &graph->edges[e];
        struct node *holder_node = &graph->nodes[edge->from];
        if (holder_node->reached || component_of[edge->from])
            continue;
        /* The group: leaked nodes reachable from the holder (it is in a cycle with them). A
           group whose holder an earlier analysis reported is walked (its nodes are marked) but
           not reported again. */
        struct instance_record *holder = instance_of(graph, holder_node);
        bool reported_before = holder->counted_leaked;
        uint32_t component = next_component++;
        size_t depth = 0, objects = 0;
        struct heap_details *details = new_details(holder->type, holder);
        if (!details)
            break;
        component_of[edge->from] = component;
        stack[depth++] = edge->from;
        while (depth) {
            uint32_t from = stack[--depth];
            struct node *node = &graph->nodes[from];
            objects++;
            if (node->instance)
                instance_of(graph, node)->counted_leaked = true;
            char name[128];
            type_full_name(Py_TYPE(node->object), name, sizeof name);
            unsigned t = 0;
            while (t < details->type_count && strcmp(details->types[t].name, name))
                t++;
            if (t < HEAP_MAX_TYPES) {
                if (t == details->type_count)
                    snprintf(details->types[details->type_count++].name,
                             sizeof details->types[0].name, "%s", name);
                details->types[t].count++;
            }
            for (uint32_t k = graph->first_out[from]; k < graph->first_out[from + 1]; k++) {
                uint32_t to = graph->edges[graph->adjacency[k]].to;
                if (!graph->nodes[to].reached && !component_of[to]) {
                    component_of[to] = component;
                    stack[depth++] = to;
                }
            }
        }
        details->objects = (unsigned)objects;
        if (reported_before) {
            free(details);
            continue;
        }
        /* Cycles like one reported already only count: their chain would be the same. */
        struct finding *same = findings_find_leaked_cycle(holder->type, details);
        if (same) {
            same->count++;
            free(details);
            continue;
        }
        describe_cycle(graph, e, true, &details->chain, &details->dot);
        if (!findings_record_heap(FINDING_LEAKED_CYCLE, holder->type, details))
            free(details);
    }
done:
    free(component_of);
    free(stack);
}

/* ---- progress -----------------------------------------------------------------------------
 * How far the analysis got, for the reports: "not run", "running <pass>", "done", "interrupted
 * by SIGINT during <pass>", "failed: ...". A signal handler reads it (the JSON's "analysis"), so
 * it is plain ASCII without quotes, written in place and always terminated.
 */

#define STATE_SIZE 64
static char state[STATE_SIZE + 1] = "not run";
static bool state_incomplete; /* started and not finished */

static void set_state(bool incomplete, const char *format, ...)
{
    char text[STATE_SIZE + 1] = {0};
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(text, sizeof text, format, arguments);
    va_end(arguments);
    for (size_t i = 0; i < STATE_SIZE; i++)
        state[i] = text[i] == '"' || text[i] == '\\' ? '\'' : text[i];
    state_incomplete = incomplete;
}

const char *heap_analysis_state(void)
{
    return state;
}

bool heap_analysis_completed(void)
{
    return !state_incomplete;
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) + (now.tv_nsec - start->tv_nsec) / 1e9;
}

/*
 * Enters a pass. False when the analysis must stop: an interrupt arrived (signals.h), or an
 * earlier pass ran out of memory.
 */

static bool enter_pass(struct graph *graph, const char *pass)
{
    if (signals_interrupted())
        graph->interrupted = true;
    if (graph->interrupted || graph->out_of_memory)
        return false;
    if (graph->pass)
        extsan_log(2, "heap analysis: %s took %.3f s", graph->pass,
                   seconds_since(&graph->pass_start));
    clock_gettime(CLOCK_MONOTONIC, &graph->pass_start);
    graph->pass = pass;
    set_state(true, "running %s", pass);
    extsan_log(2, "heap analysis: %s", pass);
    return true;
}

/* ---- the passes in order --------------------------------------------------------------------- */

/* The passes in order; each stops early when interrupted or out of memory. */
static void run_passes(struct graph *graph, const struct timespec *start)
{
    double collect_seconds = 0;
    if (enter_pass(graph, "collect")) {
        python_api.PyGC_Collect();
        collect_seconds = seconds_since(start);
    }
    PyObject *tracked_objects = NULL;
    if (enter_pass(graph, "enumerate")) {
        plan_huge_pages();
        graph->memory = memory_map_load();
        heap_blocks_forget();
        registry_walk_types(&graph->live_types);
        tracked_objects = call_gc("get_objects");
        if (!graph->memory || !tracked_objects || !PyList_Check(tracked_objects))
            graph->failure = "could not start (no object list or no memory map)";
        else if (!enumerate_nodes(graph, tracked_objects))
            graph->out_of_memory = true;
    }
    if (!graph->failure && enter_pass(graph, "account") && !account_visible_references(graph))
        graph->out_of_memory = true;
    if (!graph->failure && enter_pass(graph, "scan")) {
        size_t accounted = graph->node_count;
        scan_instances(graph);
        add_missed_type_references(graph);
        account_nodes_from(graph, accounted);
    }
    if (!graph->failure && enter_pass(graph, "validate"))
        validate_candidates(graph);
    if (!graph->failure && enter_pass(graph, "reach") && !reach_from_roots(graph))
        graph->out_of_memory = true;
    if (!graph->failure && enter_pass(graph, "report")) {
        report_hidden_references(graph);
        report_missed_type_visits(graph);
        report_leaked_cycles(graph);
    }
    if (tracked_objects)
        python_api.Py_DecRef(tracked_objects);
    extsan_log(
        1, "heap analysis: %zu nodes, %zu edges, %zu candidates, %.3f s (its collection %.3f s)",
        graph->node_count, graph->edge_count, graph->candidate_count, seconds_since(start),
        collect_seconds);
    extsan_log(
        2, "heap analysis: its arrays asked for %zu MiB of huge pages, %zu MiB left in the budget",
        huge_page_asked >> 20, huge_page_budget >> 20);
}

static void analyse(bool at_exit)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    PyObject *error_type, *error_value, *error_traceback;
    python_api.PyErr_Fetch(&error_type, &error_value, &error_traceback);
    bool interruptible = signals_interruptible_begin();
    struct graph graph = {0};
    run_passes(&graph, &start);
    if (graph.interrupted)
        set_state(true, "interrupted by SIGINT during %s", graph.pass);
    else if (graph.failure)
        set_state(true, "failed: %s", graph.failure);
    else if (graph.out_of_memory)
        set_state(true, "failed: out of memory during %s", graph.pass);
    else
        set_state(false, "done");
    if (!heap_analysis_completed())
        extsan_log(0, "the heap analysis did not complete (%s); its findings are incomplete",
                   state);
    /* The records the passes read are in the registry's table: dropped only now. */
    for (size_t i = 0; i < graph.stale_count; i++)
        registry_forget_stale(graph.stale[i]);
    if (graph.stale_count)
        extsan_log(1, "heap analysis: dropped %zu stale registry records (objects freed unseen)",
                   graph.stale_count);
    graph_free(&graph);
    python_api.PyErr_Clear();
    python_api.PyErr_Restore(error_type, error_value, error_traceback);
    if (interruptible)
        signals_interruptible_end(at_exit);
    report_snapshot(); /* the findings reach the report file now, whatever comes after */
}

/* The exit analysis ran: the last one of the process. */
static bool exit_analysis_done;

void heap_analysis_run(void)
{
    if (exit_analysis_done || !extsan_options.check_hidden_references || !gil_held())
        return;
    exit_analysis_done = true;
    analyse(true);
}

unsigned heap_analysis_check_now(void)
{
    if (exit_analysis_done || !extsan_options.check_hidden_references || !gil_held() ||
        !python_is_running())
        return 0;
    unsigned before = findings_count();
    analyse(false);
    return findings_count() - before;
}

/* ---- arming at exit -------------------------------------------------------------------------- */

static PyObject *analyse_at_exit(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    heap_analysis_run();
    python_api.Py_IncRef(python_api.none);
    return python_api.none;
}

static PyMethodDef exit_method = {"extsan_heap_analysis", analyse_at_exit, METH_NOARGS,
                                  "extsan's exit analysis of references hidden from the GC"};

void heap_analysis_arm(void)
{
    static bool armed;
    if (armed || !extsan_options.check_hidden_references || !gil_held() || !python_is_running())
        return;
    armed = true;
    PyObject *error_type, *error_value, *error_traceback;
    python_api.PyErr_Fetch(&error_type, &error_value, &error_traceback);
    PyObject *atexit = python_api.PyImport_ImportModule("atexit");
    PyObject *register_function =
        atexit ? python_api.PyObject_GetAttrString(atexit, "register") : NULL;
    PyObject *callback = python_api.PyCMethod_New(&exit_method, NULL, NULL, NULL);
    PyObject *result =
        register_function && callback
            ? python_api.PyObject_CallFunctionObjArgs(register_function, callback, NULL)
            : NULL;
    if (!result)
        extsan_log(0, "could not register the exit analysis; hidden references go unchecked");
    PyObject *owned[] = {atexit, register_function, callback, result};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        if (owned[i])
            python_api.Py_DecRef(owned[i]);
    python_api.PyErr_Clear();
    python_api.PyErr_Restore(error_type, error_value, error_traceback);
}
