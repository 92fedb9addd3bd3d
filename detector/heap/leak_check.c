#define _GNU_SOURCE
#include "leak_check.h"

#include "findings.h"
#include "gc_generations.h"
#include "gil.h"
#include "log.h"
#include "memory_map.h"
#include "pointer_set.h"
#include "python_stack.h"
#include "python_api.h"
#include "registry.h"
#include "stacks.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPETITIONS  64 /* measured ones; more are measured as the 64th */
#define SITE_STACK_DEPTH 24 /* frames that tell one allocating call path from another */

/* ---- the blocks allocated during the measured repetitions -----------------------------------
 * Open addressing keyed by the block's address, linear probing, backward-shift deletion (no
 * tombstones: a check frees as many blocks as it makes). Memory from libc, never from the
 * allocator being wrapped.
 */

struct block {
    void *address; /* NULL: empty */
    site_id site;
    uint32_t repetition; /* 1 for the first measured one */
    bool from_allocator; /* recorded by the allocator, no object made in it since */
};

static struct {
    struct block *slots;
    size_t capacity, count; /* capacity a power of two, at most half full */
} blocks;

static size_t block_home(const void *address, size_t capacity)
{
    return (size_t)(((uint64_t)(uintptr_t)address * 0x9E3779B97F4A7C15ull) >> 20) & (capacity - 1);
}

static struct block *block_slot(const void *address)
{
    size_t mask = blocks.capacity - 1;
    for (size_t i = block_home(address, blocks.capacity);; i = (i + 1) & mask)
        if (!blocks.slots[i].address || blocks.slots[i].address == address)
            return &blocks.slots[i];
}

static bool blocks_make_room(void)
{
    if (blocks.capacity && (blocks.count + 1) * 2 <= blocks.capacity)
        return true;
    size_t capacity = blocks.capacity ? blocks.capacity * 2 : 4096;
    struct block *old = blocks.slots, *grown = calloc(capacity, sizeof *grown);
    if (!grown)
        return false;
    size_t old_capacity = blocks.capacity;
    blocks.slots = grown, blocks.capacity = capacity;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].address)
            *block_slot(old[i].address) = old[i];
    free(old);
    return true;
}

static void blocks_forget(const void *address)
{
    if (!blocks.count || !address)
        return;
    struct block *slot = block_slot(address);
    if (!slot->address)
        return;
    size_t mask = blocks.capacity - 1, hole = (size_t)(slot - blocks.slots);
    slot->address = NULL;
    blocks.count--;
    /* Backward shift: an entry after the hole moves into it unless its home lies cyclically in
       (hole, its slot]. */
    for (size_t i = (hole + 1) & mask; blocks.slots[i].address; i = (i + 1) & mask) {
        size_t home = block_home(blocks.slots[i].address, blocks.capacity);
        bool stays = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
        if (stays)
            continue;
        blocks.slots[hole] = blocks.slots[i];
        blocks.slots[i].address = NULL;
        hole = i;
    }
}

static void blocks_clear(void)
{
    free(blocks.slots);
    blocks.slots = NULL;
    blocks.capacity = blocks.count = 0;
}

/* ---- the wrapped object allocator ----------------------------------------------------------- */

static PyMemAllocatorEx wrapped; /* the allocator the check wraps, called for every block */
static bool wrapping;            /* ours is installed (it stays so if another wrapped it) */
static bool running;             /* a check is between begin and end */
static unsigned repetition;      /* 0: the warm-up or no check, not recorded */
static bool in_hook;             /* recording a block: its own allocations are not recorded */
/* The interpreter the check runs in. A subinterpreter's objects live in its own heap, which
   the survey does not see (pybind11's test_independent_subinterpreters): they are not recorded. */
static PyInterpreterState *checked_interpreter;

