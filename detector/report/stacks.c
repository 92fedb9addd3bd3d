/*
 * Stack capture and the stack depot.
 *
 * The depot stores each distinct stack once. A stack's id is its index in an append-only table
 * plus one, so a lookup by id is two array reads and needs no lock: the table is a fixed array
 * of chunk pointers, each chunk an array of record pointers, and a record never moves or changes
 * once its pointer is published (release store, read with an acquire load). Writers serialise on
 * one mutex and find an existing copy through a chained hash table of ids, which only they touch.
 *
 * All memory comes from mmap, never malloc: hooks may run inside an allocator or with the heap
 * in any state, and growth stays bounded by DEPOT_MAX_STACKS. Running out of memory or of ids
 * makes stack_depot_put return 0 ("no stack"), never crash.
 */
#define _GNU_SOURCE
#define UNW_LOCAL_ONLY

#include "stacks.h"
#include "locks.h"

#include "symbolize.h"

#include <libunwind.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

/* ---------------------------------------------------------------------------------------------
 * Capture
 */

/*
 * Room for the frames kept plus the frames dropped. A skip so large that it does not fit leaves
 * fewer frames rather than wrong ones.
 */
#define CAPTURE_BUFFER_FRAMES (STACK_MAX_DEPTH + 64)

/*
 * noinline: the first frame unw_backtrace reports is the one that calls it, which must be this
 * function for "drop our own frame" to drop exactly one frame of ours and none of the caller's.
 */
__attribute__((noinline)) unsigned stack_capture(uintptr_t *pcs, unsigned max_depth, unsigned skip)
{
    void *frames[CAPTURE_BUFFER_FRAMES];
    if (pcs == NULL || max_depth == 0 || skip >= CAPTURE_BUFFER_FRAMES - 1)
        return 0;
    if (max_depth > STACK_MAX_DEPTH)
        max_depth = STACK_MAX_DEPTH;

    unsigned dropped = 1 + skip;
    unsigned wanted = dropped + max_depth;
    if (wanted > CAPTURE_BUFFER_FRAMES)
        wanted = CAPTURE_BUFFER_FRAMES;
    int captured = unw_backtrace(frames, (int)wanted);
    if (captured <= (int)dropped)
        return 0;

    unsigned kept = (unsigned)captured - dropped;
    for (unsigned i = 0; i < kept; i++)
        pcs[i] = (uintptr_t)frames[dropped + i];
    return kept;
}

unsigned stack_capture_interrupted(void *ucontext, uintptr_t *pcs, unsigned max_depth)
{
    unw_cursor_t cursor;
    if (!pcs || !ucontext ||
        unw_init_local2(&cursor, (unw_context_t *)ucontext, UNW_INIT_SIGNAL_FRAME) < 0)
        return 0;
    if (max_depth > STACK_MAX_DEPTH)
        max_depth = STACK_MAX_DEPTH;
    unsigned depth = 0;
    do {
        unw_word_t pc;
        if (unw_get_reg(&cursor, UNW_REG_IP, &pc) < 0 || pc == 0)
            break;
        pcs[depth++] = (uintptr_t)pc;
    } while (depth < max_depth && unw_step(&cursor) > 0);
    return depth;
}

stack_id stack_capture_caller(unsigned max_depth)
{
    uintptr_t pcs[STACK_MAX_DEPTH];
    unsigned depth = stack_capture(pcs, STACK_MAX_DEPTH, 0);
    unsigned first = 0;
    while (first < depth && pc_in_same_object(pcs[first], (const void *)stack_capture_caller))
        first++;
    unsigned kept = depth - first;
    if (kept > max_depth)
        kept = max_depth;
    return stack_depot_put(pcs + first, kept);
}

/* ---------------------------------------------------------------------------------------------
 * Depot
 */

/*
 * Ids are 1 .. DEPOT_MAX_STACKS: 256 chunks of 4096 records, ~10x the stacks expected. That caps
 * the records at ~1 GiB even if every stack were 128 frames deep; typical stacks need ~300 B.
 */
