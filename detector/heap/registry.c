/*
 * The type and instance registry (registry.h): type records and their lookup, the slot wrappers
 * extsan puts on extension types, instance registration, the type walk.
 *
 * Locking. Types: created, instrumented and forgotten under LOCK_TYPES (a mutex of extsan's own,
 * never held while calling into Python except for the GIL-holding type walk); looked up without
 * any lock, because the slot wrappers must also work on a thread without the GIL (see
 * type_table). Instances and the site cache: serialised by the GIL, which every registration
 * holds. An atomic operation per allocation and per deallocation would cost more than the rest
 * of the registration (measured: a spinlock took two thirds of it), so a lock is only taken
 * once a thread of a second interpreter registered or forgot an instance (3.12+ interpreters
 * may have their own GIL); from then on, by every thread. A deallocation without the GIL (a
 * bug of its own) forgets nothing unless that lock is in use: its record stays until the
 * address is registered again.
 */
#define _GNU_SOURCE
#include "registry.h"
#include "locks.h"

#include "allocation_sites.h"
#include "context.h"
#include "findings.h"
#include "gil.h"
#include "instance_map.h"
#include "loaded_objects.h"
#include "log.h"
#include "pointer_set.h"
#include "python_stack.h"
#include "report.h"

#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *binding_library_name(enum binding_library binding)
{
    switch (binding) {
    case BINDING_C_API:
        return "C API";
    case BINDING_NANOBIND:
        return "nanobind";
    case BINDING_PYBIND11:
        return "pybind11";
    case BINDING_CYTHON:
        return "Cython";
    }
    return "unknown";
}

/* ---- locks ------------------------------------------------------------------------------------
 */

static atomic_flag instances_busy = ATOMIC_FLAG_INIT;
static PyInterpreterState *main_interpreter;
static atomic_bool several_interpreters;

/*
 * Begins an access to the instances and the site cache by a thread whose attached thread state
 * is `thread` (NULL: it holds no GIL). Returns false when it must not touch them; *locked says
 * whether instances_end must release the lock.
 */
static inline bool instances_begin(PyThreadState *thread, bool *locked)
{
    if (thread) {
        if (__builtin_expect(!main_interpreter, 0))
            main_interpreter = python_api.PyInterpreterState_Main();
        if (__builtin_expect(thread->interp != main_interpreter, 0))
            atomic_store_explicit(&several_interpreters, true, memory_order_relaxed);
    }
    *locked = atomic_load_explicit(&several_interpreters, memory_order_relaxed);
    if (!*locked)
        return thread != NULL;
    while (atomic_flag_test_and_set_explicit(&instances_busy, memory_order_acquire))
        sched_yield();
    return true;
}

static inline void instances_end(bool locked)
{
    if (locked)
        atomic_flag_clear_explicit(&instances_busy, memory_order_release);
}

/* ---- the type table ----------------------------------------------------------------------------
 * Open addressing keyed by the type object's address. Readers take no lock: writers (under
 * LOCK_TYPES) fill a slot's record before its key, with release stores, and grow by building a
 * new table and publishing it; an old table is never freed, since a reader may still be in it
 * (tables double, so the abandoned ones add up to less than the live one). A forgotten type keeps
 * its key with a NULL record, so probe runs never break; the next growth drops such slots.
 */

struct type_slot {
    PyTypeObject *_Atomic type; /* NULL: empty */
    struct type_record *_Atomic record;
};

struct type_table {
    size_t capacity; /* a power of two */
    size_t used;     /* slots with a key, forgotten ones included */
    struct type_slot slots[];
};

static struct type_table *_Atomic type_table;
static struct type_record *first_record, *last_record; /* every record, under LOCK_TYPES */
static size_t type_record_count, type_table_bytes;

static size_t type_home(const PyTypeObject *type, size_t capacity)
{
    return (size_t)(((uint64_t)(uintptr_t)type * 0x9E3779B97F4A7C15ull) >> 32) & (capacity - 1);
}

/*
 * The record found last on this thread: allocation and deallocation look up the same few types
 * over and over. Records are never freed, and a forgotten type's record is dead before it
 * leaves the table, so a cached record is good while it is alive.
 */
static EXTSAN_THREAD_LOCAL struct {
    const PyTypeObject *type;
    struct type_record *record;
} last_lookup;

/* Any record of `type`, Python classes included; NULL when none. Lock-free, any thread. */
static inline struct type_record *lookup_record(const PyTypeObject *type)
{
    if (last_lookup.type == type && !last_lookup.record->dead)
        return last_lookup.record;
    struct type_table *table = atomic_load_explicit(&type_table, memory_order_acquire);
    if (!table)
        return NULL;
    size_t mask = table->capacity - 1;
    for (size_t slot = type_home(type, table->capacity);; slot = (slot + 1) & mask) {
        PyTypeObject *key = atomic_load_explicit(&table->slots[slot].type, memory_order_acquire);
        if (!key)
            return NULL;
        if (key != type)
            continue;
        struct type_record *record =
            atomic_load_explicit(&table->slots[slot].record, memory_order_acquire);
        if (record) {
            last_lookup.type = type;
            last_lookup.record = record;
        }
        return record;
    }
}

static void table_insert(struct type_table *table, PyTypeObject *type, struct type_record *record)
{
    size_t mask = table->capacity - 1;
    size_t slot = type_home(type, table->capacity);
    while (atomic_load_explicit(&table->slots[slot].type, memory_order_relaxed) &&
           atomic_load_explicit(&table->slots[slot].type, memory_order_relaxed) != type)
        slot = (slot + 1) & mask;
    atomic_store_explicit(&table->slots[slot].record, record, memory_order_release);
    if (atomic_load_explicit(&table->slots[slot].type, memory_order_relaxed) != type) {
        atomic_store_explicit(&table->slots[slot].type, type, memory_order_release);
        table->used++;
    }
}

