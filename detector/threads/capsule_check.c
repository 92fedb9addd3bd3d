#define _GNU_SOURCE
#include "capsule_check.h"

#include "allocation_sites.h"
#include "context.h"
#include "findings.h"
#include "log.h"
#include "options.h"
#include "report.h"

#include <unistd.h>

/* The layout of a capsule object (Objects/capsule.c), the same in 3.9 to 3.13. */
struct capsule_layout {
    PyObject_HEAD void *pointer;
    const char *name;
    void *context;
    PyCapsule_Destructor destructor;
};

static destructor real_capsule_dealloc;

/* Set while this thread is inside extsan's slow path, so calls extsan itself causes pass. */
static _Thread_local bool in_slow_path;

static const char *capsule_name(PyObject *capsule, const char *name_argument)
{
    if (!capsule)
        return name_argument;
    if (Py_TYPE(capsule) != python_api.capsule_type)
        return NULL;
    return ((struct capsule_layout *)capsule)->name;
}

static void halt(void)
{
    extsan_log(0, "halting on the first finding (option halt_on_error)");
    _exit(extsan_options.halt_exitcode); /* extsan's own calls are never patched: this is libc's */
}

void capsule_call_without_gil(struct capsule_call *call, const char *api, PyObject *capsule,
                              const char *name)
{
    if (in_slow_path)
        return;
    /* Before start-up and after shutdown there is no GIL to hold: nothing to judge. */
    if (!python_api.is_initialized())
        return;
    in_slow_path = true;
    /* Described before the GIL is borrowed: borrowing gives a bare thread a thread state. */
    struct thread_description thread;
    thread_describe(&thread);
    /* Then take the GIL: the capsule's fields are safe to read for the report. */
    bool protected = extsan_options.protect && gil_borrow(&call->borrowed);
    bool first;
    struct finding *finding = findings_record_call(FINDING_CAPSULE_WITHOUT_GIL, api,
                                                   capsule_name(capsule, name), &thread, &first);
    /* With the GIL borrowed the thread's own frames can be read: the Python code that called
       into the extension (none on a thread that never ran Python). First occurrence only. */
    if (protected && first && finding) {
        struct site_key key = {.context = context_current()};
        finding->python_site = site_create(&key, gil_attached_thread_state());
    }
    extsan_log(2, "%s without the GIL on thread %d%s", api, (int)gettid(),
               protected ? "; the GIL is held for the call" : "");
    /* A suppressed finding is no reason to stop. */
    if (extsan_options.halt_on_error && !(finding && report_is_suppressed(finding))) {
        report_now();
        halt();
    }
    /* Unprotected, the call may crash the process (3.12+): the finding must be out first. */
    if (!protected && first && finding)
        report_now();
    else if (first && finding)
        report_snapshot();
    in_slow_path = false;
}

static void extsan_capsule_dealloc(PyObject *capsule)
{
    struct capsule_call call;
    capsule_call_begin(&call, CAPSULE_DESTRUCTION, capsule, NULL);
    real_capsule_dealloc(capsule);
    capsule_call_end(&call);
}

void capsule_check_install(void)
{
    PyTypeObject *type = python_api.capsule_type;
    if (type->tp_dealloc == extsan_capsule_dealloc)
        return;
    real_capsule_dealloc = type->tp_dealloc;
    type->tp_dealloc = extsan_capsule_dealloc;
}