#define DEPOT_CHUNK_SHIFT 12
#define DEPOT_CHUNK_SIZE  (1u << DEPOT_CHUNK_SHIFT)
#define DEPOT_MAX_CHUNKS  256u
#define DEPOT_MAX_STACKS  (DEPOT_MAX_CHUNKS * DEPOT_CHUNK_SIZE)

/* Records are carved from blocks this large; the largest record (128 frames) is ~1 KiB. */
#define DEPOT_ARENA_BLOCK_BYTES (1u << 20)

/* The hash table starts with this many buckets and doubles while stacks outnumber buckets. */
#define DEPOT_MIN_BUCKETS 4096u

struct stack_record {
    uint32_t hash;
    stack_id next_in_bucket; /* the next record with the same bucket; 0 ends the chain */
    uint32_t depth;
    uintptr_t pcs[];
};

typedef struct stack_record *_Atomic record_slot;

/* Read without the lock; written (release) under it. Index: (id - 1) >> DEPOT_CHUNK_SHIFT. */
static record_slot *_Atomic depot_chunks[DEPOT_MAX_CHUNKS];

/* Everything below is touched only with LOCK_DEPOT held. */

static struct {
    uint32_t stack_count; /* ids 1 .. stack_count are in use */
    stack_id *buckets;    /* heads of the hash chains; NULL until the first put */
    uint32_t bucket_count;
    char *arena_next; /* free space in the current arena block */
    char *arena_end;
} depot;

static void *map_zeroed(size_t bytes)
{
    void *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return memory == MAP_FAILED ? NULL : memory;
}

/*
 * Multiply-xorshift over the frames, finished with MurmurHash3's 64-bit mixer so that the low
 * bits, which pick the bucket, depend on every bit of every pc.
 */
static uint32_t hash_pcs(const uintptr_t *pcs, unsigned depth)
{
    uint64_t hash = 0x9e3779b97f4a7c15u ^ depth;
    for (unsigned i = 0; i < depth; i++) {
        hash = (hash ^ (uint64_t)pcs[i]) * 0xff51afd7ed558ccdu;
        hash ^= hash >> 29;
    }
    hash ^= hash >> 33;
    hash *= 0xc4ceb9fe1a85ec53u;
    hash ^= hash >> 33;
    return (uint32_t)hash;
}

static struct stack_record *record_of(stack_id id)
{
    if (id == 0 || id > DEPOT_MAX_STACKS)
        return NULL;
    uint32_t index = id - 1;
    record_slot *chunk =
        atomic_load_explicit(&depot_chunks[index >> DEPOT_CHUNK_SHIFT], memory_order_acquire);
    if (chunk == NULL)
        return NULL;
    return atomic_load_explicit(&chunk[index & (DEPOT_CHUNK_SIZE - 1)], memory_order_acquire);
}

/* Bump allocation; the unused tail of a block is abandoned when the next block is mapped. */
static struct stack_record *allocate_record(unsigned depth)
{
    size_t bytes = sizeof(struct stack_record) + depth * sizeof(uintptr_t);
    if ((size_t)(depot.arena_end - depot.arena_next) < bytes) {
        char *block = map_zeroed(DEPOT_ARENA_BLOCK_BYTES);
        if (block == NULL)
            return NULL;
        depot.arena_next = block;
        depot.arena_end = block + DEPOT_ARENA_BLOCK_BYTES;
    }
    struct stack_record *record = (struct stack_record *)(void *)depot.arena_next;
    depot.arena_next += bytes;
    return record;
}

/* Makes sure the chunk that will hold `id` exists. */
static bool reserve_slot(stack_id id)
{
    record_slot *_Atomic *chunk_ref = &depot_chunks[(id - 1) >> DEPOT_CHUNK_SHIFT];
    if (atomic_load_explicit(chunk_ref, memory_order_relaxed) != NULL)
        return true;
    record_slot *chunk = map_zeroed(DEPOT_CHUNK_SIZE * sizeof(record_slot));
    if (chunk == NULL)
        return false;
    atomic_store_explicit(chunk_ref, chunk, memory_order_release);
    return true;
}

