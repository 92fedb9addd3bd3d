#define _GNU_SOURCE
#include "heap_graph.h"

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

/* A refcount as the graph keeps it: 32 bits, plenty for anything not immortal. */
static int32_t refcount_of(PyObject *object)
{
    Py_ssize_t count = Py_REFCNT(object);
    return count > INT32_MAX / 2 ? INT32_MAX / 2 : (int32_t)count;
}

bool record_alive(const struct graph *graph, const struct instance_record *record)
{
    PyObject *object = record->object;
    PyTypeObject *type = live_type_at(graph, (uintptr_t)object);
    if (!type)
        return false;
    Py_ssize_t refcount = Py_REFCNT(object);
    if (refcount < 1 || refcount > MAX_PLAUSIBLE_REFCOUNT)
        return false;
    PyTypeObject *ancestor = type;
    while (ancestor && ancestor != record->type->type)
        ancestor = ancestor->tp_base;
    return ancestor != NULL;
}

void list_stale(struct graph *graph, PyObject *object)
{
    if (grow((void **)&graph->stale, &graph->stale_capacity, graph->stale_count,
             sizeof *graph->stale))
        graph->stale[graph->stale_count++] = object;
}

static enum record_state judge_record(const struct graph *graph,
                                      const struct instance_record *record, bool tracked)
{
    if (!record_alive(graph, record))
        return RECORD_STALE;
    if (PyType_IS_GC(Py_TYPE(record->object)) && !tracked)
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
        if (state == RECORD_STALE)
            list_stale(graph, instance->object);
        if (state != RECORD_LIVE)
            continue;
        if (index == NO_NODE && !object_is_immortal(instance->object))
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

bool enumerate_nodes(struct graph *graph, PyObject *tracked_objects)
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
        if (!object_is_immortal(object))
            add_node(graph, object, refcount_of(object) - 1, true);
    }
    registry_for_each_instance(list_instance, graph);
    add_instance_nodes(graph);
    return !graph->out_of_memory;
}

/* ---- pass: account ---------------------------------------------------------------------------
 * After it: each node's `unexplained` is its refcount less the references that the traverse of
 * some node visits (or its managed dict, which from 3.13 the traverse may leave out), and every
 * such reference is a visible edge. Also: instance_order lists the instance nodes in node order.
 *
 * The collector untracks a dict or a tuple that holds only objects it does not collect (a
 * non-GC extension instance, say), and such a container can still close a cycle: `d = {}; d["h"]
 * = Holder(d)`. So a container met as a traverse's target, or as a pointer in a holder's memory,
 * becomes a node too (discover_untracked), and its own traverse runs like any other: nodes made
 * during the pass are appended, and the pass's loop reaches them. The scan's discoveries are
 * accounted after it (account_discovered).
 */

uint32_t discover_untracked(struct graph *graph, PyObject *object)
{
    if (!PyType_IS_GC(Py_TYPE(object)) || PyType_Check(object) || object_is_immortal(object) ||
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
    if (target == graph->current_managed_dict)
        graph->current_managed_dict = NULL;
    uint32_t index = node_lookup(graph, (uintptr_t)target);
    if (index == NO_NODE)
        index = discover_untracked(graph, target);
    if (index == NO_NODE || !graph->nodes[index].countable)
        return 0;
    graph->nodes[index].unexplained--;
    add_edge(graph, graph->current_source, index, -1);
    return 0;
}

void account_nodes_from(struct graph *graph, size_t first)
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
        PyObject *object = node->object;
        graph->current_managed_dict = object_managed_dict(object);
        /* The visit may add nodes and move the array: `node` is not read after it. */
        type->tp_traverse(object, visit_and_account, graph);
        /* A managed dict its traverse did not show (3.13+) is a reference all the same. */
        if (graph->current_managed_dict)
            visit_and_account(graph->current_managed_dict, graph);
    }
    graph->visible_edge_count = graph->edge_count;
}

bool account_visible_references(struct graph *graph)
{
    graph->instance_order = big_alloc((graph->instance_count + 1) * sizeof *graph->instance_order);
    if (!graph->instance_order)
        return false;
    account_nodes_from(graph, 0);
    return !graph->out_of_memory;
}