/* The allocation site of the block being made: native stack and Python position. */
static site_id site_here(PyThreadState *thread)
{
    uintptr_t pcs[SITE_STACK_DEPTH];
    unsigned depth = stack_capture(pcs, SITE_STACK_DEPTH, 0);
    uint64_t identity = 0xcbf29ce484222325ull;
    for (unsigned i = 0; i < depth; i++)
        identity = (identity ^ pcs[i]) * 0x100000001b3ull;
    return registry_site_here((uintptr_t)identity, thread);
}

static void record_block(void *address, bool from_allocator)
{
    if (!address || !repetition || in_hook)
        return;
    PyThreadState *thread = gil_attached_thread_state();
    if (!thread || thread->interp != checked_interpreter)
        return;
    in_hook = true;
    site_id site = site_here(thread);
    if (blocks_make_room()) {
        struct block *slot = block_slot(address);
        if (!slot->address)
            blocks.count++;
        *slot = (struct block){.address = address,
                               .site = site,
                               .repetition =
                                   repetition < MAX_REPETITIONS ? repetition : MAX_REPETITIONS,
                               .from_allocator = from_allocator};
    }
    in_hook = false;
}

static void *hook_malloc(void *context, size_t size)
{
    (void)context;
    void *address = wrapped.malloc(wrapped.ctx, size);
    record_block(address, true);
    return address;
}

static void *hook_calloc(void *context, size_t count, size_t size)
{
    (void)context;
    void *address = wrapped.calloc(wrapped.ctx, count, size);
    record_block(address, true);
    return address;
}

static void *hook_realloc(void *context, void *old, size_t size)
{
    (void)context;
    void *address = wrapped.realloc(wrapped.ctx, old, size);
    if (address) {
        blocks_forget(old);
        record_block(address, true);
    }
    return address;
}

static void hook_free(void *context, void *address)
{
    (void)context;
    blocks_forget(address);
    wrapped.free(wrapped.ctx, address);
}

static PyMemAllocatorEx hook = {NULL, hook_malloc, hook_calloc, hook_realloc, hook_free};

static size_t pre_header_size(PyTypeObject *type);

#if PY_VERSION_HEX >= 0x030D0000
/*
 * An object the runtime takes from a free list (lists, tuples, dicts, floats...) gets no block
 * from the allocator: its block keeps the site of the object that had it first, which may be
 * other code (a list a C function returns, recorded where Python code built a list that died).
 * The reference tracer (3.13+) is told of every object made, free lists included: a block whose
 * object is made anew, with no allocation since the last one, is recorded again, at the code
 * making it now. Only blocks the allocator gave during the check: an object made in memory
 * from elsewhere (a free list filled before it, another allocator) has no block whose free
 * extsan would see. The tracer is ours only during a check; one the program had is called from
 * ours.
 */
static PyRefTracer program_tracer;
static void *program_tracer_data;
static bool tracing;

static int on_reference_event(PyObject *object, PyRefTracerEvent event, void *data)
{
    (void)data;
    PyThreadState *thread =
        event == PyRefTracer_CREATE && repetition && !in_hook ? gil_attached_thread_state() : NULL;
    /* Only the checked interpreter's objects: another one's may be made under its own GIL. */
    if (thread && thread->interp == checked_interpreter) {
        void *block = (char *)object - pre_header_size(Py_TYPE(object));
        struct block *slot = blocks.capacity ? block_slot(block) : NULL;
        if (slot && slot->address && slot->from_allocator)
            slot->from_allocator = false; /* the object the allocation was for */
        else if (slot && slot->address)
            record_block(block, false);
    }
    return program_tracer ? program_tracer(object, event, program_tracer_data) : 0;
}

static void trace_objects_made(void)
{
    if (tracing || !python_api.ref_tracer_set || !python_api.ref_tracer_get)
        return;
    program_tracer = python_api.ref_tracer_get(&program_tracer_data);
    tracing = python_api.ref_tracer_set(on_reference_event, NULL) == 0;
}

static void stop_tracing_objects_made(void)
{
    void *data;
    if (tracing && python_api.ref_tracer_get(&data) == on_reference_event)
        python_api.ref_tracer_set(program_tracer, program_tracer_data);
    tracing = false;
}
#else
static void trace_objects_made(void) {}
static void stop_tracing_objects_made(void) {}
#endif

