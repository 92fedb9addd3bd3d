#define _GNU_SOURCE
#include "python_api.h"
#include "loaded_objects.h"

#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <string.h>

struct python_api python_api;

static void *lookup(const char *name)
{
    return dlsym(RTLD_DEFAULT, name);
}

/* dl_iterate_phdr callback: the TLS of the object holding python_api.is_initialized. */
static int find_runtime_tls(struct dl_phdr_info *info, size_t size, void *context)
{
    (void)size;
    (void)context;
    uintptr_t address = (uintptr_t)python_api.is_initialized;
    bool holds_runtime = false;
    const ElfW(Phdr) *tls = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *segment = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + segment->p_vaddr;
        if (segment->p_type == PT_LOAD && address >= start && address < start + segment->p_memsz)
            holds_runtime = true;
        if (segment->p_type == PT_TLS)
            tls = segment;
    }
    if (!holds_runtime)
        return 0;
    python_api.runtime_tls_module = tls ? info->dlpi_tls_modid : 0;
    python_api.runtime_tls_size = tls ? tls->p_memsz : 0;
    return 1;
}

bool python_api_init(const char **why_not)
{
    const char *(*get_version)(void) = (const char *(*)(void))lookup("Py_GetVersion");
    if (!get_version) {
        *why_not = "this process has no Python runtime";
        return false;
    }
    python_api.version = get_version();
    char expected[16];
    snprintf(expected, sizeof expected, "%d.%d.", PY_MAJOR_VERSION, PY_MINOR_VERSION);
    if (strncmp(python_api.version, expected, strlen(expected)) != 0) {
        *why_not = "this core was built for another Python version";
        return false;
    }
    python_api.is_initialized = (int (*)(void))lookup("Py_IsInitialized");
#if PY_VERSION_HEX >= 0x030D0000
    python_api.is_finalizing = (int (*)(void))lookup("Py_IsFinalizing");
    python_api.unchecked_thread_state =
        (PyThreadState * (*)(void)) lookup("PyThreadState_GetUnchecked");
    python_api.ref_tracer_set = (int (*)(PyRefTracer, void *))lookup("PyRefTracer_SetTracer");
    python_api.ref_tracer_get = (PyRefTracer(*)(void **))lookup("PyRefTracer_GetTracer");
#else
    python_api.is_finalizing = (int (*)(void))lookup("_Py_IsFinalizing");
    python_api.unchecked_thread_state =
        (PyThreadState * (*)(void)) lookup("_PyThreadState_UncheckedGet");
#endif
    python_api.gilstate_this_thread =
        (PyThreadState * (*)(void)) lookup("PyGILState_GetThisThreadState");
    python_api.gil_ensure = (PyGILState_STATE(*)(void))lookup("PyGILState_Ensure");
    python_api.gil_release = (void (*)(PyGILState_STATE))lookup("PyGILState_Release");
    python_api.capsule_type = (PyTypeObject *)lookup("PyCapsule_Type");
    python_api.function_type = (PyTypeObject *)lookup("PyFunction_Type");
    python_api.cell_type = (PyTypeObject *)lookup("PyCell_Type");
    python_api.method_type = (PyTypeObject *)lookup("PyMethod_Type");
    python_api.frame_type = (PyTypeObject *)lookup("PyFrame_Type");
    python_api.none = (PyObject *)lookup("_Py_NoneStruct");
    python_api.base_object_type = (PyTypeObject *)lookup("PyBaseObject_Type");
    python_api.type_type = (PyTypeObject *)lookup("PyType_Type");
    python_api.code_type = (PyTypeObject *)lookup("PyCode_Type");
    python_api.generic_alloc = (allocfunc)lookup("PyType_GenericAlloc");
    bool calls_found = python_api.function_type && python_api.cell_type && python_api.method_type &&
                       python_api.frame_type && python_api.none && python_api.base_object_type &&
                       python_api.type_type && python_api.code_type && python_api.generic_alloc;
#define LOOKUP_CALL(ret, name, params)                                                             \
    calls_found &= (python_api.name = (ret(*) params)lookup(#name)) != NULL;
    PYTHON_API_CALLS(LOOKUP_CALL)
#undef LOOKUP_CALL
    if (!python_api.is_initialized || !python_api.is_finalizing ||
        !python_api.unchecked_thread_state || !python_api.gilstate_this_thread ||
        !python_api.gil_ensure || !python_api.gil_release || !python_api.capsule_type ||
        !calls_found) {
        *why_not = "a C-API function extsan needs is not exported by this Python";
        return false;
    }
    dl_iterate_phdr(find_runtime_tls, NULL);
    python_api.runtime = lookup("_PyRuntime");
    return true;
}

bool address_in_python_runtime(const void *address)
{
    const void *runtime;
    memcpy(&runtime, &python_api.is_initialized, sizeof runtime); /* a function's address */
    return loaded_objects_same(address, runtime);
}

PyObject *python_call_module_function(const char *module, const char *function)
{
    PyObject *imported = python_api.PyImport_ImportModule(module);
    PyObject *result = imported ? python_api.PyObject_CallMethod(imported, function, NULL) : NULL;
    if (imported)
        python_api.Py_DecRef(imported);
    python_api.PyErr_Clear();
    return result;
}
