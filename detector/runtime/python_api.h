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

/*
 * The C-API functions extsan calls with the GIL held (the exit analysis, the registry), one line
 * each: X(return type, name, (parameters)). They become members of struct python_api with the
 * function's own name, looked up like the rest. None may be a function-like macro in any
 * supported version (PyCFunction_NewEx is one: use PyCMethod_New).
 */
#define PYTHON_API_CALLS(X)                                                                        \
    X(Py_ssize_t, PyGC_Collect, (void))                                                            \
    X(PyObject *, PyImport_ImportModule, (const char *name))                                       \
    X(PyObject *, PyObject_GetAttrString, (PyObject * object, const char *name))                   \
    X(PyObject *, PyObject_CallFunctionObjArgs, (PyObject * callable, ...))                        \
    X(PyObject *, PyCMethod_New,                                                                   \
      (PyMethodDef * method, PyObject * self, PyObject * module, PyTypeObject * cls))              \
    X(const char *, PyUnicode_AsUTF8, (PyObject * unicode))                                        \
    X(PyObject *, PyErr_Occurred, (void))                                                          \
    X(void, PyErr_Clear, (void))                                                                   \
    X(void, PyErr_Fetch, (PyObject * *type, PyObject * *value, PyObject * *traceback))             \
    X(void, PyErr_Restore, (PyObject * type, PyObject * value, PyObject * traceback))              \
    X(void, Py_DecRef, (PyObject * object))                                                        \
    X(void, Py_IncRef, (PyObject * object))                                                        \
    X(int, PyDict_Next,                                                                            \
      (PyObject * dict, Py_ssize_t * position, PyObject * *key, PyObject * *value))                \
    X(PyObject *, PyObject_CallMethod,                                                             \
      (PyObject * object, const char *name, const char *format, ...))                              \
    X(PyObject *, PySys_GetObject, (const char *name))                                             \
    X(int, PyCode_Addr2Line, (PyCodeObject * code, int byte_offset))                               \
    X(int, PyFrame_GetLineNumber, (PyFrameObject * frame))                                         \
    X(PyInterpreterState *, PyInterpreterState_Main, (void))                                       \
    X(PyThreadState *, PyThreadState_New, (PyInterpreterState * interpreter))                      \
    X(void, PyEval_RestoreThread, (PyThreadState * thread))                                        \
    X(void, PyThreadState_Clear, (PyThreadState * thread))                                         \
    X(void, PyThreadState_DeleteCurrent, (void))                                                   \
    X(void, PyObject_GC_Del, (void *memory))                                                       \
    X(int, PyObject_GC_IsTracked, (PyObject * object))                                             \
    X(void, PyObject_Free, (void *memory))                                                         \
    X(void, PyMem_GetAllocator, (PyMemAllocatorDomain domain, PyMemAllocatorEx * allocator))       \
    X(void, PyMem_SetAllocator, (PyMemAllocatorDomain domain, PyMemAllocatorEx * allocator))       \
    X(long, PyLong_AsLong, (PyObject * object))                                                    \
    X(unsigned long, PyLong_AsUnsignedLong, (PyObject * object))                                   \
    X(unsigned int, PyType_ClearCache, (void))                                                     \
    X(PyThreadState *, PyInterpreterState_ThreadHead, (PyInterpreterState * interpreter))          \
    X(PyThreadState *, PyThreadState_Next, (PyThreadState * thread))                               \
    X(int, PyList_Append, (PyObject * list, PyObject * item))

struct python_api {
    const char *version; /* Py_GetVersion(), e.g. "3.12.1 (main, ...)" */
    int (*is_initialized)(void);
    int (*is_finalizing)(void); /* _Py_IsFinalizing before 3.13, Py_IsFinalizing since */
    /* The thread state attached to this thread (3.12+), or the GIL holder's (3.9-3.11). */
    PyThreadState *(*unchecked_thread_state)(void);
    PyThreadState *(*gilstate_this_thread)(void); /* PyGILState_GetThisThreadState */
    /* The thread-local storage of the loaded object defining the C API: its module id for
       __tls_get_addr (0: it has none) and its size in bytes. */
    size_t runtime_tls_module, runtime_tls_size;
    void *runtime; /* _PyRuntime, when exported (3.9-3.11 read its GIL holder: gil.c) */
    PyGILState_STATE (*gil_ensure)(void);
    void (*gil_release)(PyGILState_STATE);
    PyTypeObject *capsule_type;
    /* Objects the exit analysis names or returns. */
    PyTypeObject *function_type, *cell_type, *method_type, *frame_type;
    PyObject *none;
    /* What the type and instance registry compares slots and walks the type tree with. */
    PyTypeObject *base_object_type, *type_type, *code_type;
    allocfunc generic_alloc; /* PyType_GenericAlloc, the runtime's own */
#if PY_VERSION_HEX >= 0x030D0000
    /* The reference tracer (3.13+), told of each object the runtime makes; NULL if absent. */
    int (*ref_tracer_set)(PyRefTracer tracer, void *data);
    PyRefTracer (*ref_tracer_get)(void **data);
#endif
#define DECLARE_CALL(ret, name, params) ret(*name) params;
    PYTHON_API_CALLS(DECLARE_CALL)
#undef DECLARE_CALL
};

extern struct python_api python_api;

/* Immortal objects (3.12+) have no meaningful refcount: no analysis counts their references. */
static inline bool object_is_immortal(PyObject *object)
{
#if PY_VERSION_HEX >= 0x030C0000
    return _Py_IsImmortal(object);
#else
    (void)object;
    return false;
#endif
}

/*
 * The dict the runtime keeps before `object` (a managed dict, 3.11+: the third word before it,
 * where on 3.12 a set low bit tags inline values instead), or NULL. From 3.13 the object's
 * traverse does not visit this dict while its inline values stay valid, which they do when the
 * dict is made from them (`obj.__dict__`): the reference is one no traverse shows.
 */
static inline PyObject *object_managed_dict(PyObject *object)
{
#if PY_VERSION_HEX >= 0x030B0000
    if (Py_TYPE(object)->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        uintptr_t word = ((const uintptr_t *)object)[-3];
        return word & 1 ? NULL : (PyObject *)word;
    }
#else
    (void)object;
#endif
    return NULL;
}

/*
 * Looks the API up in the process. Returns false, with a reason, when there is no Python here or
 * it is not the version this core was built for.
 */
bool python_api_init(const char **why_not);

/* True when `object` lies in the loaded object that defines the C API (exe or libpython). */
bool address_in_python_runtime(const void *address);

/* module.function() with the GIL held: a new reference, or NULL (its error cleared). */
PyObject *python_call_module_function(const char *module, const char *function);

#endif