bool leak_check_begin(void)
{
    if (running || !python_api.PyMem_GetAllocator || !python_api.PyMem_SetAllocator)
        return false;
    if (!wrapping) {
        python_api.PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &wrapped);
        python_api.PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &hook);
        wrapping = true;
    }
    PyThreadState *thread = gil_attached_thread_state();
    checked_interpreter = thread ? thread->interp : NULL;
    trace_objects_made();
    running = true;
    repetition = 0;
    return true;
}

/*
 * Threads the measured repetitions start and leave running (a ThreadPoolExecutor never shut
 * down) hold what they made on their value stacks and in C-level state no traverse shows: their
 * objects would look leaked. Such a check reports nothing, and says why (leak_check_skipped).
 */
#define TRACKED_THREADS 256
struct thread_identity {
    const PyThreadState *state;
    unsigned long id; /* 0 until the thread it was made for runs */
};
static struct thread_identity threads_before[TRACKED_THREADS];
static size_t threads_before_count;
static const char *skipped; /* why the last check reported nothing, or NULL */

/*
 * The threads of the checked interpreter, up to `max`; how many there are. Counted by their
 * thread states, not by the frames they run: a thread holds what it was started with from before
 * its first frame (waiting for the GIL) until after its last (its bootstrap releases it), and a
 * test that waits for a thread by its count (_thread._count) may not wait for either. Walked with
 * the GIL held, under which a thread state is neither unlinked nor freed.
 */
static size_t existing_threads(struct thread_identity *threads, size_t max)
{
    size_t count = 0;
    for (PyThreadState *state = python_api.PyInterpreterState_ThreadHead(checked_interpreter);
         state; state = python_api.PyThreadState_Next(state)) {
        if (count < max)
            threads[count] = (struct thread_identity){state, state->thread_id};
        count++;
    }
    return count;
}

static bool repetitions_left_threads(void)
{
    struct thread_identity now[TRACKED_THREADS];
    size_t count = existing_threads(now, TRACKED_THREADS);
    if (count > TRACKED_THREADS || threads_before_count > TRACKED_THREADS)
        return count > threads_before_count;
    for (size_t i = 0; i < count; i++) {
        bool known = false;
        for (size_t j = 0; j < threads_before_count && !known; j++)
            known = now[i].state == threads_before[j].state && now[i].id == threads_before[j].id;
        if (!known)
            return true;
    }
    return false;
}

const char *leak_check_skipped(void)
{
    return skipped;
}

void leak_check_next(void)
{
    if (!running)
        return;
    /* A full collection empties the runtime's free lists (of lists, tuples, dicts, floats...):
       an object the measured repetition makes then comes from the allocator, where the check
       sees it, or from a block freed within the same repetition, which it saw allocated. */
    unsigned next = repetition + 1;
    repetition = 0;
    if (next == 1) {
        gc_set_aside_heap(checked_interpreter);
        threads_before_count = existing_threads(threads_before, TRACKED_THREADS);
    }
    python_api.PyGC_Collect();
    repetition = next;
}

/* ---- the survivors ------------------------------------------------------------------------- */

/* Bytes an object's allocation holds before it: the collector's header, and from 3.11 on the
   managed dict's (and from 3.12 the managed weak list's) two words. */
static size_t pre_header_size(PyTypeObject *type)
{
    size_t size = PyType_IS_GC(type) ? 2 * sizeof(uintptr_t) : 0;
#if defined(Py_TPFLAGS_PREHEADER)
    if (type->tp_flags & Py_TPFLAGS_PREHEADER)
        size += 2 * sizeof(PyObject *);
#elif defined(Py_TPFLAGS_MANAGED_DICT)
    if (type->tp_flags & Py_TPFLAGS_MANAGED_DICT)
        size += 2 * sizeof(PyObject *);
#endif
    return size;
}

