/* The call-without-gil check: the exemptions and the slow path (call_check.h). */
#define _GNU_SOURCE
#include "call_check.h"

#include "allocation_sites.h"
#include "findings.h"
#include "gil.h"
#include "log.h"
#include "options.h"
#include "report.h"

#include <string.h>
#include <unistd.h>

/*
 * The functions the C-API documentation of 3.9-3.13 (Doc/c-api, and the headers for the private
 * ones the standard library's own extensions call) lets a thread call without an attached thread
 * state, by name, prefix ("*" at the end) or suffix ("*" first), each with what the documentation
 * says. Everything else an extension imports is checked.
 */
static const struct exemption {
    const char *name;
    const char *documented;
} exemptions[] = {
    /* init.rst, "Non-Python created threads" and the GIL state API. */
    {"PyGILState_Ensure", "init.rst: makes the calling thread ready to call the C API whatever "
                          "the state of the GIL; it is how a thread without one gets one"},
    {"PyGILState_Check", "init.rst: may be called from any thread at any time"},
    {"PyGILState_GetThisThreadState", "init.rst: the thread's state for the GILState API, NULL "
                                      "when that API was not used on the thread"},
    {"PyEval_RestoreThread", "init.rst: acquires the GIL and attaches the thread state given, "
                             "the end of a Py_BEGIN_ALLOW_THREADS block"},
    {"PyEval_AcquireThread", "init.rst: acquires the GIL and attaches the thread state given"},
    {"PyEval_AcquireLock", "init.rst (3.9-3.12, deprecated): acquires the GIL"},
    {"PyEval_ThreadsInitialized", "init.rst (3.9-3.11): may be called without holding the GIL"},
    {"PyEval_InitThreads", "init.rst (3.9-3.11): initialises the GIL; a no-op since 3.9"},
    {"PyThreadState_New", "init.rst: the GIL need not be held (held only to serialise calls)"},
    {"PyThreadState_Swap", "init.rst, sub-interpreters: called right after Py_EndInterpreter, "
                           "which leaves no current thread state, to attach another"},
    {"Py_NewInterpreter*", "init.rst, sub-interpreters: makes a thread state and attaches it; "
                           "the runtime's own tests call it after PyThreadState_Swap(NULL), the "
                           "GIL held but no thread state current"},
    {"PyThreadState_Delete", "init.rst: the GIL need not be held"},
    {"_PyThreadState_UncheckedGet", "pystate.h (3.9-3.12): PyThreadState_Get that returns NULL "
                                    "rather than failing when no thread state is attached"},
    {"PyThreadState_GetUnchecked", "init.rst (3.13): PyThreadState_Get without the fatal error "
                                   "when no thread state is attached; it exists to ask"},
    {"PyInterpreterState_Main", "init.rst: the main interpreter's state"},
    {"Py_IsInitialized", "init.rst: may be called before initialisation and after finalisation"},
    {"Py_IsFinalizing", "init.rst (3.13): whether the main interpreter is shutting down"},
    {"_Py_IsFinalizing", "pylifecycle.h (3.9-3.12): the same as Py_IsFinalizing"},
    {"Py_AddPendingCall", "init.rst: needs neither a current thread state nor the GIL"},
    {"PyErr_SetInterrupt", "exceptions.rst (3.10+): async-signal-safe; callable without the GIL "
                           "and from a C signal handler"},
    {"PyErr_SetInterruptEx", "exceptions.rst: async-signal-safe; callable without the GIL and "
                             "from a C signal handler"},
    /* The fatal-error path: it stops the process whatever the thread holds. */
    {"Py_FatalError", "sys.rst: prints the message and aborts the process"},
    {"_Py_FatalErrorFunc", "pyerrors.h: what the Py_FatalError macro calls (3.9+)"},
    {"_Py_FatalErrorFormat", "pyerrors.h: Py_FatalError with a format"},
    /* The runtime's own async-signal-safe helpers, for a forked child before it execs (what
       _posixsubprocess's child_exec calls) and for signal handlers: no thread state there. */
    {"_Py_RestoreSignals", "pylifecycle.h: async-signal-safe, for a child after fork()"},
    {"_Py_closerange", "fileutils.c: async-signal-safe"},
    {"*_noraise", "fileutils.h: the variants that set no exception, for code without a thread "
                  "state (signal handlers, a child after fork)"},
    {"*_async_safe", "fileutils.h: async-signal-safe by name"},
    /* memory.rst, "Raw Memory Interface". */
    {"PyMem_Raw*", "memory.rst: thread-safe; the GIL does not need to be held"},
    /* The runtime's portable threads layer: locks, thread ids, thread-specific storage. */
    {"PyThread_*", "init.rst (Thread Specific Storage API) and pythread.h: below the thread "
                   "states, used to implement them"},
    {"PyMutex_*", "synchronization (3.13): a lock usable with or without an attached state"},
    /* init.rst, "Before Python Initialization": safe to call before the interpreter exists,
       so with no thread state at all. */
    {"Py_Initialize*", "init.rst: initialises the interpreter"},
    {"Py_PreInitialize*", "init_config.rst: before initialisation"},
    {"PyConfig_*", "init_config.rst: configuration before initialisation"},
    {"PyPreConfig_*", "init_config.rst: configuration before initialisation"},
    {"PyStatus_*", "init_config.rst: configuration before initialisation"},
    {"PyWideStringList_*", "init_config.rst: configuration before initialisation"},
    {"Py_SetPath", "init.rst: safe to call before Python initialization"},
    {"Py_SetProgramName", "init.rst: safe to call before Python initialization"},
    {"Py_SetPythonHome", "init.rst: safe to call before Python initialization"},
    {"Py_SetStandardStreamEncoding", "init.rst: safe to call before Python initialization"},
    {"Py_DecodeLocale", "sys.rst and init.rst: safe to call before Python initialization"},
    {"Py_EncodeLocale", "sys.rst: safe to call before Python initialization"},
    {"Py_GetBuildInfo", "init.rst: safe to call before Python initialization"},
    {"Py_GetCompiler", "init.rst: safe to call before Python initialization"},
    {"Py_GetCopyright", "init.rst: safe to call before Python initialization"},
    {"Py_GetPlatform", "init.rst: safe to call before Python initialization"},
    {"Py_GetVersion", "init.rst: safe to call before Python initialization"},
    {"PyMem_GetAllocator", "init.rst and memory.rst: safe to call before Python initialization"},
    {"PyMem_SetAllocator", "init.rst and memory.rst: safe to call before Python initialization"},
    {"PyMem_SetupDebugHooks", "init.rst: safe to call before Python initialization"},
    {"PyObject_GetArenaAllocator", "init.rst: safe to call before Python initialization"},
    {"PyObject_SetArenaAllocator", "init.rst: safe to call before Python initialization"},
    {"PyImport_AppendInittab", "init.rst: safe to call before Python initialization"},
    {"PyImport_ExtendInittab", "init.rst: safe to call before Python initialization"},
    {"PySys_AddWarnOption", "init.rst: safe to call before Python initialization"},
    {"PySys_AddXOption", "init.rst: safe to call before Python initialization"},
    {"PySys_ResetWarnOptions", "init.rst: safe to call before Python initialization"},
};

