/*
 * The CPython C API as extsan reaches it: every function through dlsym, never by linking, so
 * the library works in a statically linked interpreter (which exports the API from the
 * executable) as in a shared one, and never loads a second runtime. Each core is compiled
 * against the headers of one minor version; python_api_init() checks the running one matches.
 */
#ifndef EXTSAN_PYTHON_API_H
#define EXTSAN_PYTHON_API_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>

struct python_api {
    const char *version; /* Py_GetVersion(), e.g. "3.12.1 (main, ...)" */
    int (*is_initialized)(void);
    int (*is_finalizing)(void); /* _Py_IsFinalizing before 3.13, Py_IsFinalizing since */
    /* The thread state attached to this thread (3.12+), or the GIL holder's (3.9-3.11). */
    PyThreadState *(*unchecked_thread_state)(void);
    PyThreadState *(*gilstate_this_thread)(void); /* PyGILState_GetThisThreadState */
    unsigned long (*thread_ident)(void);          /* PyThread_get_thread_ident */
    PyGILState_STATE (*gil_ensure)(void);
    void (*gil_release)(PyGILState_STATE);
    PyTypeObject *capsule_type;
};

extern struct python_api python_api;

/*
 * Looks the API up in the process. Returns false, with a reason, when there is no Python here or
 * it is not the version this core was built for.
 */
bool python_api_init(const char **why_not);

/* True when `object` lies in the loaded object that defines the C API (exe or libpython). */
bool address_in_python_runtime(const void *address);

#endif