struct survivor {
    PyObject *object;
    site_id site;
    uint32_t repetition;
    Py_ssize_t explained; /* references a visible or hidden referrer holds */
    bool foreign;         /* something made before the measured repetitions refers to it */
    /* The tally of the referrer being surveyed (survey.referrer; another number: stale): the
       references its traverse shows, the items it lists (a dict), the words of the memory it
       knows that point here, and those of the memory it does not know (fields a C subclass
       added). */
    uint32_t referrer;
    uint32_t shown, listed, pointed, hidden;
};

struct survey {
    struct memory_map *memory;
    struct pointer_set live_types;
    struct survivor *survivors;
    size_t count;
    /* object -> index + 1 in survivors: open addressing over survivor indexes */
    uint32_t *index;
    size_t index_mask;
    struct pointer_set untracked_seen; /* untracked containers queued for their traverse */
    struct pointer_set fields_read;    /* objects outside the collector whose words were read */
    PyObject **untracked;
    size_t untracked_count, untracked_capacity;
    /* the referrer being surveyed: its number (from 1), whether it is a survivor itself, and
       the survivors it holds (at most all of them) */
    uint32_t referrer;
    bool current_is_survivor;
    struct survivor **tallied;
    size_t tallied_count;
};

/* The live object a recorded block holds, or NULL. */
static PyObject *object_in_block(const struct survey *survey, void *block)
{
    static const size_t offsets[] = {0, 2 * sizeof(uintptr_t), 4 * sizeof(uintptr_t)};
    for (unsigned i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        uintptr_t address = (uintptr_t)block + offsets[i];
        if (!memory_map_readable(survey->memory, address, sizeof(PyObject)))
            continue;
        PyTypeObject *type = Py_TYPE((PyObject *)address);
        if (!pointer_set_contains(&survey->live_types, type) || pre_header_size(type) != offsets[i])
            continue;
        PyObject *object = (PyObject *)address;
        Py_ssize_t refcount = Py_REFCNT(object);
        if (refcount < 1 || refcount > (Py_ssize_t)UINT32_MAX || object_is_immortal(object))
            return NULL;
        return object;
    }
    return NULL;
}

static struct survivor *survivor_of(const struct survey *survey, const void *object)
{
    for (size_t i = block_home(object, survey->index_mask + 1);; i = (i + 1) & survey->index_mask) {
        uint32_t entry = survey->index[i];
        if (!entry)
            return NULL;
        if (survey->survivors[entry - 1].object == object)
            return &survey->survivors[entry - 1];
    }
}

static bool collect_survivors(struct survey *survey)
{
    survey->survivors = malloc((blocks.count + 1) * sizeof *survey->survivors);
    size_t capacity = 16;
    while (capacity < 2 * (blocks.count + 1))
        capacity *= 2;
    survey->index = calloc(capacity, sizeof *survey->index);
    survey->index_mask = capacity - 1;
    survey->tallied = malloc((blocks.count + 1) * sizeof *survey->tallied);
    if (!survey->survivors || !survey->index || !survey->tallied)
        return false;
    for (size_t i = 0; i < blocks.capacity; i++) {
        const struct block *block = &blocks.slots[i];
        PyObject *object = block->address ? object_in_block(survey, block->address) : NULL;
        if (!object || survivor_of(survey, object))
            continue;
        survey->survivors[survey->count] = (struct survivor){
            .object = object, .site = block->site, .repetition = block->repetition};
        size_t slot = block_home(object, capacity);
        while (survey->index[slot])
            slot = (slot + 1) & survey->index_mask;
        survey->index[slot] = (uint32_t)++survey->count;
    }
    return true;
}

/* ---- what explains their references ---------------------------------------------------------- */

/* The words of `object` after its header, `extent` bytes from its start (readable), that point
   at survivors: references held by a survivor or by something older. */
