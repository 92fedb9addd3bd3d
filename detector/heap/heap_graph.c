#define _GNU_SOURCE
#include "heap_graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
static size_t huge_page_size; /* 0: no transparent huge pages */
size_t huge_page_budget;
size_t huge_page_asked;

void plan_huge_pages(void)
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

void *big_alloc(size_t bytes)
{
    return big_resize(NULL, 0, bytes);
}

static void big_free(void *array, size_t bytes)
{
    if (array)
        munmap(array, bytes);
}

bool grow(void **array, size_t *capacity, size_t count, size_t element_size)
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

uint32_t node_lookup(const struct graph *graph, uintptr_t address)
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

bool index_init(struct address_index *index)
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

bool reserve_nodes(struct graph *graph, size_t entries)
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

uint32_t add_node(struct graph *graph, PyObject *object, int32_t unexplained, bool traversed)
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

struct instance_record *instance_of(const struct graph *graph, const struct node *node)
{
    return node->instance ? graph->instances[node->instance - 1].record : NULL;
}

struct instance_node *instance_node_of(const struct graph *graph, const struct node *node)
{
    return &graph->instances[node->instance - 1];
}

void add_edge(struct graph *graph, uint32_t from, uint32_t to, int32_t hidden)
{
    if (!grow((void **)&graph->edges, &graph->edge_capacity, graph->edge_count,
              sizeof *graph->edges)) {
        graph->out_of_memory = true;
        return;
    }
    graph->edges[graph->edge_count++] = (struct edge){from, to, hidden};
}

void graph_free(struct graph *graph)
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

PyTypeObject *live_type_at(const struct graph *graph, uintptr_t address)
{
    if (!memory_map_readable(graph->memory, address, sizeof(PyObject)))
        return NULL;
    PyTypeObject *type = Py_TYPE((PyObject *)address);
    return pointer_set_contains(&graph->live_types, type) ? type : NULL;
}