bool call_check_api_name(const char *name)
{
    return !strncmp(name, "Py", 2) || !strncmp(name, "_Py", 3);
}

bool call_check_exempt(const char *name)
{
    if (!call_check_api_name(name))
        return true;
    for (size_t i = 0; i < sizeof exemptions / sizeof exemptions[0]; i++) {
        const char *pattern = exemptions[i].name;
        size_t length = strlen(pattern), name_length = strlen(name);
        bool matches = pattern[0] == '*'
                           ? name_length >= length - 1 &&
                                 !strcmp(name + name_length - (length - 1), pattern + 1)
                       : pattern[length - 1] == '*' ? !strncmp(name, pattern, length - 1)
                                                    : !strcmp(name, pattern);
        if (matches)
            return true;
    }
    return false;
}

/* Set while this thread is in the slow path: what extsan's own work calls passes. */
static _Thread_local bool in_slow_path;

/*
 * A capsule freed without the GIL is capsule-without-gil's ("capsule destruction", through the
 * capsule type's tp_dealloc): _Py_Dealloc of one is not reported twice. The object is alive
 * until its tp_dealloc runs, so its type can be read.
 */
static bool is_capsule_dealloc(const char *api, uintptr_t first_argument)
{
    return !strcmp(api, "_Py_Dealloc") && first_argument &&
           Py_TYPE((PyObject *)first_argument) == python_api.capsule_type;
}

void call_check_without_gil(const char *api, uintptr_t first_argument)
{
    /* Before start-up and after shutdown there is no thread state to have: nothing to judge. */
    if (in_slow_path || !extsan_options.check_calls || !python_api.is_initialized() ||
        is_capsule_dealloc(api, first_argument))
        return;
    in_slow_path = true;
    struct thread_description thread;
    thread_describe(&thread);
    bool first;
    struct finding *finding =
        findings_record_call(FINDING_CALL_WITHOUT_GIL, api, NULL, &thread, &first);
    /* The Python code that called into the extension: the thread's own frames, which cannot
       change while it is here, read without taking the GIL (waiting for it could deadlock a
       program whose thread holds a lock the GIL's holder waits for). First occurrence only. */
    PyThreadState *own = python_api.gilstate_this_thread();
    if (first && finding && own)
        finding->python_site = site_create_detached(own);
    extsan_log(2, "%s without the GIL on thread %d", api, (int)gettid());
    if (extsan_options.halt_on_error && !(finding && report_is_suppressed(finding))) {
        report_now();
        extsan_log(0, "halting on the first finding (option halt_on_error)");
        _exit(extsan_options.halt_exitcode);
    }
    /* The call may crash the process (3.12+): the finding must be out first. */
    if (first && finding)
        report_now();
    in_slow_path = false;
}
