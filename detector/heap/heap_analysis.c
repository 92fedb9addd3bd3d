#define _GNU_SOURCE
#include "heap_analysis.h"

#include "findings.h"
#include "gc_generations.h"
#include "heap_blocks.h"
#include "heap_graph.h"
#include "gil.h"
#include "log.h"
#include "memory_map.h"
#include "options.h"
#include "report.h"
#include "signals.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

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

/* What the passes read of memory: the mappings, the heap's extents, the live types. */
static bool load_memory(struct graph *graph)
{
    heap_blocks_forget();
    graph->memory = memory_map_load();
    registry_walk_types(&graph->live_types);
    if (!graph->memory)
        graph->failure = "could not start (no memory map)";
    return graph->memory != NULL;
}

/* Passes enumerate to reach; `tracked_objects` receives every tracked object (frozen ones too),
   a list that holds every node alive until it is released. */
static void build_graph(struct graph *graph, PyObject **tracked_objects)
{
    if (enter_pass(graph, "enumerate")) {
        plan_huge_pages();
        *tracked_objects = gc_tracked_objects();
        if (!*tracked_objects || !PyList_Check(*tracked_objects))
            graph->failure = "could not start (no object list)";
        else if (!enumerate_nodes(graph, *tracked_objects))
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
}

/*
 * Whether a hidden edge leaves a node that nothing reached. It is a leak, or garbage the
 * collector has not freed yet: a holder in a collectable cycle of visible references, whose
 * hidden referent it alone keeps. Only a collection tells them apart.
 */
static bool hidden_edge_from_unreached(const struct graph *graph)
{
    for (size_t e = graph->visible_edge_count; e < graph->edge_count; e++)
        if (!graph->nodes[graph->edges[e].from].reached)
            return true;
    return false;
}

static bool stopped(const struct graph *graph)
{
    return graph->failure || graph->interrupted || graph->out_of_memory;
}

/*
 * The passes in order; each stops early when interrupted or out of memory. The full collection,
 * a collector's pass over the whole heap, runs only when the graph holds what it could explain
 * away: a hidden edge from an unreached node. Then the graph is built again on the collected
 * heap. Otherwise garbage left in the heap changes nothing the report says: it is never reached,
 * and a hidden edge of its own would have called for the collection.
 */
static void run_passes(struct graph *graph, const struct timespec *start)
{
    double collect_seconds = 0;
    if (enter_pass(graph, "probe") && load_memory(graph) && !probe_instances(graph)) {
        extsan_log(1, "heap analysis: no instance made by this process holds a pointer its "
                      "traverse does not visit");
        return;
    }
    PyObject *tracked_objects = NULL;
    if (!stopped(graph))
        build_graph(graph, &tracked_objects);
    if (!stopped(graph) && hidden_edge_from_unreached(graph) && enter_pass(graph, "collect")) {
        python_api.Py_DecRef(tracked_objects); /* it would keep the garbage alive */
        tracked_objects = NULL;
        graph_free(graph);
        *graph = (struct graph){.pass = graph->pass, .pass_start = graph->pass_start};
        struct timespec collect_start;
        clock_gettime(CLOCK_MONOTONIC, &collect_start);
        python_api.PyGC_Collect();
        collect_seconds = seconds_since(&collect_start);
        if (load_memory(graph))
            build_graph(graph, &tracked_objects);
    }
    if (!stopped(graph) && enter_pass(graph, "report")) {
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
    /* Only the extension instances this process registered are scanned, so only they can hold
       a hidden reference or miss their type's visit: a process that made none has nothing to
       find, and pays for no collection, enumeration or walk. A forked child (a multiprocessing
       worker) scans only the instances it made: its inherited ones are its parent's to report,
       at the parent's exit. What that leaves out, a hidden reference stored only in the child's
       copy of an inherited instance, is one the child wrote into memory it did not allocate. */
    if (registry_instance_count() == 0 || registry_registrations() == 0) {
        set_state(false, "done");
        extsan_log(1, "heap analysis: no extension instance made by this process to scan");
        return;
    }
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