/* Publishes `record` under `type`; LOCK_TYPES held. False when out of memory. */
static bool publish_type(PyTypeObject *type, struct type_record *record)
{
    struct type_table *table = atomic_load_explicit(&type_table, memory_order_relaxed);
    if (!table || (table->used + 1) * 2 > table->capacity) {
        size_t capacity = table ? 2 * table->capacity : 256;
        size_t bytes = sizeof(struct type_table) + capacity * sizeof(struct type_slot);
        struct type_table *grown = calloc(1, bytes);
        if (!grown)
            return false;
        grown->capacity = capacity;
        for (size_t i = 0; table && i < table->capacity; i++) {
            struct type_record *kept =
                atomic_load_explicit(&table->slots[i].record, memory_order_relaxed);
            if (kept)
                table_insert(grown, kept->type, kept);
        }
        atomic_store_explicit(&type_table, grown, memory_order_release);
        type_table_bytes += bytes;
        table = grown;
    }
    table_insert(table, type, record);
    return true;
}

/* A live record of `type` that is about an extension type, or NULL. */
static struct type_record *extension_record(const PyTypeObject *type)
{
    struct type_record *record = lookup_record(type);
    return record && !record->dead && !record->python_class ? record : NULL;
}

struct type_record *registry_find_type(PyTypeObject *type)
{
    return extension_record(type);
}

struct type_record *registry_find_type_or_ancestor(PyTypeObject *type)
{
    for (; type; type = type->tp_base) {
        struct type_record *record = extension_record(type);
        if (record)
            return record;
    }
    return NULL;
}

void registry_for_each_type(void (*visit)(struct type_record *type, void *context), void *context)
{
    lock_acquire(LOCK_TYPES);
    struct type_record *last = last_record;
    lock_release(LOCK_TYPES);
    /* Records are only appended and never freed: the list up to `last` is stable. */
    for (struct type_record *record = first_record; record; record = record->next_created) {
        if (!record->dead && !record->python_class)
            visit(record, context);
        if (record == last)
            break;
    }
}

/* Copies `text` into `out`, truncated to `size` bytes with its terminator. */
static void copy_text(char *out, size_t size, const char *text)
{
    size_t length = strnlen(text, size - 1);
    memcpy(out, text, length);
    out[length] = '\0';
}

/* ---- which loaded object, which binding library -----------------------------------------------
 * The binding library is judged from the loaded object whose code created the type, by strings
 * each library keeps in its read-only data whatever the build: the names of the internals
 * records the libraries share between modules ("__nanobind_internals__" in nanobind 3,
 * "__nb_internals_" before; "__pybind11_internals_v<N>"), and the module Cython creates in every
 * module it generates ("cython_runtime"). Symbols would not do: nanobind and pybind11 are built
 * with hidden visibility and wheels are stripped, so none of theirs is in the dynamic symbol
 * table. The scan reads each object's read-only data once (may_hold_markers) and is cached per
 * object.
 */

static const struct {
    const char *marker;
    enum binding_library binding;
} binding_markers[] = {
    {"__nanobind_internals__", BINDING_NANOBIND},
    {"__nb_internals_", BINDING_NANOBIND},
    {"__pybind11_internals_v", BINDING_PYBIND11},
    {"cython_runtime", BINDING_CYTHON},
    {"__pyx_", BINDING_CYTHON},
};

struct object_lookup {
    uintptr_t address;
    bool found;
    uintptr_t base;
    char path[PATH_MAX];
    enum binding_library binding;
};

static bool segment_contains(const struct dl_phdr_info *info, const ElfW(Phdr) * segment,
                             uintptr_t address)
{
    uintptr_t start = info->dlpi_addr + segment->p_vaddr;
    return segment->p_type == PT_LOAD && address >= start && address < start + segment->p_memsz;
}

/*
 * The segments that may hold the markers' strings: read-only data. Linkers put .rodata in a
 * segment of its own, apart from the code (-z separate-code, the default on x86-64 since binutils
 * 2.31), and the code is most of a large library: an object with such a segment is read there
 * alone; an older one, whose .rodata shares the code's segment, there.
 */
static bool may_hold_markers(const struct dl_phdr_info *info, const ElfW(Phdr) * segment)
{
    if (segment->p_type != PT_LOAD || (segment->p_flags & PF_W) || !(segment->p_flags & PF_R))
        return false;
    if (!(segment->p_flags & PF_X))
        return true;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *other = &info->dlpi_phdr[i];
        if (other->p_type == PT_LOAD && other->p_flags == PF_R)
            return false;
    }
    return true;
}

static enum binding_library scan_for_binding(const struct dl_phdr_info *info)
{
    for (unsigned m = 0; m < sizeof binding_markers / sizeof binding_markers[0]; m++) {
        const char *marker = binding_markers[m].marker;
        for (int i = 0; i < info->dlpi_phnum; i++) {
            const ElfW(Phdr) *segment = &info->dlpi_phdr[i];
            if (!may_hold_markers(info, segment))
                continue;
            /* p_filesz: the part backed by the file; the rest is zero fill. */
            const void *start = (const void *)(info->dlpi_addr + segment->p_vaddr);
            if (memmem(start, segment->p_filesz, marker, strlen(marker)))
                return binding_markers[m].binding;
        }
    }
    return BINDING_C_API;
}

static int find_object(struct dl_phdr_info *info, size_t size, void *context)
{
    (void)size;
    struct object_lookup *lookup = context;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (!segment_contains(info, &info->dlpi_phdr[i], lookup->address))
            continue;
        lookup->found = true;
        lookup->base = info->dlpi_addr;
        copy_text(lookup->path, sizeof lookup->path,
                  info->dlpi_name[0] ? info->dlpi_name : loaded_objects_executable_path());
        lookup->binding = scan_for_binding(info);
        return 1;
    }
    return 0;
}

/* The objects judged so far (CPython never unloads one); LOCK_TYPES held. */
static struct judged_object {
    uintptr_t base;
    char *path;
    enum binding_library binding;
} judged[512];
static unsigned judged_count;
static size_t judged_bytes;

