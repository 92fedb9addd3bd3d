/*
 * What extsan knows about the types extension modules create and about their live instances.
 *
 * Types are registered by the type-creation hooks (PyType_Ready, PyType_FromSpec and family)
 * with their creation stack, and at analysis time by a walk of the type hierarchy for the ones
 * that escaped the hooks. Instances are registered by the allocation hooks (the types' own
 * tp_alloc slots, PyType_GenericAlloc, _PyObject_New, PyObject_Init, _PyObject_GC_New,
 * PyObject_GC_Track) and forgotten by the types' tp_dealloc slots, so the registry holds exactly
 * the live instances of extension types, each with the site that allocated it.
 *
 * All functions are called with the GIL held, except where a comment says otherwise.
 *
 * Instances of a Python class deriving from an extension type are registered too (under the
 * extension type): extsan wraps type.__new__ and instruments such classes' tp_alloc, which the
 * runtime sets to PyType_GenericAlloc for every class statement, out of the GOT hooks' sight.
 *
 * Known gaps, each a deliberate trade:
 * - An object freed without passing through an instrumented tp_dealloc or tp_free (a dealloc
 *   that calls PyObject_Free itself, a free list that recycles it, a deallocation without the
 *   GIL) stays registered until a new instance is registered at the same address, which
 *   replaces the record, or until the heap analysis finds the record stale and drops it. A
 *   record is therefore never trusted: the analysis proves its object alive before reading it.
 * - An object resurrected by its finalizer from inside tp_dealloc was already forgotten.
 * - A class made without type.__new__ is not instrumented: its instances are seen only when an
 *   extension allocates them through a hooked function. (Classes made before extsan was loaded,
 *   when it is activated in a running interpreter, are instrumented by the type walk.)
 */
#ifndef EXTSAN_REGISTRY_H
#define EXTSAN_REGISTRY_H

#include "options.h"
#include "python_api.h"
#include "stacks.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The library a type was written with, judged from the object that created it. */
enum binding_library { BINDING_C_API, BINDING_NANOBIND, BINDING_PYBIND11, BINDING_CYTHON };

const char *binding_library_name(enum binding_library binding); /* "C API", "nanobind", ... */

/*
 * Records are never freed (findings keep pointers to them); a record whose type was deallocated
 * is `dead`, out of every lookup and iteration.
 */
struct type_record {
    PyTypeObject *type;
    stack_id created_at; /* native stack of the creating call; 0 when found by the type walk */
    enum binding_library binding;
    char creator[256];        /* path of the loaded object whose code created the type */
    const void *creator_code; /* the creating call's return address, in that object; or NULL */
    /*
     * The slots extsan replaced, to be called by its wrappers; NULL when not replaced, or when
     * the slot held extsan's wrapper already (inherited from an instrumented base): the wrapper
     * then calls the original of the nearest ancestor that has one.
     */
    allocfunc original_alloc;
    destructor original_dealloc;
    /*
     * Replaced instead of tp_dealloc when that is the runtime's subtype_dealloc (a heap type made
     * from a spec without Py_tp_dealloc, or a Python class): subtype_dealloc decides what to
     * clear and whether to release the type by comparing the type's slot with itself, so the
     * slot must stay; the instance is forgotten when its memory is released instead.
     */
    freefunc original_free;
    /*
     * tp_new and tp_init as the type had them when registered, for a report whose allocation
     * stack has no frame of the extension (tp_new is the runtime's PyType_GenericNew): copied
     * while the type was known alive, since the type may be gone when the report is written.
     */
    uintptr_t tp_new, tp_init;
    /*
     * One of the binding library's own types, not a type its user wrote: nanobind's nb_func,
     * nb_method, nb_meta, nb_type..., pybind11's pybind11_type, pybind11_object, function
     * records..., Cython's cython_function_or_method and metatypes (judged by name). What their
     * traverse misses is the library's to fix, not the user's.
     */
    bool binding_machinery;
    bool dead;   /* the type object was deallocated */
    bool hooked; /* registered by a type-creation hook, slots instrumented (else: by the walk) */
    /*
     * A class made in Python (a class statement) deriving from an extension type: registered
     * only so that its tp_alloc can be instrumented. Never returned by the public lookups and
     * iterations, which are about extension types.
     */
    bool python_class;
    /* Where the created_at stack lives, to store it again in a forked child (see registry.c). */
    const uintptr_t *created_at_frames;
    unsigned created_at_depth;
    struct type_record *next_created; /* every record, in registration order */
};

