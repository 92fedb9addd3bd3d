#define _GNU_SOURCE
#include "gil.h"

#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#if PY_VERSION_HEX < 0x030C0000
/* The internal header only for offsetof; after Python.h, as python_stack.c explains. */
#undef _PyGC_FINALIZED /* 3.11's pycore_gc.h defines it again */
#define Py_BUILD_CORE 1
#include <internal/pycore_runtime.h>
#undef Py_BUILD_CORE

/*
 * Reading the GIL holder without a call into the runtime (3.9-3.11).
 *
 * The runtime keeps it in _PyRuntime.gilstate.tstate_current, at an offset this core takes from
 * the internal header of its minor version. The field is trusted only once it held the same
 * thread state as the getter (a patch release with another layout fails that check and keeps
 * the getter). The thread id to compare with is cached per thread.
 */

/* Set once by whichever thread verifies it first; the field it points to never moves. */
PyThreadState *_Atomic *_Atomic gil_holder_variable;
EXTSAN_THREAD_LOCAL unsigned long gil_this_thread;
static atomic_bool holder_unusable;

PyThreadState *gil_locate_thread_state(void)
{
    if (!gil_this_thread)
        gil_this_thread = (unsigned long)pthread_self();
    PyThreadState *current = python_api.unchecked_thread_state();
    if (!atomic_load_explicit(&gil_holder_variable, memory_order_relaxed) && current &&
        python_api.runtime && !atomic_load_explicit(&holder_unusable, memory_order_relaxed)) {
        PyThreadState *_Atomic *field =
            (PyThreadState * _Atomic *)((char *)python_api.runtime +
                                        offsetof(_PyRuntimeState, gilstate.tstate_current));
        if (atomic_load_explicit(field, memory_order_relaxed) == current) {
            atomic_store_explicit(&gil_holder_variable, field, memory_order_relaxed);
            extsan_log(2, "reading the GIL holder at _PyRuntime+%zu",
                       offsetof(_PyRuntimeState, gilstate.tstate_current));
        } else {
            atomic_store_explicit(&holder_unusable, true, memory_order_relaxed);
            extsan_log(1, "the runtime's GIL holder field did not match its getter; using the "
                          "getter");
        }
    }
    return gil_holder_if_ours(current, gil_this_thread);
}

#else
/*
 * Reading the attached thread state without a call into the runtime (3.12+).
 *
 * The runtime keeps it in a thread-local variable (_Py_tss_tstate) that it does not export; its
 * getter costs a call and, in a shared libpython, a __tls_get_addr, on every wrapper's fast path
 * (measured on 3.13: an eighth of the registry's cost per instance). extsan finds the variable
 * itself. The runtime's TLS block is a few words (3.12: 16 bytes, 3.13: 32), and while a thread has
 * a state attached exactly one of them holds it; the others are never thread states (a string
 * pointer, a mimalloc heap, a flag byte). The word's offset is found once, from the first thread
 * seen with a state; each thread then asks __tls_get_addr once for its own instance of that word,
 * checks it against the getter, and reads it directly from then on. Anything unexpected (no TLS
 * block, no match, two matches, a mismatch) leaves every thread on the getter.
 */

EXTSAN_THREAD_LOCAL PyThreadState **gil_thread_state_variable;

#define OFFSET_UNKNOWN  (-1)
#define OFFSET_UNUSABLE (-2)
static _Atomic long variable_offset = OFFSET_UNKNOWN;

#if defined(__x86_64__) && defined(__GLIBC__)
/* The dynamic linker's entry for general-dynamic TLS accesses (x86-64 ABI). */
struct tls_index {
    unsigned long module, offset;
};
extern void *__tls_get_addr(struct tls_index *index);

static void *runtime_tls_address(size_t offset)
{
    struct tls_index index = {python_api.runtime_tls_module, offset};
    return __tls_get_addr(&index);
}
#else
static void *runtime_tls_address(size_t offset)
{
    (void)offset;
    return NULL;
}
#endif

/* The offset of the only word of this thread's runtime TLS block equal to `current`, or -2. */
static long find_variable_offset(PyThreadState *current)
{
    const char *block = python_api.runtime_tls_module ? runtime_tls_address(0) : NULL;
    if (!block)
        return OFFSET_UNUSABLE;
    long found = OFFSET_UNUSABLE;
    for (size_t offset = 0; offset + sizeof current <= python_api.runtime_tls_size;
         offset += sizeof current) {
        if (*(PyThreadState *const *)(block + offset) != current)
            continue;
        if (found != OFFSET_UNUSABLE)
            return OFFSET_UNUSABLE;
        found = (long)offset;
    }
    return found;
}

PyThreadState *gil_locate_thread_state(void)
{
    PyThreadState *current = python_api.unchecked_thread_state();
    long offset = atomic_load_explicit(&variable_offset, memory_order_acquire);
    if (offset == OFFSET_UNKNOWN && current) {
        /* Racing threads find the same offset, each from its own block. */
        offset = find_variable_offset(current);
        atomic_store_explicit(&variable_offset, offset, memory_order_release);
        if (offset == OFFSET_UNUSABLE)
            extsan_log(1, "the runtime's thread-state variable was not found; using its getter");
        else
            extsan_log(2, "reading the thread state at offset %ld of the runtime's TLS", offset);
    }
    if (offset >= 0) {
        PyThreadState **variable = runtime_tls_address((size_t)offset);
        if (variable && *variable == current) {
            gil_thread_state_variable = variable;
        } else {
            atomic_store_explicit(&variable_offset, OFFSET_UNUSABLE, memory_order_release);
            extsan_log(1, "the runtime's thread-state variable did not match its getter; using "
                          "the getter");
        }
    }
    return current;
}
#endif /* 3.12+ */

bool thread_has_python_state(void)
{
    return python_api.gilstate_this_thread() != NULL || gil_held();
}

bool python_is_running(void)
{
    return python_api.is_initialized() && !python_api.is_finalizing();
}

bool gil_borrow(struct gil_borrow *borrow)
{
    borrow->taken = false;
    if (!python_is_running())
        return false;
    borrow->state = python_api.gil_ensure();
    borrow->taken = true;
    return true;
}

void gil_give_back(struct gil_borrow *borrow)
{
    if (borrow->taken)
        python_api.gil_release(borrow->state);
    borrow->taken = false;
}