/* Path and binding of the loaded object holding `address`; false when it is in none. */
static bool describe_creator(const void *address, char *path, size_t path_size,
                             enum binding_library *binding)
{
    Dl_info info;
    if (!address || !dladdr(address, &info))
        return false;
    for (unsigned i = 0; i < judged_count; i++) {
        if (judged[i].base == (uintptr_t)info.dli_fbase) {
            copy_text(path, path_size, judged[i].path);
            *binding = judged[i].binding;
            return true;
        }
    }
    /*
     * dl_iterate_phdr for the path as well as the segments: dladdr names the executable by
     * argv[0], which need not be a path at all.
     */
    static struct object_lookup lookup; /* large; LOCK_TYPES held */
    memset(&lookup, 0, sizeof lookup);
    lookup.address = (uintptr_t)address;
    dl_iterate_phdr(find_object, &lookup);
    if (!lookup.found)
        return false;
    copy_text(path, path_size, lookup.path);
    *binding = lookup.binding;
    char *kept = strdup(lookup.path);
    if (kept && judged_count < sizeof judged / sizeof judged[0]) {
        judged[judged_count++] = (struct judged_object){(uintptr_t)info.dli_fbase, kept, *binding};
        judged_bytes += strlen(kept) + 1;
    } else {
        free(kept);
    }
    extsan_log(2, "%s is written with %s", lookup.path, binding_library_name(lookup.binding));
    return true;
}

static bool starts_with(const char *text, const char *prefix)
{
    return !strncmp(text, prefix, strlen(prefix));
}

/* See binding_machinery in registry.h: the names each library gives its own types. */
static bool is_binding_machinery(const PyTypeObject *type, enum binding_library binding)
{
    const char *name = type->tp_name ? type->tp_name : "";
    switch (binding) {
    case BINDING_NANOBIND:
        return starts_with(name, "nanobind.") || starts_with(name, "nb_type");
    case BINDING_PYBIND11:
        return starts_with(name, "pybind11_");
    case BINDING_CYTHON:
        return starts_with(name, "_cython_");
    case BINDING_C_API:
        break;
    }
    return false;
}

/* ---- records ----------------------------------------------------------------------------------
 */

/* A new record for `type`, published; LOCK_TYPES held. NULL when out of memory. */
static struct type_record *new_record(PyTypeObject *type)
{
    struct type_record *record = calloc(1, sizeof *record);
    if (!record)
        return NULL;
    record->type = type;
    if (!publish_type(type, record)) {
        free(record);
        return NULL;
    }
    if (last_record)
        last_record->next_created = record;
    else
        first_record = record;
    last_record = record;
    type_record_count++;
    return record;
}

/* The record to fill for `type`: its live one, or a new one (a dead one stays dead). */
static struct type_record *record_for(PyTypeObject *type)
{
    struct type_record *record = lookup_record(type);
    return record && !record->dead ? record : new_record(type);
}

/* What a registration learns of a live type: its creator, binding library and construction
   slots. LOCK_TYPES held. */
static void describe_registered_type(struct type_record *record, const void *caller)
{
    PyTypeObject *type = record->type;
    record->creator_code = caller;
    if (!describe_creator(caller, record->creator, sizeof record->creator, &record->binding))
        record->creator[0] = '\0';
    record->binding_machinery = is_binding_machinery(type, record->binding);
    record->tp_new = (uintptr_t)type->tp_new;
    record->tp_init = (uintptr_t)type->tp_init;
}

static void set_created_at(struct type_record *record, stack_id stack)
{
    record->created_at = stack;
    record->created_at_frames = stack_depot_get(stack, &record->created_at_depth);
}

struct type_record *registry_add_type(PyTypeObject *type, stack_id created_at, const void *caller)
{
    lock_acquire(LOCK_TYPES);
    struct type_record *record = record_for(type);
    if (record) {
        record->python_class = false;
        if (created_at)
            set_created_at(record, created_at);
        describe_registered_type(record, caller);
    }
    lock_release(LOCK_TYPES);
    return record;
}

/* ---- the slot wrappers -------------------------------------------------------------------------
 * One tp_alloc and one tp_dealloc wrapper serve every instrumented type. A wrapper does not know
 * through which type's slot it was called, so it works out whose original to call from the
 * object: the nearest type, from Py_TYPE(object) along tp_base, whose record holds an original.
 *
 * - A type whose slot held extsan's wrapper when it was instrumented inherited it from an
 *   instrumented base: it has no original of its own, and the walk goes on to that base.
 * - A Python subclass of an instrumented type has subtype_dealloc in its own slot, which calls
 *   the nearest base slot that is not subtype_dealloc: extsan's wrapper, with an object whose
 *   type has no record (or a record without an original dealloc): the walk reaches the base.
 * - An instrumented extension subtype whose original dealloc ends by calling its base's slot
 *   (`Base.tp_dealloc(self)`, the usual pattern; Cython does it too) re-enters the wrapper
 *   with the same object, whose type would again lead to the subtype's original: infinite
 *   recursion. So each thread remembers the object it is deallocating and the type whose
 *   original it called (`deallocating`); re-entered with that object, the wrapper continues the
 *   walk above that type. Nested deallocations of other objects save and restore the record.
 */

struct dealloc_in_progress {
    PyObject *object;
    PyTypeObject *level; /* the type whose original dealloc runs for it */
};

struct alloc_in_progress {
    PyTypeObject *type;  /* the type argument of the tp_alloc call */
    PyTypeObject *level; /* the type whose (custom) original alloc runs for it */
};

static EXTSAN_THREAD_LOCAL struct dealloc_in_progress deallocating;
static EXTSAN_THREAD_LOCAL struct alloc_in_progress allocating;

static allocfunc generic_alloc_hook; /* the shim's wrapper of PyType_GenericAlloc */
/*
 * The runtime's subtype_dealloc (not exported): learned from the first class type.__new__
 * makes, which always gets it. Interpreter start-up makes classes before any extension loads.
 */