static void explain_words(struct survey *survey, PyObject *object, size_t extent,
                          bool object_is_survivor)
{
    for (size_t offset = sizeof(PyObject); offset + sizeof(void *) <= extent;
         offset += sizeof(void *)) {
        struct survivor *survivor =
            survivor_of(survey, *(void *const *)((uintptr_t)object + offset));
        if (survivor) {
            survivor->explained++;
            survivor->foreign |= !object_is_survivor;
        }
    }
}

/*
 * A referent that takes no part in the collector (a code object, functools' lru_cache entries)
 * holds references no traverse shows: its words that point at survivors are read as references,
 * once per object. A word that only looks like one explains a reference too many: a leak missed,
 * never one made up. A str holds no reference and is not read: a compact one is allocated smaller
 * than its type's basic size (its characters follow its header), and the words past its end are
 * stale memory of the allocator's block, where an old pointer would hide a leak.
 */
static void explain_from_fields(struct survey *survey, PyObject *object, bool object_is_survivor)
{
    PyTypeObject *type = Py_TYPE(object);
    size_t extent = (size_t)type->tp_basicsize;
    if (PyType_IS_GC(type) || PyType_Check(object) || PyUnicode_Check(object) ||
        extent <= sizeof(PyObject) || pointer_set_contains(&survey->fields_read, object) ||
        !pointer_set_add(&survey->fields_read, object) ||
        !memory_map_readable(survey->memory, (uintptr_t)object, extent))
        return;
    explain_words(survey, object, extent, object_is_survivor);
}

/* `survivor`'s tally for the referrer being surveyed, reset when it is stale. */
static struct survivor *tally(struct survey *survey, struct survivor *survivor)
{
    if (survivor->referrer != survey->referrer) {
        survivor->referrer = survey->referrer;
        survivor->shown = survivor->listed = survivor->pointed = survivor->hidden = 0;
        survey->tallied[survey->tallied_count++] = survivor;
    }
    return survivor;
}

static int visit_referent(PyObject *target, void *context)
{
    struct survey *survey = context;
    if (!target)
        return 0;
    struct survivor *survivor = survivor_of(survey, target);
    if (survivor)
        tally(survey, survivor)->shown++;
    explain_from_fields(survey, target, survivor != NULL);
    /* The collector untracks a dict or tuple of atomic items: its references are seen only
       by following it from a referrer. */
    PyTypeObject *type = Py_TYPE(target);
    if (PyType_IS_GC(type) && type->tp_traverse && !PyType_Check(target) &&
        !python_api.PyObject_GC_IsTracked(target) &&
        !pointer_set_contains(&survey->untracked_seen, target) &&
        pointer_set_add(&survey->untracked_seen, target)) {
        if (survey->untracked_count == survey->untracked_capacity) {
            size_t capacity = survey->untracked_capacity ? survey->untracked_capacity * 2 : 256;
            PyObject **grown = realloc(survey->untracked, capacity * sizeof *grown);
            if (!grown)
                return 0;
            survey->untracked = grown, survey->untracked_capacity = capacity;
        }
        survey->untracked[survey->untracked_count++] = target;
    }
    return 0;
}

/* The bytes of a type's instances that its traverse knows: the basic size of the base that
   defines the traverse. A C subclass that inherits its base's traverse (ctypes' StgDict, a dict)
   adds fields that the traverse does not show. */
static size_t traversed_extent(PyTypeObject *type)
{
    PyTypeObject *definer = type;
    while (definer->tp_base && definer->tp_base->tp_traverse == type->tp_traverse)
        definer = definer->tp_base;
    return (size_t)definer->tp_basicsize;
}

static void begin_referrer(struct survey *survey, bool is_survivor)
{
    survey->referrer++;
    survey->tallied_count = 0;
    survey->current_is_survivor = is_survivor;
}

/* What the referrer holds to each survivor it was seen to hold: the largest of the counts that
   may see the same reference twice, and the fields no other count sees. */
