#define _GNU_SOURCE
#include "heap_graph.h"

#include "findings.h"
#include "heap_analysis.h"
#include "heap_blocks.h"
#include "symbolize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- pass: report ---------------------------------------------------------------------------- */

static void add_function(struct instance_layout *layout, const void *function)
{
    uintptr_t address = (uintptr_t)function;
    /* Not the runtime's functions, nor extsan's wrappers that replaced some slots. */
    if (!address || address_in_python_runtime(function) ||
        pc_in_same_object(address + 1, (const void *)&add_function) ||
        layout->function_count == INSTANCE_LAYOUT_MAX_FUNCTIONS)
        return;
    for (unsigned i = 0; i < layout->function_count; i++)
        if (layout->functions[i] == address)
            return;
    layout->functions[layout->function_count++] = address;
}

/* memcpy: ISO C has no conversion from a function pointer to an object pointer. */
#define ADD_SLOT(layout, slot)                                                                     \
    do {                                                                                           \
        const void *address_;                                                                      \
        memcpy(&address_, &(slot), sizeof address_);                                               \
        add_function(layout, address_);                                                            \
    } while (0)

/*
 * The std::type_info of the C++ class a binding library bound to `type`: a pointer to one in
 * the binding's type record, which such libraries keep in the type object past the runtime's
 * PyHeapTypeObject (the metatype's extra size). Recognised by its vtable, not by the
 * library's layout.
 */
static void find_bound_class(struct graph *graph, PyTypeObject *type,
                             struct instance_layout *layout)
{
    size_t start = (size_t)python_api.type_type->tp_basicsize;
    size_t end = (size_t)Py_TYPE(type)->tp_basicsize;
    static char name[256];
    for (size_t at = start; at + sizeof(uintptr_t) <= end; at += sizeof(uintptr_t)) {
        uintptr_t candidate = *(const uintptr_t *)((const char *)type + at);
        if (!memory_map_readable(graph->memory, candidate, 2 * sizeof(uintptr_t)) ||
            !symbolize_is_class_type_info(((const uintptr_t *)candidate)[0]))
            continue;
        const char *mangled = ((const char *const *)candidate)[1];
        size_t length = 0;
        while (length + 1 < sizeof name &&
               memory_map_readable(graph->memory, (uintptr_t)(mangled + length), 1) &&
               mangled[length])
            name[length] = mangled[length], length++;
        name[length] = '\0';
        if (!length || length + 1 == sizeof name || name[0] == '*')
            continue;
        layout->cxx_mangled_name = name;
        layout->cxx_type_info = candidate;
        return;
    }
}

/* What naming a holder's members needs of its type, alive now (debug_members.h). */
static void describe_layout(struct graph *graph, struct type_record *record,
                            const struct candidate *candidate, struct instance_layout *layout)
{
    PyTypeObject *type = record->type;
    memset(layout, 0, sizeof *layout);
    layout->basicsize = (size_t)type->tp_basicsize;
    if (record->binding == BINDING_NANOBIND || record->binding == BINDING_PYBIND11) {
        find_bound_class(graph, type, layout);
        if (!layout->cxx_mangled_name && candidate->depth == 2) {
            const char *dot = strrchr(type->tp_name, '.');
            layout->cxx_class_name = dot ? dot + 1 : type->tp_name;
            layout->cxx_module = (uintptr_t)record->creator_code;
            layout->cxx_block_bytes = candidate->evidence_size;
        }
        return;
    }
    if (record->original_dealloc)
        ADD_SLOT(layout, record->original_dealloc);
    ADD_SLOT(layout, type->tp_traverse);
    ADD_SLOT(layout, type->tp_clear);
    ADD_SLOT(layout, type->tp_dealloc);
    ADD_SLOT(layout, type->tp_init);
    ADD_SLOT(layout, type->tp_new);
    ADD_SLOT(layout, type->tp_repr);
    ADD_SLOT(layout, type->tp_str);
    ADD_SLOT(layout, type->tp_call);
    ADD_SLOT(layout, type->tp_iter);
    ADD_SLOT(layout, type->tp_iternext);
    ADD_SLOT(layout, type->tp_richcompare);
    ADD_SLOT(layout, type->tp_hash);
    ADD_SLOT(layout, type->tp_finalize);
    ADD_SLOT(layout, type->tp_getattro);
    ADD_SLOT(layout, type->tp_setattro);
    for (PyMethodDef *method = type->tp_methods; method && method->ml_name; method++)
        ADD_SLOT(layout, method->ml_meth);
    for (PyGetSetDef *getset = type->tp_getset; getset && getset->name; getset++) {
        ADD_SLOT(layout, getset->get);
        ADD_SLOT(layout, getset->set);
    }
}

static void add_referent(struct graph *graph, struct type_record *type,
                         struct heap_details *details, const char *type_name, const char *path,
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
    struct instance_layout layout;
    describe_layout(graph, type, candidate, &layout);
    details->referents[i].naming = debug_member_name(&layout, candidate->path, candidate->depth,
                                                     &details->referents[i].member);
}

/*
 * Whether holder type `type` has no traverse that could know about the field the candidate's
 * path starts at (hidden-reference), or has one that misses it (incomplete-traverse).
 */
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

void report_hidden_references(struct graph *graph)
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
        add_referent(graph, type, details, name, path, candidate);
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

void report_missed_type_visits(struct graph *graph)
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

void report_leaked_cycles(struct graph *graph)
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