static destructor subtype_dealloc;
static destructor real_type_dealloc;
static newfunc real_type_new;
static bool warned_no_original;

static struct type_record *instance_type(PyTypeObject *type);
static bool may_register(PyObject *object, enum registration how);
static inline void register_instance(PyObject *object, struct type_record *type, uint32_t size,
                                     const void *caller, enum registration how,
                                     PyThreadState *thread);

enum wrapped_slot { WRAPPED_ALLOC, WRAPPED_DEALLOC, WRAPPED_FREE };

static bool has_original(const struct type_record *record, enum wrapped_slot slot)
{
    switch (slot) {
    case WRAPPED_ALLOC:
        return record->original_alloc != NULL;
    case WRAPPED_DEALLOC:
        return record->original_dealloc != NULL;
    case WRAPPED_FREE:
        return record->original_free != NULL;
    }
    return false;
}

/* The nearest type from `start` along tp_base whose record holds its original `slot`, or NULL. */
static inline struct type_record *slot_owner(PyTypeObject *start, enum wrapped_slot slot)
{
    for (PyTypeObject *type = start; type; type = type->tp_base) {
        struct type_record *record = lookup_record(type);
        if (record && has_original(record, slot))
            return record;
    }
    return NULL;
}

static bool is_subtype_dealloc(PyTypeObject *type)
{
    if (subtype_dealloc)
        return type->tp_dealloc == subtype_dealloc;
    /* Not learned yet (no class made so far): a heap type's runtime dealloc can only be it. */
    return (type->tp_flags & Py_TPFLAGS_HEAPTYPE) &&
           address_in_python_runtime((const void *)type->tp_dealloc);
}

/*
 * The object this thread forgot last. A dealloc wrapper forgets its object before the original
 * runs, and the original usually ends in tp_free of the same object: the free wrapper then has
 * nothing to look up. It holds only while that dealloc runs (slot_dealloc clears it after), and
 * an object registered at that address meanwhile (memory freed another way and reused) clears it.
 */
static EXTSAN_THREAD_LOCAL PyObject *forgotten_last;

static void forget_instance(PyObject *object)
{
    bool locked;
    forgotten_last = object;
    if (instances_begin(gil_attached_thread_state(), &locked)) {
        instance_map_remove(object);
        instances_end(locked);
    }
}

/* In a free wrapper: forgets the object unless its dealloc wrapper just did. */
static inline void forget_freed_instance(PyObject *object)
{
    if (object != forgotten_last)
        forget_instance(object);
    forgotten_last = NULL;
}

void registry_forget_stale(PyObject *object)
{
    forget_instance(object);
}

static PyObject *slot_alloc(PyTypeObject *type, Py_ssize_t items)
{
    /*
     * A custom original alloc may call its base's tp_alloc slot (extsan's wrapper again) with
     * the same type: continue above the level whose original is running. PyType_GenericAlloc
     * never calls a slot, so a same-type allocation nested in it (a finalizer run by the
     * collector it triggered) is a new allocation: only custom originals are remembered. The
     * one confusion left: a same-type allocation nested in a custom alloc some other way.
     */
    struct alloc_in_progress outer = allocating;
    PyTypeObject *start = outer.type == type ? outer.level->tp_base : type;
    struct type_record *owner = slot_owner(start, WRAPPED_ALLOC);
    allocfunc original = owner ? owner->original_alloc : python_api.generic_alloc;
    bool custom = original != python_api.generic_alloc;
    if (custom)
        allocating = (struct alloc_in_progress){type, owner->type};
    PyObject *object = original(type, items);
    if (custom)
        allocating = outer;
    if (!object || !extsan_options.track_instances || !may_register(object, REGISTER_ALLOCATION))
        return object;
    PyThreadState *thread = gil_attached_thread_state();
    if (!thread)
        return object;
    /* The owner of the alloc is usually the type the instance is registered under. */
    struct type_record *registered =
        owner && owner->type == type && !owner->python_class ? owner : instance_type(type);
    if (registered)
        register_instance(object, registered, registry_allocation_size(type, items + 1),
                          __builtin_return_address(0), REGISTER_ALLOCATION, thread);
    return object;
}

static void slot_dealloc(PyObject *object)
{
    struct dealloc_in_progress outer = deallocating;
    PyTypeObject *start;
    if (outer.object == object && outer.level) {
        start = outer.level->tp_base; /* a base call from the original running for it */
    } else {
        start = Py_TYPE(object);
        /* Forgotten before the original runs: that frees the memory, which may be reused. */
        forget_instance(object);
    }
    struct type_record *owner = slot_owner(start, WRAPPED_DEALLOC);
    if (!owner) {
        /*
         * Cannot happen while the records are intact (some type on the way holds the wrapper
         * because extsan instrumented it). Free the memory rather than crash or recurse.
         */
        if (!warned_no_original)
            extsan_log(0,
                       "no original tp_dealloc for a %s object; freeing it without its own "
                       "clean-up",
                       Py_TYPE(object)->tp_name);
        warned_no_original = true;
        Py_TYPE(object)->tp_free(object);
        return;
    }
    deallocating = (struct dealloc_in_progress){object, owner->type};
    owner->original_dealloc(object);
    deallocating = outer;
    forgotten_last = NULL; /* the skip is for a tp_free inside this dealloc only */
}

/*
 * tp_free wrappers: the instance is forgotten when its memory goes, whichever dealloc ran. A
 * dealloc may bypass the wrapped tp_dealloc of a registered ancestor (ctypes' CFuncPtr dealloc
 * calls PyCData_dealloc directly, not through the slot), or the type's dealloc may be the
 * runtime's subtype_dealloc, which extsan leaves in place; both end in tp_free. tp_free functions
 * do not call other slots.
 *
 * The runtime's two tp_free functions each get a wrapper of their own, which needs no type
 * lookup: a dealloc may already have released the type when it frees the memory. A custom
 * tp_free goes through slot_free, which finds the original through the object's type.
 */