static void end_referrer(struct survey *survey)
{
    for (size_t i = 0; i < survey->tallied_count; i++) {
        struct survivor *survivor = survey->tallied[i];
        uint32_t known = survivor->shown;
        known = survivor->listed > known ? survivor->listed : known;
        known = survivor->pointed > known ? survivor->pointed : known;
        survivor->explained += known + survivor->hidden;
        survivor->foreign |= !survey->current_is_survivor;
    }
}

/*
 * What a collected object holds to each survivor: the references its traverse shows; for a
 * dict, its keys and values (its traverse leaves out str keys, which cannot make a cycle); and
 * the words of its memory (its type's basic size) that point there, and its managed dict, a word
 * before it. Within the memory its traverse knows, a field the traverse shows is also a word: the
 * larger count holds. The words past it are references the traverse cannot show, counted on top. A
 * frame object's words are not read: from 3.11 its memory past the header holds its frame only once
 * the frame has ended, and until then stale words (whose addresses leaked objects may have taken
 * since); its traverse shows all it holds.
 */
static void survey_referrer(struct survey *survey, PyObject *referrer)
{
    PyTypeObject *type = Py_TYPE(referrer);
    begin_referrer(survey, survivor_of(survey, referrer) != NULL);
    if (type->tp_traverse)
        type->tp_traverse(referrer, visit_referent, survey);
    PyObject *managed_dict = object_managed_dict(referrer);
    struct survivor *dict = managed_dict ? survivor_of(survey, managed_dict) : NULL;
    if (dict)
        tally(survey, dict)->pointed++;
    if (PyDict_Check(referrer)) {
        Py_ssize_t position = 0;
        PyObject *key, *value;
        while (python_api.PyDict_Next(referrer, &position, &key, &value)) {
            struct survivor *survivor = survivor_of(survey, key);
            if (survivor)
                tally(survey, survivor)->listed++;
            if ((survivor = survivor_of(survey, value)))
                tally(survey, survivor)->listed++;
        }
    }
    size_t extent = (size_t)type->tp_basicsize, known = traversed_extent(type);
    if (type != python_api.frame_type &&
        memory_map_readable(survey->memory, (uintptr_t)referrer, extent))
        for (size_t offset = sizeof(PyObject); offset + sizeof(void *) <= extent;
             offset += sizeof(void *)) {
            struct survivor *survivor =
                survivor_of(survey, *(void *const *)((uintptr_t)referrer + offset));
            if (survivor && offset < known)
                tally(survey, survivor)->pointed++;
            else if (survivor)
                tally(survey, survivor)->hidden++;
        }
    end_referrer(survey);
}

/* A word of a running frame's value stack, which may be stale: a reference only to a survivor,
   which is known to be live. */
static void visit_stack_word(void *word, void *context)
{
    struct survey *survey = context;
    if (survivor_of(survey, word))
        visit_referent(word, survey);
}

/*
 * What the frames every thread runs hold: each thread's frames a referrer from before the
 * repetitions (the program's roots). The value stacks of other threads' frames hold what their
 * calls in progress were given (work a test left running); those of this thread's frames are not
 * read. They are the checker's callers, which hold nothing the repetitions made, while their
 * stale words hold addresses of freed objects that leaked ones may have taken since.
 */
static void survey_running_frames(struct survey *survey)
{
    PyObject *frames = python_call_module_function("sys", "_current_frames");
    unsigned long checking = python_api.unchecked_thread_state()->thread_id;
    Py_ssize_t position = 0;
    PyObject *thread, *frame;
    while (frames && PyDict_Check(frames) &&
           python_api.PyDict_Next(frames, &position, &thread, &frame)) {
        bool other = python_api.PyLong_AsUnsignedLong(thread) != checking;
        begin_referrer(survey, false);
        python_running_frames(frame, visit_referent, other ? visit_stack_word : NULL, survey);
        end_referrer(survey);
    }
    if (frames)
        python_api.Py_DecRef(frames);
    python_api.PyErr_Clear();
}