/* A place where instances are allocated: the native stack and the Python stack at that point. */
typedef uint32_t site_id; /* 0: unknown */

struct python_frame {
    const char *file;     /* interned copies, valid for the life of the process */
    const char *function; /* the code object's qualified name where the version has it */
    int line;
};

/*
 * A site is identified cheaply (the return address of the allocating call plus the innermost
 * Python frame's code object and instruction, and the current context: context.h); its stacks
 * are captured once, at the first allocation from it. The frames deeper than that identity
 * (native callers of the allocating function, outer Python frames) are therefore those of the
 * first allocation from the site.
 *
 * The context is in the identity so that every instance knows the test that allocated it
 * without a field of its own: instance records stay 24 bytes, and a test run pays one more
 * site (two stack captures) per allocating code location and test, only when a test runner
 * sets contexts at all.
 */
struct allocation_site {
    stack_id native;
    unsigned python_depth; /* innermost first */
    const struct python_frame *python;
    const char *context; /* the test its instances were allocated in (interned), or NULL */
};

/* NULL for 0 or an unknown id. Lock-free: any thread, any time. */
const struct allocation_site *allocation_site_get(site_id site);

struct instance_record {
    PyObject *object;
    struct type_record *type;  /* the registered type: Py_TYPE(object) or an ancestor of it */
    site_id allocated_at : 24; /* sites are far fewer than 2^24 (allocation_sites.c) */
    /*
     * The process that registered it, counted in forks (registry_generation()): a forked child
     * inherits its parent's records, and their findings are the parent's to report. Six bits
     * wrap at the 64th nested fork, where inherited records would count as the child's again.
     */
    uint32_t generation : 6; /* REGISTRY_GENERATIONS values */
    /*
     * Already in a finding of an earlier heap analysis (the pytest plugin runs one after each
     * test): a later analysis does not count this holder again. A new object at the address
     * replaces the record, and with it these marks.
     */
    uint32_t counted_hidden : 1; /* among its type's holders of hidden references */
    uint32_t counted_leaked : 1; /* in a leaked-cycle finding */
    /*
     * Bytes from `object` known to belong to its allocation, so safe to scan; 0 if unknown.
     * tp_alloc and PyType_GenericAlloc: _PyObject_VAR_SIZE(type, nitems + 1), what CPython
     * allocates; _PyObject_New, _PyObject_GC_New: tp_basicsize; the *_NewVar functions:
     * _PyObject_VAR_SIZE(type, nitems). PyObject_Init and PyObject_GC_Track of an object not
     * seen allocated: 0, because the memory came from elsewhere: nanobind wraps an existing C++
     * object in a 24-byte PyObject_Malloc block made an instance by PyObject_Init, so reading
     * tp_basicsize bytes there would read past the block. Also 0 for a class whose metaclass is
     * an extension type (nanobind's nb_type, pybind11_type): its memory is the runtime's
     * PyHeapTypeObject, some of whose fields type_traverse deliberately does not visit
     * (tp_subclasses holds weak references), so scanning it would only find noise.
     */
    uint32_t size;
};

/* Registration by the hooks. `caller` is a code address in the object that made the call. */
struct type_record *registry_add_type(PyTypeObject *type, stack_id created_at, const void *caller);
struct type_record *registry_find_type(PyTypeObject *type);
/* The registered type nearest to `type` along tp_base (itself included); NULL if none. */
struct type_record *registry_find_type_or_ancestor(PyTypeObject *type);

/*
 * Visits every registered type / every live instance (the registry must not change meanwhile:
 * `visit` must not allocate or free extension instances). The instance records live inside the
 * registry's hash table: a pointer passed to `visit` stays valid only until the next
 * registration or deallocation of an extension instance.
 */