/*
 * Rebuilds the chains in a table twice as large. On failure the old table stays: slower, fine.
 * Rewriting next_in_bucket of published records is safe for lock-free readers: they read only
 * depth and pcs, which never change after publication.
 */
static void grow_buckets(void)
{
    uint32_t new_count = depot.bucket_count * 2;
    stack_id *new_buckets = map_zeroed(new_count * sizeof(stack_id));
    if (new_buckets == NULL)
        return;
    for (stack_id id = 1; id <= depot.stack_count; id++) {
        struct stack_record *record = record_of(id);
        stack_id *head = &new_buckets[record->hash & (new_count - 1)];
        record->next_in_bucket = *head;
        *head = id;
    }
    munmap(depot.buckets, depot.bucket_count * sizeof(stack_id));
    depot.buckets = new_buckets;
    depot.bucket_count = new_count;
}

/* The body of stack_depot_put, with LOCK_DEPOT held. */
static stack_id find_or_insert(const uintptr_t *pcs, unsigned depth, uint32_t hash)
{
    if (depot.buckets == NULL) {
        depot.buckets = map_zeroed(DEPOT_MIN_BUCKETS * sizeof(stack_id));
        if (depot.buckets == NULL)
            return 0;
        depot.bucket_count = DEPOT_MIN_BUCKETS;
    }

    stack_id *head = &depot.buckets[hash & (depot.bucket_count - 1)];
    for (stack_id id = *head; id != 0;) {
        struct stack_record *record = record_of(id);
        if (record->hash == hash && record->depth == depth &&
            memcmp(record->pcs, pcs, depth * sizeof(uintptr_t)) == 0)
            return id;
        id = record->next_in_bucket;
    }

    if (depot.stack_count == DEPOT_MAX_STACKS)
        return 0;
    stack_id id = depot.stack_count + 1;
    if (!reserve_slot(id))
        return 0;
    struct stack_record *record = allocate_record(depth);
    if (record == NULL)
        return 0;
    record->hash = hash;
    record->depth = depth;
    record->next_in_bucket = *head;
    memcpy(record->pcs, pcs, depth * sizeof(uintptr_t));

    /* The record is complete before its pointer becomes visible to lock-free readers. */
    uint32_t index = id - 1;
    record_slot *chunk =
        atomic_load_explicit(&depot_chunks[index >> DEPOT_CHUNK_SHIFT], memory_order_relaxed);
    atomic_store_explicit(&chunk[index & (DEPOT_CHUNK_SIZE - 1)], record, memory_order_release);
    *head = id;
    depot.stack_count = id;

    if (depot.stack_count > depot.bucket_count)
        grow_buckets();
    return id;
}

/* A stack deeper than STACK_MAX_DEPTH is stored truncated; an empty one is "no stack". */
stack_id stack_depot_put(const uintptr_t *pcs, unsigned depth)
{
    if (pcs == NULL || depth == 0)
        return 0;
    if (depth > STACK_MAX_DEPTH)
        depth = STACK_MAX_DEPTH;
    uint32_t hash = hash_pcs(pcs, depth);

    lock_acquire(LOCK_DEPOT);
    stack_id id = find_or_insert(pcs, depth, hash);
    lock_release(LOCK_DEPOT);
    return id;
}

const uintptr_t *stack_depot_get(stack_id id, unsigned *depth)
{
    struct stack_record *record = record_of(id);
    if (depth != NULL)
        *depth = record != NULL ? record->depth : 0;
    return record != NULL ? record->pcs : NULL;
}

/*
 * In the child of fork the parent's stack ids mean nothing (its findings are the parent's to
 * report): the depot starts empty. Its memory leaks, which is bounded and harmless. LOCK_DEPOT is
 * free and the depot consistent (locks.h).
 */
void stack_depot_reset_after_fork(void)
{
    for (unsigned i = 0; i < DEPOT_MAX_CHUNKS; i++)
        atomic_store_explicit(&depot_chunks[i], NULL, memory_order_relaxed);
    memset(&depot, 0, sizeof depot);
}