static bool explain_visible(struct survey *survey)
{
    PyObject *tracked = gc_tracked_objects();
    bool done = tracked && PyList_Check(tracked);
    for (Py_ssize_t i = 0; done && i < PyList_GET_SIZE(tracked); i++) {
        PyObject *object = PyList_GET_ITEM(tracked, i);
        survey_referrer(survey, object);
    }
    if (done)
        survey_running_frames(survey);
    for (size_t i = 0; done && i < survey->untracked_count; i++)
        survey_referrer(survey, survey->untracked[i]);
    if (tracked)
        python_api.Py_DecRef(tracked);
    python_api.PyErr_Clear();
    return done;
}

/* The words of extension instances outside the collector that point at survivors: references
   nothing traverses (a collected one's words were read with its traverse). */
static void explain_hidden_from(struct instance_record *instance, void *context)
{
    struct survey *survey = context;
    PyObject *holder = instance->object;
    if (!memory_map_readable(survey->memory, (uintptr_t)holder, sizeof(PyObject)) ||
        !pointer_set_contains(&survey->live_types, Py_TYPE(holder)) ||
        python_api.PyObject_GC_IsTracked(holder) ||
        pointer_set_contains(&survey->untracked_seen, holder))
        return;
    size_t extent = instance->size ? instance->size : (size_t)Py_TYPE(holder)->tp_basicsize;
    if (extent > (size_t)Py_TYPE(holder)->tp_basicsize)
        extent = (size_t)Py_TYPE(holder)->tp_basicsize;
    if (!memory_map_readable(survey->memory, (uintptr_t)holder, extent))
        return;
    explain_words(survey, holder, extent, survivor_of(survey, holder) != NULL);
}

/* ---- leaks: unexplained survivors, in every measured repetition, per type and site -------- */

static bool leaked(const struct survivor *survivor)
{
    return !survivor->foreign && Py_REFCNT(survivor->object) > survivor->explained;
}

static int compare_by_type_and_site(const void *left, const void *right)
{
    const struct survivor *a = left, *b = right;
    uintptr_t type_a = (uintptr_t)Py_TYPE(a->object), type_b = (uintptr_t)Py_TYPE(b->object);
    if (type_a != type_b)
        return (type_a > type_b) - (type_a < type_b);
    if (a->site != b->site)
        return (a->site > b->site) - (a->site < b->site);
    return (a->repetition > b->repetition) - (a->repetition < b->repetition);
}

/* Records the group survivors[first, end) (same type and site, all leaked) when it has members
   in every measured repetition. */
static bool report_group(const struct survivor *group, size_t count, unsigned measured)
{
    unsigned per_repetition[MAX_REPETITIONS + 1] = {0};
    for (size_t i = 0; i < count; i++)
        per_repetition[group[i].repetition]++;
    unsigned least = UINT32_MAX;
    for (unsigned r = 1; r <= measured && r <= MAX_REPETITIONS; r++)
        least = per_repetition[r] < least ? per_repetition[r] : least;
    if (!least || least == UINT32_MAX)
        return false;
    const struct survivor *example = &group[count - 1]; /* of the last repetition */
    return findings_record_leak(Py_TYPE(example->object)->tp_name, example->site, least, measured,
                                (long)(Py_REFCNT(example->object) - example->explained)) != NULL;
}

static unsigned report_leaks(struct survey *survey, unsigned measured)
{
    size_t kept = 0;
    for (size_t i = 0; i < survey->count; i++)
        if (leaked(&survey->survivors[i]))
            survey->survivors[kept++] = survey->survivors[i];
    qsort(survey->survivors, kept, sizeof *survey->survivors, compare_by_type_and_site);
    unsigned findings = 0;
    for (size_t first = 0, end; first < kept; first = end) {
        for (end = first + 1;
             end < kept &&
             Py_TYPE(survey->survivors[end].object) == Py_TYPE(survey->survivors[first].object) &&
             survey->survivors[end].site == survey->survivors[first].site;
             end++)
            ;
        findings += report_group(&survey->survivors[first], end - first, measured);
    }
    return findings;
}

