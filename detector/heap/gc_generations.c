#define _GNU_SOURCE
#include "gc_generations.h"

#include "gil.h"
#include "log.h"
#include "memory_map.h"
#include "python_api.h"

#include <stdint.h>

/* The internal header after Python.h, as python_stack.c explains. 3.9-3.13 share one layout:
   generations[3] (list head, threshold, count), generation0, permanent_generation. */
#undef _PyGC_FINALIZED /* 3.11's pycore_gc.h defines it again */
#define Py_BUILD_CORE 1
#include <internal/pycore_interp.h>
#undef Py_BUILD_CORE

enum layout { LAYOUT_UNCHECKED, LAYOUT_VERIFIED, LAYOUT_DIFFERENT };
static enum layout layout;

static struct _gc_runtime_state *collector; /* whose generations are set aside, or NULL */
static PyGC_Head set_aside;                 /* the head of the list they are on */
static Py_ssize_t frozen_before;            /* the permanent generation's size then */
static bool froze;                          /* set aside by gc.freeze() instead */

/* gc.function(): whether it returned; its integer result in *result when asked for. */
static bool call_gc(const char *function, long *result)
{
    PyObject *value = python_call_module_function("gc", function);
    bool called = value != NULL;
    if (value && result)
        called = (*result = python_api.PyLong_AsLong(value)) != -1;
    if (value)
        python_api.Py_DecRef(value);
    python_api.PyErr_Clear();
    return called;
}

static bool head_readable(struct memory_map *map, PyGC_Head *head)
{
    return memory_map_readable(map, (uintptr_t)head, sizeof *head);
}

/* A list head whose neighbours are mapped and point back at it. */
static bool list_is_consistent(struct memory_map *map, PyGC_Head *head)
{
    if (!head_readable(map, head))
        return false;
    PyGC_Head *next = _PyGCHead_NEXT(head), *prev = _PyGCHead_PREV(head);
    return head_readable(map, next) && head_readable(map, prev) && _PyGCHead_PREV(next) == head &&
           _PyGCHead_NEXT(prev) == head;
}

/*
 * Whether the runtime's collector state has this core's layout (a patch release may differ
 * from the headers it was built with): its generation0 points at its first generation's head,
 * its thresholds are gc.get_threshold()'s, and every generation's list is linked both ways.
 * Read only where the memory map says it is mapped. Decided once per process.
 */
static bool layout_matches(struct _gc_runtime_state *gc)
{
    if (layout != LAYOUT_UNCHECKED)
        return layout == LAYOUT_VERIFIED;
    layout = LAYOUT_DIFFERENT;
    struct memory_map *map = memory_map_load();
    PyObject *thresholds = python_call_module_function("gc", "get_threshold");
    bool matches = map && thresholds && PyTuple_Check(thresholds) &&
                   PyTuple_GET_SIZE(thresholds) == NUM_GENERATIONS &&
                   memory_map_readable(map, (uintptr_t)gc, sizeof *gc) &&
                   gc->generation0 == &gc->generations[0].head;
    for (int i = 0; matches && i < NUM_GENERATIONS; i++)
        matches = python_api.PyLong_AsLong(PyTuple_GET_ITEM(thresholds, i)) ==
                      gc->generations[i].threshold &&
                  list_is_consistent(map, &gc->generations[i].head);
    matches = matches && list_is_consistent(map, &gc->permanent_generation.head);
    python_api.PyErr_Clear();
    if (thresholds)
        python_api.Py_DecRef(thresholds);
    memory_map_free(map);
    if (matches)
        layout = LAYOUT_VERIFIED;
    extsan_log(
        1, "the collector's generations %s",
        matches
            ? "can be set aside"
            : "differ from this core's layout: the leak check sets the heap aside with gc.freeze");
    return matches;
}

/* Appends the list `from` to the list `to` and leaves `from` empty (CPython's gc_list_merge);
   each node's flag bits stay as they are. */
static void list_move_all(PyGC_Head *from, PyGC_Head *to)
{
    PyGC_Head *first = _PyGCHead_NEXT(from);
    if (first != from) {
        PyGC_Head *last = _PyGCHead_PREV(from), *to_last = _PyGCHead_PREV(to);
        _PyGCHead_SET_NEXT(to_last, first);
        _PyGCHead_SET_PREV(first, to_last);
        _PyGCHead_SET_NEXT(last, to);
        _PyGCHead_SET_PREV(to, last);
    }
    _PyGCHead_SET_NEXT(from, from);
    _PyGCHead_SET_PREV(from, from);
}

static Py_ssize_t list_length(PyGC_Head *head)
{
    Py_ssize_t length = 0;
    for (PyGC_Head *node = _PyGCHead_NEXT(head); node != head; node = _PyGCHead_NEXT(node))
        length++;
    return length;
}

bool gc_set_aside_heap(PyInterpreterState *interpreter)
{
    if (collector || froze || !interpreter)
        return false;
    struct _gc_runtime_state *gc = &interpreter->gc;
    if (layout_matches(gc)) {
        set_aside._gc_next = set_aside._gc_prev = (uintptr_t)&set_aside; /* empty */
        /* As gc.freeze() does: every generation in turn, their counts reset. */
        for (int i = 0; i < NUM_GENERATIONS; i++) {
            list_move_all(&gc->generations[i].head, &set_aside);
            gc->generations[i].count = 0;
        }
        frozen_before = list_length(&gc->permanent_generation.head);
        collector = gc;
        return true;
    }
    long frozen;
    froze = call_gc("get_freeze_count", &frozen) && frozen == 0 && call_gc("freeze", NULL);
    return froze;
}

void gc_put_heap_back(void)
{
    if (froze)
        call_gc("unfreeze", NULL);
    froze = false;
    if (!collector)
        return;
    /* Where a bare run's objects would be now: in the oldest generation after the full
       collections of the check, or frozen when the program called gc.freeze() meanwhile. */
    bool program_froze = list_length(&collector->permanent_generation.head) > frozen_before;
    list_move_all(&set_aside, program_froze ? &collector->permanent_generation.head
                                            : &collector->generations[NUM_GENERATIONS - 1].head);
    collector = NULL;
}

/* Appends the object of each node of `head`'s list to `objects`: false when one failed. */
static bool append_list(PyObject *objects, PyGC_Head *head)
{
    /* The object follows its collector header. Appending allocates no tracked object (only the
       list's item array), so no collection runs, and no list changes, during the walk. */
    for (PyGC_Head *node = _PyGCHead_NEXT(head); node != head; node = _PyGCHead_NEXT(node))
        if (python_api.PyList_Append(objects, (PyObject *)(node + 1)) != 0)
            return false;
    return true;
}

PyObject *gc_tracked_objects(void)
{
    PyObject *objects = python_call_module_function("gc", "get_objects");
    PyThreadState *thread = gil_attached_thread_state();
    if (!objects || !PyList_Check(objects) || !thread)
        return objects;
    struct _gc_runtime_state *gc = &thread->interp->gc;
    if (!layout_matches(gc))
        return objects;
    bool listed = append_list(objects, &gc->permanent_generation.head) &&
                  (collector != gc || append_list(objects, &set_aside));
    if (!listed) {
        python_api.Py_DecRef(objects);
        objects = NULL;
    }
    python_api.PyErr_Clear();
    return objects;
}
