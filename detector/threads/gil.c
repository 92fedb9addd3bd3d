#define _GNU_SOURCE
#include "gil.h"

#include "locks.h"
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <unistd.h>

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
EXTSAN_THREAD_LOCAL PyThreadState *gil_own_state;
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

/*
 * Reads `length` bytes at `address` of this process without faulting: a thread state that is
 * not ours may be freed, and its memory returned to the system, while we look at it.
 */
static bool read_safely(const void *address, void *out, size_t length)
{
    struct iovec local = {out, length}, remote = {(void *)address, length};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)length;
}

PyThreadState *gil_identify_holder(PyThreadState *current, unsigned long this_thread)
{
    /* This thread's gilstate state is its own; reading the thread's own TSS is always safe. */
    if (current == python_api.gilstate_this_thread()) {
        gil_own_state = current;
        return current;
    }
    /* Another state of this thread's (a subinterpreter's), or another thread's. */
    unsigned long holder_thread;
    if (read_safely(&current->thread_id, &holder_thread, sizeof holder_thread) &&
        holder_thread == this_thread) {
        gil_own_state = current;
        return current;
    }
    return NULL;
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

/*
 * Borrowing the GIL. A thread that has a thread state (it released the GIL) takes it back with
 * PyGILState_Ensure and gives it up again with PyGILState_Release. A thread that has none needs
 * one made for the call and deleted after; PyGILState_Ensure and _Release would do that too, but
 * both steps take the runtime's HEAD_LOCK without holding the GIL, and up to 3.11 a fork while
 * another thread holds HEAD_LOCK hangs the child: PyOS_AfterFork_Child deletes the other
 * threads' states under HEAD_LOCK before it re-initialises that lock (3.12 holds HEAD_LOCK
 * across the fork instead). A program that never made a thread state on such a thread never had
 * that hang, so extsan makes and deletes the state itself, each step under LOCK_THREAD_STATES,
 * which fork holds (locks.h): a fork then never splits one. The GIL is waited for outside the
 * lock, since the forking thread holds the GIL.
 */
#if PY_VERSION_HEX < 0x030C0000
static bool borrow_with_new_thread_state(struct gil_borrow *borrow)
{
    lock_acquire(LOCK_THREAD_STATES);
    PyThreadState *state = python_api.PyThreadState_New(python_api.PyInterpreterState_Main());
    lock_release(LOCK_THREAD_STATES);
    if (!state)
        return false;
    /* As PyGILState_Ensure leaves it: a nested Ensure/Release pair must not delete it. */
    state->gilstate_counter = 1;
    python_api.PyEval_RestoreThread(state);
    borrow->created = state;
    borrow->how = BORROW_CREATED;
    return true;
}

static void delete_borrowed_thread_state(struct gil_borrow *borrow)
{
    python_api.PyThreadState_Clear(borrow->created);
    lock_acquire(LOCK_THREAD_STATES);
    python_api.PyThreadState_DeleteCurrent(); /* releases the GIL */
    lock_release(LOCK_THREAD_STATES);
    gil_own_state = NULL; /* its memory may hold another thread's state next */
}
#endif

bool gil_borrow(struct gil_borrow *borrow)
{
    borrow->how = BORROW_NONE;
    if (!python_is_running())
        return false;
#if PY_VERSION_HEX < 0x030C0000
    if (!python_api.gilstate_this_thread())
        return borrow_with_new_thread_state(borrow);
#endif
    borrow->state = python_api.gil_ensure();
    borrow->how = BORROW_ENSURED;
    return true;
}

void gil_give_back(struct gil_borrow *borrow)
{
    switch (borrow->how) {
    case BORROW_ENSURED:
        python_api.gil_release(borrow->state);
        break;
    case BORROW_CREATED:
#if PY_VERSION_HEX < 0x030C0000
        delete_borrowed_thread_state(borrow);
#endif
        break;
    case BORROW_NONE:
        break;
    }
    borrow->how = BORROW_NONE;
}
