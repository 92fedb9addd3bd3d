#define _GNU_SOURCE
#include "heap_graph.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void type_full_name(PyTypeObject *type, char *out, size_t size)
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

/* The instance dictionary of `object` where the runtime keeps it, or NULL: at tp_dictoffset, or
   before the object (a managed dict). */
static PyObject *instance_dict(PyObject *object)
{
    PyTypeObject *type = Py_TYPE(object);
    if (type->tp_dictoffset > 0)
        return *(PyObject **)((char *)object + type->tp_dictoffset);
    return object_managed_dict(object);
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
                const char *text = python_api.PyUnicode_AsUTF8(key);
                if (text)
                    snprintf(out, size, "['%s']", text);
                python_api.PyErr_Clear(); /* a key that is not UTF-8 */
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

void format_path(const struct candidate *candidate, char *out, size_t size)
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

bool describe_cycle(struct graph *graph, size_t hidden_edge, bool leaked_only, char **chain_out,
                    char **dot_out)
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
    for (uint32_t at = holder;;) {
        if (length == 64)
            return false; /* too long to write out */
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