void registry_for_each_type(void (*visit)(struct type_record *type, void *context), void *context);
void registry_for_each_instance(void (*visit)(struct instance_record *instance, void *context),
                                void *context);
size_t registry_instance_count(void);
/* Instances registered by this process: since it started, or in a forked child since the fork
   (whose registry began as a copy of its parent's). GIL held. */
unsigned long registry_registrations(void);
/* The generation of the records this process registers: one more in each forked child, modulo
   the values instance_record.generation holds. */
#define REGISTRY_GENERATIONS 64
unsigned registry_generation(void);
/* Whether `instance` was registered by this process, not inherited through a fork. */
static inline bool registry_registered_here(const struct instance_record *instance)
{
    return instance->generation == registry_generation();
}
/*
 * The allocation site of the code running now on `thread` (GIL held), cached under `identity`
 * (anything that tells the native call paths apart: a return address, a hash of a stack) and
 * the Python position (allocation_sites.h). 0 when out of memory.
 */
site_id registry_site_here(uintptr_t identity, PyThreadState *thread);
/* Bytes the registry uses now, for the benchmark's memory-per-instance figure. Any thread. */
size_t registry_memory_bytes(void);

/*
 * Finds extension types that escaped the hooks: walks every type reachable through
 * type.__subclasses__() from object and registers those whose slots point into an extension
 * module (not the runtime, not extsan), and gives the types it visits the slot wrappers the
 * hooks would have (see instrument_found_type). Called by the analysis before it starts, and
 * when extsan is activated in a running interpreter. Every type it visits, which is every live
 * type that has been readied, is added to `seen_types` unless that is NULL.
 */
struct pointer_set;
void registry_walk_types(struct pointer_set *seen_types);

/*
 * Drops the record of `object`, found stale (its object was freed unseen) by the analysis.
 * GIL held, and not while the instances are being iterated.
 */
void registry_forget_stale(PyObject *object);

/* ---- what the shim calls ------------------------------------------------------------------ */

/*
 * At start-up, before the interpreter runs: wraps the tp_dealloc and tp_new slots of `type`
 * (to forget dead types and to instrument Python subclasses of extension types) and sets up the
 * fork handling. `generic_alloc_hook` is the shim's wrapper of PyType_GenericAlloc: a slot
 * holding it (an extension took the function's address through a patched GOT entry) means the
 * runtime's own.
 */
void registry_install(allocfunc generic_alloc_hook);

/*
 * A type-creation call succeeded (type may be NULL: then nothing happens). Registers the type
 * with the caller's stack, judges its binding library, instruments tp_alloc and tp_dealloc, and
 * on 3.9/3.10 reports HAVE_GC without tp_traverse. `caller` is the wrapper's return address.
 */
void registry_type_created(PyTypeObject *type, const void *caller);

/* How a second registration of an address already registered is treated. */
enum registration {
    REGISTER_ALLOCATION, /* a fresh allocation: replaces any record (its object died unseen) */
    REGISTER_IF_ABSENT,  /* PyObject_GC_Track: keeps the record of the allocation if any */
};

void registry_instance_seen(PyObject *object, uint32_t size, const void *caller,
                            enum registration how);

/*
 * An allocation hook's report of a new object (NULL: failed, ignored). `caller` is the
 * wrapper's return address, the cheap half of the allocation site's identity. Does nothing
 * unless the calling thread holds the GIL and the object's type is (or derives from) a
 * registered extension type.
 */
static inline void registry_instance_allocated(PyObject *object, uint32_t size, const void *caller,
                                               enum registration how)
{
    if (object && extsan_options.track_instances)
        registry_instance_seen(object, size, caller, how);
}

/* _PyObject_VAR_SIZE, as the allocators compute it, clamped to the record's 32 bits. */
static inline uint32_t registry_allocation_size(PyTypeObject *type, Py_ssize_t items)
{
    size_t size = items < 0 ? (size_t)type->tp_basicsize : _PyObject_VAR_SIZE(type, items);
    return size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
}

/* Writes the registry's size and counts to the log (verbosity 1); `when` names the moment. */
void registry_log_statistics(const char *when);

#endif