static void free_gc_object(void *memory)
{
    forget_freed_instance(memory);
    python_api.PyObject_GC_Del(memory);
}

static void free_object(void *memory)
{
    forget_freed_instance(memory);
    python_api.PyObject_Free(memory);
}

static void slot_free(void *memory)
{
    PyObject *object = memory;
    forget_instance(object);
    PyTypeObject *type = Py_TYPE(object);
    struct type_record *owner = slot_owner(type, WRAPPED_FREE);
    if (owner) {
        owner->original_free(memory);
        return;
    }
    /* Cannot happen while the records are intact; what the runtime's own types use. */
    (PyType_IS_GC(type) ? python_api.PyObject_GC_Del : python_api.PyObject_Free)(memory);
}

static bool is_free_wrapper(freefunc free)
{
    return free == free_gc_object || free == free_object || free == slot_free;
}

/*
 * Wraps tp_free of a registered type or class; LOCK_TYPES held. PyObject_Free is wrapped only
 * where no C type can inherit it: CPython gives a GC subtype of a non-GC base PyObject_GC_Del
 * only when the base's tp_free *is* PyObject_Free (inherit_slots), and would leave it NULL with
 * a wrapper there. Python classes always get their own tp_free, and a type whose dealloc is
 * subtype_dealloc has no other place where its deaths are seen.
 */
static void instrument_free(struct type_record *record)
{
    PyTypeObject *type = record->type;
    freefunc original = type->tp_free;
    bool only_place = record->python_class || is_subtype_dealloc(type);
    if (!original || is_free_wrapper(original))
        return;
    if (original == python_api.PyObject_GC_Del) {
        type->tp_free = free_gc_object;
    } else if (!only_place) {
        return;
    } else if (original == python_api.PyObject_Free) {
        type->tp_free = free_object;
    } else {
        record->original_free = original;
        type->tp_free = slot_free;
    }
}

/* Replaces tp_alloc, tp_dealloc (unless it is subtype_dealloc) and tp_free of a registered
   type; LOCK_TYPES held. */
static void instrument_slots(struct type_record *record)
{
    PyTypeObject *type = record->type;
    if (type->tp_alloc && type->tp_alloc != slot_alloc) {
        /* The shim's PyType_GenericAlloc wrapper there means the function itself. */
        record->original_alloc =
            type->tp_alloc == generic_alloc_hook ? python_api.generic_alloc : type->tp_alloc;
        type->tp_alloc = slot_alloc;
    }
    if (type->tp_dealloc && !is_subtype_dealloc(type) && type->tp_dealloc != slot_dealloc) {
        record->original_dealloc = type->tp_dealloc;
        type->tp_dealloc = slot_dealloc;
    }
    instrument_free(record);
}

/* ---- PyType_Type's own slots --------------------------------------------------------------------
 * tp_dealloc: a type object is being freed; its record must leave the lookups before its address
 * can come back as another type. Metaclasses (nanobind's, pybind11's) end in this slot too.
 * tp_new: a class statement (type.__new__) made a class; one deriving from an instrumented
 * extension type gets its tp_alloc instrumented, so that its instances are registered: the
 * runtime gives every such class PyType_GenericAlloc, which the extension's tp_new then calls
 * through the class's slot, out of sight of the GOT hooks.
 */

static void type_dealloc_wrapper(PyObject *object)
{
    struct type_record *record = lookup_record((PyTypeObject *)object);
    if (record) {
        lock_acquire(LOCK_TYPES);
        record->dead = true;
        struct type_table *table = atomic_load_explicit(&type_table, memory_order_relaxed);
        size_t mask = table->capacity - 1;
        for (size_t slot = type_home(record->type, table->capacity);
             atomic_load_explicit(&table->slots[slot].type, memory_order_relaxed);
             slot = (slot + 1) & mask) {
            if (atomic_load_explicit(&table->slots[slot].record, memory_order_relaxed) == record)
                atomic_store_explicit(&table->slots[slot].record, NULL, memory_order_release);
        }
        lock_release(LOCK_TYPES);
    }
    real_type_dealloc(object);
}

static void python_class_created(PyTypeObject *type)
{
    if (!(type->tp_flags & Py_TPFLAGS_HEAPTYPE) || type->tp_alloc == slot_alloc ||
        type->tp_alloc != python_api.generic_alloc)
        return;
    struct type_record *base = registry_find_type_or_ancestor(type->tp_base);
    if (!base || !slot_owner(type->tp_base, WRAPPED_ALLOC))
        return; /* no extension type among its bases was instrumented */
    lock_acquire(LOCK_TYPES);
    struct type_record *record = lookup_record(type) ? NULL : new_record(type);
    if (record) {
        record->python_class = true;
        record->original_alloc = type->tp_alloc;
        type->tp_alloc = slot_alloc;
        instrument_free(record);
    }
    lock_release(LOCK_TYPES);
    if (record)
        extsan_log(2, "instrumented tp_alloc of Python class %s (derives from %s)", type->tp_name,
                   base->type->tp_name);
}

static PyObject *type_new_wrapper(PyTypeObject *metatype, PyObject *args, PyObject *kwds)
{
    PyObject *created = real_type_new(metatype, args, kwds);
    if (!created || !PyType_Check(created))
        return created;
    if (!subtype_dealloc)
        subtype_dealloc = ((PyTypeObject *)created)->tp_dealloc;
    if (extsan_options.track_instances && gil_held())
        python_class_created((PyTypeObject *)created);
    return created;
}

/* ---- registration by the hooks ------------------------------------------------------------------
 */

static void restore_stacks_after_fork(void);

/* C atexit runs after the interpreter's finalization: what is left is what outlived it. */
static void log_statistics_at_exit(void)
{
    registry_log_statistics("after finalization");
}

