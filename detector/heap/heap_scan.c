#define _GNU_SOURCE
#include "heap_graph.h"

#include "heap_blocks.h"
#include "options.h"
#include "python_api.h"

#include <string.h>

/* ---- pass: scan ------------------------------------------------------------------------------
 * After it: every pointer to a node found in an extension instance's memory, or in heap blocks
 * reached from it through up to scan_hops pointers, is a candidate. Memory is read only inside
 * mappings listed readable in /proc/self/maps, so the scan cannot fault.
 */

struct scan_state {
    struct graph *graph;
    uint32_t holder;
    /* The probe (probe_instances): no nodes yet; any collected object the holder's traverse does
       not visit (`visible`) would be a candidate, and sets `found`. */
    bool probe, found;
    struct pointer_set visible;
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

static void descend(struct scan_state *scan, uintptr_t word, unsigned depth);

/*
 * The probe's reading of a word: true when it names an object (the scan goes no deeper), and
 * then `found` if it is one the scan would make a candidate of, which the holder's traverse does
 * not visit. A superset of the scan's candidates: any collected object, tracked or not, and any
 * object of an extension type (an instance node, collected or not).
 */
static bool probe_word(struct scan_state *scan, uintptr_t word)
{
    PyObject *object = other_object_at(scan->graph, word);
    if (!object)
        return false;
    PyTypeObject *type = Py_TYPE(object);
    bool may_be_node = PyType_IS_GC(type) || registry_find_type_or_ancestor(type);
    if (may_be_node && !PyType_Check(object) && !pointer_set_contains(&scan->visible, object))
        scan->found = true;
    return true;
}

static void scan_words(struct scan_state *scan, uintptr_t start, size_t length, unsigned depth)
{
    struct graph *graph = scan->graph;
    bool objects_only = true; /* so far in this block */
    for (size_t offset = 0; offset + sizeof(uintptr_t) <= length && !scan->found;
         offset += sizeof(uintptr_t)) {
        uintptr_t word = *(const uintptr_t *)(start + offset);
        if (!word)
            continue;
        if (word < 4096 || word % sizeof(void *) != 0) {
            objects_only = false;
            continue;
        }
        scan->path[depth] = (uint16_t)(depth == 0 ? offset + sizeof(PyObject) : offset);
        if (scan->probe) {
            if (probe_word(scan, word))
                continue;
            objects_only = false;
            descend(scan, word, depth);
            continue;
        }
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
        descend(scan, word, depth);
    }
}

/* Scans the heap block `word` points into, if it is one, within scan_hops of the holder. */
static void descend(struct scan_state *scan, uintptr_t word, unsigned depth)
{
    if (depth + 1 >= (unsigned)extsan_options.scan_hops + 1 || depth + 1 >= MAX_PATH_DEPTH ||
        scan->found)
        return;
    enum heap_block_kind kind;
    size_t window = heap_block_extent(scan->graph->memory, word, &kind);
    if (window && !already_visited(scan, word)) {
        scan->block_kind[depth + 1] = (uint8_t)kind;
        scan->block_size[depth + 1] = (uint32_t)window;
        scan_words(scan, word, window, depth + 1);
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
static size_t instance_extent(const struct instance_record *instance, struct memory_map *memory)
{
    size_t bound = object_extent(instance->object, memory);
    if (instance->size)
        return instance->size < bound ? instance->size : bound;
    /* Unknown allocation (PyObject_Init on memory extsan did not see allocated): the header and
       one pointer, what the smallest wrapper (nanobind's for an external C++ object) has. */
    size_t minimal = sizeof(PyObject) + sizeof(void *);
    return bound < minimal ? bound : minimal;
}

/*
 * The holders whose memory is scanned and whose traverse is judged: instances of the user's
 * extension types (the registry holds no type of the runtime's or the standard library's), not
 * of a binding library's own machinery (nanobind's nb_func, pybind11's pybind11_type: correct,
 * and not the user's to fix), registered by this process: a forked child's inherited instances
 * are its parent's to report, at the parent's exit.
 */
static bool instance_is_checked(const struct instance_record *instance)
{
    return !instance->type->binding_machinery && registry_registered_here(instance);
}

static bool holder_is_checked(const struct graph *graph, const struct node *node)
{
    return node->instance && instance_is_checked(instance_of(graph, node));
}

/* Scans the memory of `instance`, the holder of `scan`. */
static void scan_holder(struct scan_state *scan, const struct instance_record *instance)
{
    struct memory_map *memory = scan->graph->memory;
    size_t extent = instance_extent(instance, memory);
    uintptr_t body = (uintptr_t)instance->object + sizeof(PyObject);
    if (extent <= sizeof(PyObject) ||
        !memory_map_readable(memory, (uintptr_t)instance->object, extent))
        return;
    scan->visited_count = 0;
    scan->block_kind[0] = HEAP_BLOCK_NONE;
    scan->block_size[0] = (uint32_t)extent;
    scan_words(scan, body, extent - sizeof(PyObject), 0);
}

bool misses_own_type_visit(struct graph *graph, const struct node *node)
{
    if (!node->traversed || node->visited_own_type || !holder_is_checked(graph, node))
        return false;
    PyTypeObject *type = Py_TYPE(node->object);
    /* Classes made by an extension metaclass are the runtime's type objects underneath. */
    return !PyType_Check(node->object) && instance_of(graph, node)->type->type == type &&
           (type->tp_flags & Py_TPFLAGS_HEAPTYPE) && type->tp_traverse;
}

void scan_instances(struct graph *graph)
{
    struct scan_state scan = {.graph = graph};
    for (size_t k = 0; k < graph->ordered_count && keep_going(graph, k); k++) {
        uint32_t i = graph->instance_order[k];
        struct node *node = &graph->nodes[i];
        if (!holder_is_checked(graph, node))
            continue;
        scan.holder = i;
        scan_holder(&scan, instance_of(graph, node));
    }
}

/* ---- pass: probe -----------------------------------------------------------------------------
 * Before the others, and without a graph: whether any holder might hold a candidate or miss its
 * type's visit. When none might, no pass after it could find anything, and the analysis stops
 * at no cost but the holders' own memory: a forked child that made a few clean instances, a
 * process whose instances hold no Python object.
 */

struct probe {
    struct scan_state scan;
    PyTypeObject *type; /* of the holder whose traverse runs */
    bool visited_type;
};

static int visit_for_probe(PyObject *target, void *context)
{
    struct probe *probe = context;
    if (target == (PyObject *)probe->type)
        probe->visited_type = true;
    if (target && !pointer_set_contains(&probe->scan.visible, target) &&
        !pointer_set_add(&probe->scan.visible, target))
        probe->scan.found = true; /* out of memory: the probe cannot clear this holder */
    return 0;
}

/* The liveness test of enumerate (record_alive; the stale are listed as it lists them), and a
   collected holder must be tracked. */
static void probe_instance(struct instance_record *instance, void *context)
{
    struct probe *probe = context;
    struct graph *graph = probe->scan.graph;
    if (probe->scan.found)
        return;
    if (!record_alive(graph, instance)) {
        list_stale(graph, instance->object);
        return;
    }
    if (!instance_is_checked(instance))
        return;
    PyObject *object = instance->object;
    PyTypeObject *type = Py_TYPE(object);
    pointer_set_empty(&probe->scan.visible); /* one allocation for all holders, not one each */
    if (PyType_IS_GC(type)) {
        if (!memory_map_readable(graph->memory, (uintptr_t)object - GC_HEADER_SIZE,
                                 GC_HEADER_SIZE) ||
            !python_api.PyObject_GC_IsTracked(object))
            return; /* enumerate leaves it out */
        if (type->tp_traverse) {
            probe->type = type;
            probe->visited_type = false;
            type->tp_traverse(object, visit_for_probe, probe);
            if (!probe->visited_type && !PyType_Check(object) && instance->type->type == type &&
                (type->tp_flags & Py_TPFLAGS_HEAPTYPE))
                probe->scan.found = true; /* misses_own_type_visit */
        }
    }
    scan_holder(&probe->scan, instance);
}

bool probe_instances(struct graph *graph)
{
    struct probe probe = {.scan = {.graph = graph, .probe = true}};
    registry_for_each_instance(probe_instance, &probe);
    pointer_set_clear(&probe.scan.visible);
    if (probe.scan.found)
        graph->stale_count = 0; /* enumerate judges every record again, after the collection */
    return probe.scan.found;
}

void add_missed_type_references(struct graph *graph)
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
