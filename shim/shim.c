/*
 * The core's start-up and its wrappers. Each wrapper is thin: it hands the event to detector/
 * and calls the real function, which it always does, whatever the detector decides.
 */
#define _GNU_SOURCE
#include "activate.h"
#include "got_patch.h"
#include "hooks.h"

#include "../detector/threads/capsule_check.h"
#include "../detector/runtime/lifecycle.h"
#include "../detector/runtime/log.h"
#include "../detector/heap/registry.h"
#include "../detector/threads/signals.h"

#include <errno.h>

/*
 * The real functions, and a compile-time check that each hook's line in hooks.def matches the
 * declaration in the system's headers (never called; meson makes a mismatch an error).
 */
#define HOOK(where, ret, name, params)                                                             \
    ret(*real_##name) params;                                                                      \
    static inline void check_signature_of_##name(void)                                             \
    {                                                                                              \
        real_##name = name;                                                                        \
    }
#include "hooks.def"
#undef HOOK

const struct hook hooks[] = {
#define HOOK(where, ret, name, params) {#name, where, (void *)extsan_##name, (void **)&real_##name},
#include "hooks.def"
#undef HOOK
};
const unsigned hook_count = sizeof hooks / sizeof hooks[0];

__attribute__((constructor)) static void extsan_start(void)
{
    if (!lifecycle_start())
        return;
    for (unsigned i = 0; i < hook_count; i++) {
        *hooks[i].real = dlsym(RTLD_DEFAULT, hooks[i].name);
        if (!*hooks[i].real)
            extsan_log(1, "%s is not in this process; it is not intercepted", hooks[i].name);
    }
    capsule_check_install();
    registry_install(extsan_PyType_GenericAlloc);
    got_patch_loaded_objects();
    activate_after_start();
}

/* ---- capsule calls ------------------------------------------------------------------------- */

PyObject *extsan_PyCapsule_New(void *pointer, const char *name, PyCapsule_Destructor destructor)
{
    struct capsule_call call;
    capsule_call_begin(&call, "PyCapsule_New", NULL, name);
    PyObject *capsule = real_PyCapsule_New(pointer, name, destructor);
    capsule_call_end(&call);
    return capsule;
}

void *extsan_PyCapsule_GetPointer(PyObject *capsule, const char *name)
{
    struct capsule_call call;
    capsule_call_begin(&call, "PyCapsule_GetPointer", capsule, NULL);
    void *pointer = real_PyCapsule_GetPointer(capsule, name);
    capsule_call_end(&call);
    return pointer;
}

int extsan_PyCapsule_SetPointer(PyObject *capsule, void *pointer)
{
    struct capsule_call call;
    capsule_call_begin(&call, "PyCapsule_SetPointer", capsule, NULL);
    int status = real_PyCapsule_SetPointer(capsule, pointer);
    capsule_call_end(&call);
    return status;
}

const char *extsan_PyCapsule_GetName(PyObject *capsule)
{
    struct capsule_call call;
    capsule_call_begin(&call, "PyCapsule_GetName", capsule, NULL);
    const char *name = real_PyCapsule_GetName(capsule);
    capsule_call_end(&call);
    return name;
}

int extsan_PyCapsule_SetName(PyObject *capsule, const char *name)
{
    struct capsule_call call;
    capsule_call_begin(&call, "PyCapsule_SetName", capsule, NULL);
    int status = real_PyCapsule_SetName(capsule, name);
    capsule_call_end(&call);
    return status;
}

void *extsan_PyCapsule_GetContext(PyObject *capsule)
{
    struct capsule_call call;
    capsule_call_begin(&call, "PyCapsule_GetContext", capsule, NULL);
    void *context = real_PyCapsule_GetContext(capsule);
    capsule_call_end(&call);
    return context;
}

int extsan_PyCapsule_SetContext(PyObject *capsule, void *context)
{
    struct capsule_call call;
    capsule_call_begin(&call, "PyCapsule_SetContext", capsule, NULL);
    int status = real_PyCapsule_SetContext(capsule, context);
    capsule_call_end(&call);
    return status;
}

PyCapsule_Destructor extsan_PyCapsule_GetDestructor(PyObject *capsule)
{
    struct capsule_call call;
    capsule_call_begin(&call, "PyCapsule_GetDestructor", capsule, NULL);
    PyCapsule_Destructor destructor = real_PyCapsule_GetDestructor(capsule);
    capsule_call_end(&call);
    return destructor;
}

int extsan_PyCapsule_SetDestructor(PyObject *capsule, PyCapsule_Destructor destructor)
{
    struct capsule_call call;
    capsule_call_begin(&call, "PyCapsule_SetDestructor", capsule, NULL);
    int status = real_PyCapsule_SetDestructor(capsule, destructor);
    capsule_call_end(&call);
    return status;
}

int extsan_PyCapsule_IsValid(PyObject *capsule, const char *name)
{
    struct capsule_call call;
    capsule_call_begin(&call, "PyCapsule_IsValid", capsule, NULL);
    int valid = real_PyCapsule_IsValid(capsule, name);
    capsule_call_end(&call);
    return valid;
}

void *extsan_PyCapsule_Import(const char *name, int no_block)
{
    struct capsule_call call;
    capsule_call_begin(&call, "PyCapsule_Import", NULL, name);
    void *pointer = real_PyCapsule_Import(name, no_block);
    capsule_call_end(&call);
    return pointer;
}

/* ---- type creation -------------------------------------------------------------------------
 * The caller (the wrapper's return address) names the loaded object that creates the type.
 */

int extsan_PyType_Ready(PyTypeObject *type)
{
    int status = real_PyType_Ready(type);
    if (status == 0)
        registry_type_created(type, __builtin_return_address(0));
    return status;
}

PyObject *extsan_PyType_FromSpec(PyType_Spec *spec)
{
    PyObject *type = real_PyType_FromSpec(spec);
    registry_type_created((PyTypeObject *)type, __builtin_return_address(0));
    return type;
}

PyObject *extsan_PyType_FromSpecWithBases(PyType_Spec *spec, PyObject *bases)
{
    PyObject *type = real_PyType_FromSpecWithBases(spec, bases);
    registry_type_created((PyTypeObject *)type, __builtin_return_address(0));
    return type;
}

PyObject *extsan_PyType_FromModuleAndSpec(PyObject *module, PyType_Spec *spec, PyObject *bases)
{
    PyObject *type = real_PyType_FromModuleAndSpec(module, spec, bases);
    registry_type_created((PyTypeObject *)type, __builtin_return_address(0));
    return type;
}

#if PY_VERSION_HEX >= 0x030C0000
PyObject *extsan_PyType_FromMetaclass(PyTypeObject *metaclass, PyObject *module, PyType_Spec *spec,
                                      PyObject *bases)
{
    PyObject *type = real_PyType_FromMetaclass(metaclass, module, spec, bases);
    registry_type_created((PyTypeObject *)type, __builtin_return_address(0));
    return type;
}
#endif

/* ---- instance allocation -------------------------------------------------------------------
 * Each wrapper passes the bytes the real function allocated (registry.h says why PyObject_Init
 * and PyObject_GC_Track pass 0) and its return address, the cheap half of the site's identity.
 */

PyObject *extsan_PyType_GenericAlloc(PyTypeObject *type, Py_ssize_t items)
{
    PyObject *object = real_PyType_GenericAlloc(type, items);
    registry_instance_allocated(object, registry_allocation_size(type, items + 1),
                                __builtin_return_address(0), REGISTER_ALLOCATION);
    return object;
}

PyObject *extsan__PyObject_New(PyTypeObject *type)
{
    PyObject *object = real__PyObject_New(type);
    registry_instance_allocated(object, registry_allocation_size(type, -1),
                                __builtin_return_address(0), REGISTER_ALLOCATION);
    return object;
}

PyVarObject *extsan__PyObject_NewVar(PyTypeObject *type, Py_ssize_t items)
{
    PyVarObject *object = real__PyObject_NewVar(type, items);
    registry_instance_allocated((PyObject *)object, registry_allocation_size(type, items),
                                __builtin_return_address(0), REGISTER_ALLOCATION);
    return object;
}

PyObject *extsan_PyObject_Init(PyObject *object, PyTypeObject *type)
{
    PyObject *initialized = real_PyObject_Init(object, type);
    registry_instance_allocated(initialized, 0, __builtin_return_address(0), REGISTER_ALLOCATION);
    return initialized;
}

PyObject *extsan__PyObject_GC_New(PyTypeObject *type)
{
    PyObject *object = real__PyObject_GC_New(type);
    registry_instance_allocated(object, registry_allocation_size(type, -1),
                                __builtin_return_address(0), REGISTER_ALLOCATION);
    return object;
}

PyVarObject *extsan__PyObject_GC_NewVar(PyTypeObject *type, Py_ssize_t items)
{
    PyVarObject *object = real__PyObject_GC_NewVar(type, items);
    registry_instance_allocated((PyObject *)object, registry_allocation_size(type, items),
                                __builtin_return_address(0), REGISTER_ALLOCATION);
    return object;
}

void extsan_PyObject_GC_Track(void *object)
{
    real_PyObject_GC_Track(object);
    registry_instance_allocated(object, 0, __builtin_return_address(0), REGISTER_IF_ABSENT);
}

/* ---- the runtime's own calls --------------------------------------------------------------- */

void *extsan_dlopen(const char *file, int mode)
{
    void *handle = real_dlopen(file, mode);
    if (handle) {
        int saved_errno = errno;
        got_patch_loaded_objects();
        lifecycle_object_loaded();
        errno = saved_errno;
    }
    return handle;
}

/*
 * dlsym: objects loaded since the last patching are patched first, then the real dlsym runs as
 * if called directly: the trampoline jumps to it with the caller's arguments and return address,
 * which dlsym reads to resolve RTLD_NEXT from the caller's place.
 */
void extsan_before_dlsym(void);
void extsan_before_dlsym(void)
{
    int saved_errno = errno;
    if (got_patch_objects_loaded_since())
        lifecycle_object_loaded();
    errno = saved_errno;
}

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl extsan_dlsym\n"
        ".hidden extsan_dlsym\n"
        ".type extsan_dlsym, @function\n"
        "extsan_dlsym:\n"
        "    .cfi_startproc\n"
        "    push %rdi\n"
        "    .cfi_adjust_cfa_offset 8\n"
        "    push %rsi\n"
        "    .cfi_adjust_cfa_offset 8\n"
        "    sub $8, %rsp\n" /* the call needs a 16-byte aligned stack */
        "    .cfi_adjust_cfa_offset 8\n"
        "    call extsan_before_dlsym\n"
        "    add $8, %rsp\n"
        "    .cfi_adjust_cfa_offset -8\n"
        "    pop %rsi\n"
        "    .cfi_adjust_cfa_offset -8\n"
        "    pop %rdi\n"
        "    .cfi_adjust_cfa_offset -8\n"
        "    jmp *real_dlsym(%rip)\n"
        "    .cfi_endproc\n"
        ".size extsan_dlsym, .-extsan_dlsym\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl extsan_dlsym\n"
        ".hidden extsan_dlsym\n"
        ".type extsan_dlsym, %function\n"
        "extsan_dlsym:\n"
        "    stp x29, x30, [sp, #-32]!\n"
        "    mov x29, sp\n"
        "    stp x0, x1, [sp, #16]\n"
        "    bl extsan_before_dlsym\n"
        "    ldp x0, x1, [sp, #16]\n"
        "    ldp x29, x30, [sp], #32\n"
        "    adrp x16, real_dlsym\n"
        "    ldr x16, [x16, :lo12:real_dlsym]\n"
        "    br x16\n"
        ".size extsan_dlsym, .-extsan_dlsym\n");
#else
#error "extsan's dlsym trampoline knows x86_64 and aarch64 only"
#endif

int extsan_sigaction(int signal, const struct sigaction *action, struct sigaction *old)
{
    return signals_sigaction(signal, action, old);
}

void extsan__exit(int status)
{
    real__exit(lifecycle_immediate_exit(status));
    __builtin_unreachable();
}