void registry_install(allocfunc generic_alloc)
{
    generic_alloc_hook = generic_alloc;
    if (!extsan_options.track_instances)
        return;
    PyTypeObject *type_type = python_api.type_type;
    if (type_type->tp_dealloc != type_dealloc_wrapper) {
        real_type_dealloc = type_type->tp_dealloc;
        type_type->tp_dealloc = type_dealloc_wrapper;
    }
    if (type_type->tp_new != type_new_wrapper) {
        real_type_new = type_type->tp_new;
        type_type->tp_new = type_new_wrapper;
    }
    atexit(log_statistics_at_exit);
    /*
     * After lifecycle's handler, which resets the stack depot (child handlers run in the order
     * they were registered, and lifecycle_start registers first).
     */
    pthread_atfork(NULL, NULL, restore_stacks_after_fork);
}

/*
 * A type of the runtime's (a static type in its data, which an extension may ready) or of a
 * standard library module: never registered. Its instances are never judged, and wrapping its
 * slots would only cost. GIL held.
 */
static bool is_runtime_or_stdlib_object(const char *object_path);

static bool is_runtime_or_stdlib_type(PyTypeObject *type, const void *creator_code)
{
    if (!(type->tp_flags & Py_TPFLAGS_HEAPTYPE) && address_in_python_runtime(type))
        return true;
    Dl_info creator;
    if (!creator_code || address_in_python_runtime(creator_code))
        return creator_code != NULL;
    return dladdr(creator_code, &creator) && creator.dli_fname &&
           is_runtime_or_stdlib_object(creator.dli_fname);
}

void registry_type_created(PyTypeObject *type, const void *caller)
{
    if (!type || !extsan_options.track_instances || !gil_held() ||
        is_runtime_or_stdlib_type(type, caller))
        return;
    lock_acquire(LOCK_TYPES);
    struct type_record *record = record_for(type);
    bool fresh = record && !record->hooked;
    if (fresh) {
        record->hooked = true;
        record->python_class = false;
        set_created_at(record, stack_capture_caller((unsigned)extsan_options.stack_depth));
        describe_registered_type(record, caller);
        instrument_slots(record);
    }
    lock_release(LOCK_TYPES);
    if (!record || !fresh)
        return; /* out of memory, or PyType_Ready of a type already registered */
    extsan_log(2, "registered type %s (%s%s) created by %s", type->tp_name,
               binding_library_name(record->binding),
               record->binding_machinery ? ", the library's own" : "", record->creator);
#if PY_VERSION_HEX < 0x030B0000
    /* 3.11+ refuses such a type with SystemError; 3.9/3.10 accept it and crash in gc.collect. */
    if ((type->tp_flags & Py_TPFLAGS_HAVE_GC) && !type->tp_traverse &&
        findings_record_type(FINDING_TRAVERSE_MISSING_GC, record))
        report_snapshot();
#endif
}

/* The nearest extension type of `type` that instances are registered under. */
static struct type_record *instance_type(PyTypeObject *type)
{
    for (; type; type = type->tp_base) {
        struct type_record *record = lookup_record(type);
        if (record && !record->dead && !record->python_class)
            return record;
    }
    return NULL;
}

/* Instances registered by this process (a forked child: since the fork); the instances' lock. */
static unsigned long registrations;
static unsigned generation; /* of this process's records: instance_record.generation */

/* The site of `key`, made if new; called with the instances' lock held, which it may release
   and take again. */
static inline __attribute__((always_inline)) site_id site_for(const struct site_key *key,
                                                              PyThreadState *thread, bool *locked)
{
    site_id site = site_lookup(key);
    if (!site) {
        /* A new site: its stacks are captured outside the lock (it calls into Python). */
        instances_end(*locked);
        site_id created = site_create(key, thread);
        instances_begin(thread, locked);
        site = created ? site_publish(key, created) : 0;
    }
    return site;
}

site_id registry_site_here(uintptr_t identity, PyThreadState *thread)
{
    struct site_key key = {.return_address = identity, .context = context_current()};
    python_position_now(thread, &key.python);
    bool locked;
    instances_begin(thread, &locked);
    site_id site = site_for(&key, thread, &locked);
    instances_end(locked);
    return site;
}

/*
 * Registers `object`, an instance of the extension type `type` (or of a class deriving from it).
 * Inlined into both callers: it is the whole of an allocation's registration.
 */
static inline __attribute__((always_inline)) void
register_instance(PyObject *object, struct type_record *type, uint32_t size, const void *caller,
                  enum registration how, PyThreadState *thread)
{
    if (__builtin_expect(object == forgotten_last, 0))
        forgotten_last = NULL;
    /* A class made by an extension metaclass: see registry.h for why its size is 0. */
    if (PyType_Check(object))
        size = 0;
    struct site_key key = {.return_address = (uintptr_t)caller, .context = context_current()};
    python_position_now(thread, &key.python);

    bool locked;
    instances_begin(thread, &locked);
    if (how == REGISTER_IF_ABSENT && instance_map_find(object)) {
        instances_end(locked);
        return;
    }
    site_id site = site_for(&key, thread, &locked);
    instance_map_put(object, type, site, size, generation, how == REGISTER_ALLOCATION);
    registrations++;
    instances_end(locked);
}

/*
 * Whether `object` may be registered now: not while its own dealloc runs on this thread (Cython
 * re-tracks the dying object before calling its base's dealloc). A fresh allocation at the
 * address being deallocated means that memory was freed and reused inside that dealloc: the
 * dealloc record no longer describes it.
 */
static bool may_register(PyObject *object, enum registration how)
{
    if (__builtin_expect(deallocating.object == object, 0)) {
        if (how == REGISTER_IF_ABSENT)
            return false;
        deallocating.object = NULL;
    }
    return true;
}

void registry_instance_seen(PyObject *object, uint32_t size, const void *caller,
                            enum registration how)
{
    if (!may_register(object, how))
        return;
    PyThreadState *thread = gil_attached_thread_state();
    if (!thread)
        return; /* allocating without the GIL is another bug, not this registry's */
    struct type_record *type = instance_type(Py_TYPE(object));
    if (type)
        register_instance(object, type, size, caller, how, thread);
}

/* ---- iteration and statistics -------------------------------------------------------------------
 */