/* Whether the survivors of some type and site span every measured repetition. Without one no
   leak can be reported, and the pass over the whole heap that explains references is skipped
   (most tests leave nothing, or only what a cache keeps once). */
static bool some_group_spans_repetitions(const struct survey *survey, unsigned measured)
{
    unsigned wanted = measured < MAX_REPETITIONS ? measured : MAX_REPETITIONS;
    struct survivor *sorted = malloc((survey->count + 1) * sizeof *sorted);
    if (!sorted)
        return true;
    memcpy(sorted, survey->survivors, survey->count * sizeof *sorted);
    qsort(sorted, survey->count, sizeof *sorted, compare_by_type_and_site);
    bool spans = false;
    for (size_t i = 0, distinct = 0; i < survey->count && !spans; i++) {
        bool same_group = i > 0 && Py_TYPE(sorted[i - 1].object) == Py_TYPE(sorted[i].object) &&
                          sorted[i - 1].site == sorted[i].site;
        if (!same_group)
            distinct = 1;
        else if (sorted[i - 1].repetition != sorted[i].repetition)
            distinct++;
        spans = distinct == wanted;
    }
    free(sorted);
    return spans;
}

/* The survey after `measured` repetitions (2 or more): the findings it recorded. */
static unsigned survey_survivors(unsigned measured)
{
    /* The type attribute cache keeps the name of each lookup alive, hashed by its address: a
       name made per call (PyObject_GetAttrString) would look leaked. It refills on its own. */
    python_api.PyType_ClearCache();
    python_api.PyGC_Collect();
    gc_put_heap_back(); /* the survey reads every collected object */
    if (repetitions_left_threads()) {
        skipped = "threads its repetitions started still run";
        return 0;
    }
    struct survey survey = {0};
    unsigned findings = 0;
    survey.memory = memory_map_load();
    registry_walk_types(&survey.live_types);
    bool collected = survey.memory && collect_survivors(&survey);
    bool may_leak = collected && some_group_spans_repetitions(&survey, measured);
    if (may_leak && explain_visible(&survey)) {
        registry_for_each_instance(explain_hidden_from, &survey);
        findings = report_leaks(&survey, measured);
    } else if (!collected || may_leak) {
        extsan_log(0, "the reference-leak check could not run (no memory map, or out of memory)");
    }
    extsan_log(1, "reference-leak check: %u measured repetitions, %zu survivors, %u findings",
               measured, survey.count, findings);
    free(survey.survivors);
    free(survey.index);
    free(survey.untracked);
    free(survey.tallied);
    pointer_set_clear(&survey.untracked_seen);
    pointer_set_clear(&survey.fields_read);
    pointer_set_clear(&survey.live_types);
    memory_map_free(survey.memory);
    return findings;
}

/* Ends a check; with `survey`, looks for leaks after its measured repetitions. */
static unsigned end_check(bool survey)
{
    if (!running)
        return 0;
    unsigned measured = repetition;
    repetition = 0; /* nothing more is recorded; frees still forget */
    skipped = NULL;
    unsigned findings = 0;
    /* One measured repetition cannot tell a leak from a cache that keeps only its latest value;
       with none, there is nothing to survey. */
    if (survey && measured == 1)
        extsan_log(0, "the reference-leak check needs 2 measured repetitions or more, not 1");
    else if (survey && measured >= 2)
        findings = survey_survivors(measured);
    gc_put_heap_back();
    stop_tracing_objects_made();
    blocks_clear();
    /* Unwrapped unless someone wrapped ours meanwhile (tracemalloc started during the check):
       then ours stays under theirs, passing every call through. */
    PyMemAllocatorEx current;
    python_api.PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &current);
    if (current.malloc == hook_malloc) {
        python_api.PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &wrapped);
        wrapping = false;
    }
    running = false;
    return findings;
}

unsigned leak_check_end(void)
{
    return end_check(true);
}

void leak_check_cancel(void)
{
    end_check(false);
}