struct instance_visit {
    void (*visit)(struct instance_record *instance, void *context);
    void *context;
};

static void visit_live_instance(struct instance_record *instance, void *context)
{
    struct instance_visit *visit = context;
    if (!instance->type->dead) /* its type died: a stale record of an object freed unseen */
        visit->visit(instance, visit->context);
}

void registry_for_each_instance(void (*visit)(struct instance_record *instance, void *context),
                                void *context)
{
    struct instance_visit state = {visit, context};
    bool locked;
    if (instances_begin(gil_attached_thread_state(), &locked)) {
        instance_map_for_each(visit_live_instance, &state);
        instances_end(locked);
    }
}

/* The statistics: any thread; without the GIL they may be a moment stale. */
size_t registry_instance_count(void)
{
    return instance_map_count();
}

unsigned long registry_registrations(void)
{
    return registrations;
}

unsigned registry_generation(void)
{
    return generation;
}

size_t registry_memory_bytes(void)
{
    size_t bytes = instance_map_bytes() + sites_memory_bytes();
    lock_acquire(LOCK_TYPES);
    bytes += type_table_bytes + type_record_count * sizeof(struct type_record) + judged_bytes;
    lock_release(LOCK_TYPES);
    return bytes;
}

void registry_log_statistics(const char *when)
{
    if (extsan_options.verbosity < 1 || !extsan_options.track_instances)
        return;
    size_t instances = registry_instance_count();
    size_t bytes = registry_memory_bytes();
    extsan_log(1,
               "registry %s: %zu live instances, %zu types, %zu allocation sites, %zu bytes "
               "(%.1f bytes per live instance)",
               when, instances, type_record_count, sites_count(), bytes,
               instances ? (double)bytes / (double)instances : 0.0);
}

/*
 * Fork: the child keeps every object, so it keeps the registry, but lifecycle resets the stack
 * depot in the child (the parent's stack ids are the parent's). The depot's memory itself is
 * inherited untouched, so every stack the registry refers to is read where it was and stored
 * again under a new id.
 */
static void restore_stacks_after_fork(void)
{
    atomic_flag_clear(&instances_busy);
    registrations = 0;
    generation = (generation + 1) % REGISTRY_GENERATIONS;
    for (struct type_record *record = first_record; record; record = record->next_created)
        if (record->created_at)
            set_created_at(record,
                           stack_depot_put(record->created_at_frames, record->created_at_depth));
    sites_restore_stacks_after_fork();
}

/* ---- the type walk ------------------------------------------------------------------------------
 */

/* An address in a loaded object that is neither the runtime nor extsan; NULL otherwise. */
static const void *extension_address(const void *address)
{
    const void *extsan;
    memcpy(&extsan, &(void (*)(struct pointer_set *)){registry_walk_types}, sizeof extsan);
    if (!address || address_in_python_runtime(address) || loaded_objects_same(address, extsan))
        return NULL;
    return address;
}

/*
 * The code that says where a type comes from: its own tp_dealloc, or if that is inherited (the
 * same as its base's) or extsan's wrapper, its own tp_traverse, then tp_new; for a static type
 * also the type object itself, which lies in the data of the module that defines it.
 */
static const void *type_origin(PyTypeObject *type)
{
    PyTypeObject *base = type->tp_base;
    if (type->tp_dealloc != slot_dealloc && (!base || type->tp_dealloc != base->tp_dealloc))
        return extension_address((const void *)type->tp_dealloc);
    const void *origin = NULL;
    if (type->tp_traverse && (!base || type->tp_traverse != base->tp_traverse))
        origin = extension_address((const void *)type->tp_traverse);
    if (!origin && type->tp_new && (!base || type->tp_new != base->tp_new))
        origin = extension_address((const void *)type->tp_new);
    if (!origin && !(type->tp_flags & Py_TPFLAGS_HEAPTYPE))
        origin = extension_address(type);
    return origin;
}

/*
 * Gives a type the walk visits the slot wrappers the hooks would have given it, so that the
 * deaths of its instances are seen. It matters when the walk runs long before the interpreter
 * ends (an analysis after each test, or extsan activated in a live interpreter): an instance
 * registered while its death goes unseen would stay in the registry, its record pointing at
 * freed memory for the next analysis to read. Visited after its bases (the walk goes down from
 * object), a type without a record of its own finds theirs instrumented already:
 * - a slot holding a copy of an instrumented ancestor's original (slots are inherited by copy
 *   when a type is readied) gets the wrapper and no original of its own, as if the type had
 *   been readied after its ancestor was instrumented: the wrapper finds that original by
 *   walking up from the object's type. Recording the copy as the type's own original would
 *   run it twice when it calls its base's slot;
 * - the other slots of a registered extension type (found by the walk now or before) are
 *   instrumented like a created type's;
 * - a class made by type.__new__ before extsan was there is instrumented like a new one.
 */
static void instrument_found_type(PyTypeObject *type)
{
    struct type_record *record = lookup_record(type);
    if (record && (record->dead || record->python_class || record->hooked))
        return;
    if (!record && (type->tp_flags & Py_TPFLAGS_HEAPTYPE) &&
        type->tp_alloc == python_api.generic_alloc && is_subtype_dealloc(type)) {
        python_class_created(type);
        return;
    }
    lock_acquire(LOCK_TYPES);
    struct type_record *owner = slot_owner(type->tp_base, WRAPPED_DEALLOC);
    if (owner && type->tp_dealloc && type->tp_dealloc == owner->original_dealloc)
        type->tp_dealloc = slot_dealloc;
    owner = slot_owner(type->tp_base, WRAPPED_ALLOC);
    if (owner && type->tp_alloc && type->tp_alloc == owner->original_alloc)
        type->tp_alloc = slot_alloc;
    if (record)
        instrument_slots(record);
    lock_release(LOCK_TYPES);
}

struct type_queue {
    PyTypeObject **items;
    size_t head, count, capacity;
};

static bool enqueue(struct type_queue *queue, PyTypeObject *type)
{
    if (queue->count == queue->capacity) {
        size_t capacity = queue->capacity ? 2 * queue->capacity : 256;
        PyTypeObject **items = realloc(queue->items, capacity * sizeof *items);
        if (!items)
            return false;
        queue->items = items;
        queue->capacity = capacity;
    }
    python_api.Py_IncRef((PyObject *)type); /* alive until visited, whatever the walk runs */
    queue->items[queue->count++] = type;
    return true;
}

void registry_walk_types(struct pointer_set *seen_types)
{
    if (!gil_held())
        return;
    struct pointer_set own = {0};
    struct pointer_set *seen = seen_types ? seen_types : &own;
    PyObject *error_type, *error_value, *error_traceback;
    python_api.PyErr_Fetch(&error_type, &error_value, &error_traceback);
    struct type_queue queue = {0};
    unsigned found = 0;
    if (pointer_set_add(seen, python_api.base_object_type))
        enqueue(&queue, python_api.base_object_type);
    for (; queue.head < queue.count; queue.head++) {
        PyTypeObject *type = queue.items[queue.head];
        if (!lookup_record(type)) {
            const void *origin = type_origin(type);
            if (origin && !is_runtime_or_stdlib_type(type, origin) &&
                registry_add_type(type, 0, origin)) {
                found++;
                extsan_log(2, "type walk: registered %s", type->tp_name);
            }
        }
        if (extsan_options.track_instances)
            instrument_found_type(type);
        /* type.__subclasses__(type): unbound, so that a metaclass's own method is not taken. */
        PyObject *subclasses = python_api.PyObject_CallMethod(
            (PyObject *)python_api.type_type, "__subclasses__", "O", (PyObject *)type);
        if (subclasses && PyList_Check(subclasses)) {
            /* ob_size, not PyList_GET_SIZE: its assert would reference PyLong_Type (3.12+). */
            PyListObject *list = (PyListObject *)subclasses;
            for (Py_ssize_t i = 0; i < list->ob_base.ob_size; i++) {
                PyObject *item = list->ob_item[i];
                if (PyType_Check(item) && pointer_set_add(seen, item))
                    enqueue(&queue, (PyTypeObject *)item);
            }
        } else {
            python_api.PyErr_Clear();
        }
        if (subclasses)
            python_api.Py_DecRef(subclasses);
    }
    for (size_t i = 0; i < queue.count; i++)
        python_api.Py_DecRef((PyObject *)queue.items[i]);
    free(queue.items);
    pointer_set_clear(&own);
    python_api.PyErr_Restore(error_type, error_value, error_traceback);
    extsan_log(1, "type walk: %zu types seen, %u extension types found outside the hooks",
               queue.count, found);
}

/* ---- runtime and standard library -------------------------------------------------------------
 * The standard library's directories are read from sys.base_prefix and sys.base_exec_prefix
 * (the installation's, also inside a virtual environment) plus lib/pythonX.Y: the layout of
 * every POSIX installation, pyenv's and Debian's alike (its extension modules are in
 * lib/pythonX.Y/lib-dynload). site-packages and dist-packages under them are third-party code.
 * sys is read rather than sysconfig imported: no Python code runs, and the answer is cached.
 */

static char runtime_path[PATH_MAX];
static char stdlib_dirs[2][PATH_MAX];
static bool stdlib_known;

static void resolve(const char *path, char *out)
{
    if (!realpath(path, out))
        snprintf(out, PATH_MAX, "%s", path);
}

static void learn_stdlib(void)
{
    if (stdlib_known)
        return;
    Dl_info info;
    if (dladdr((void *)python_api.is_initialized, &info) && info.dli_fname) {
        if (info.dli_fname[0] == '/')
            resolve(info.dli_fname, runtime_path);
        else
            resolve("/proc/self/exe", runtime_path);
    }
    if (!gil_held())
        return;
    static const char *const prefixes[2] = {"base_prefix", "base_exec_prefix"};
    for (unsigned i = 0; i < 2; i++) {
        PyObject *prefix = python_api.PySys_GetObject(prefixes[i]); /* borrowed */
        const char *text =
            prefix && PyUnicode_Check(prefix) ? python_api.PyUnicode_AsUTF8(prefix) : NULL;
        if (!text) {
            python_api.PyErr_Clear();
            continue;
        }
        char directory[PATH_MAX];
        snprintf(directory, sizeof directory, "%s/lib/python%d.%d", text, PY_MAJOR_VERSION,
                 PY_MINOR_VERSION);
        resolve(directory, stdlib_dirs[i]);
    }
    stdlib_known = true;
}

static bool judge_path(const char *object_path)
{
    char path[PATH_MAX];
    resolve(object_path, path);
    if (runtime_path[0] && !strcmp(path, runtime_path))
        return true;
    for (unsigned i = 0; i < 2; i++) {
        size_t length = strlen(stdlib_dirs[i]);
        if (length && !strncmp(path, stdlib_dirs[i], length) && path[length] == '/' &&
            !strstr(path + length, "/site-packages/") && !strstr(path + length, "/dist-packages/"))
            return true;
    }
    return false;
}

/*
 * True for a loaded object that belongs to the Python runtime or its standard library. Asked at
 * every type's creation, about a handful of distinct paths: answers are cached by content
 * (realpath costs a few system calls). Under the GIL, like every caller.
 */
static bool is_runtime_or_stdlib_object(const char *object_path)
{
    static struct {
        char *path;
        bool answer;
    } answers[64];
    static unsigned answer_count;
    learn_stdlib();
    if (!object_path || !object_path[0])
        return false;
    for (unsigned i = 0; i < answer_count; i++)
        if (!strcmp(answers[i].path, object_path))
            return answers[i].answer;
    bool answer = judge_path(object_path);
    if (stdlib_known && answer_count < sizeof answers / sizeof answers[0] &&
        (answers[answer_count].path = strdup(object_path)))
        answers[answer_count++].answer = answer;
    return answer;
}
