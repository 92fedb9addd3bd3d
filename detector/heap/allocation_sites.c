#define _GNU_SOURCE
#include "allocation_sites.h"
#include "context.h"
#include "locks.h"

#include "options.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ---- site records ----------------------------------------------------------------------------
 * Ids index an append-only table of chunk pointers, so allocation_site_get needs no lock: a
 * record is complete before its pointer is published (release), and never changes after.
 */

#define SITE_CHUNK_SHIFT 12
#define SITE_CHUNK_SIZE  (1u << SITE_CHUNK_SHIFT)
#define SITE_MAX_CHUNKS  1024u /* 4M sites */
#define MAX_PYTHON_DEPTH 64

_Static_assert((SITE_MAX_CHUNKS * SITE_CHUNK_SIZE) < (1u << 24),
               "a site id must fit instance_record.allocated_at");
_Static_assert(sizeof(struct instance_record) == 24, "instance records are 24 bytes (registry.h)");

struct site_record {
    struct allocation_site site;
    /* The native stack's frames in the depot's memory, to store them again after a fork. */
    const uintptr_t *native_frames;
    unsigned native_depth;
    struct python_frame python[];
};

typedef struct site_record *_Atomic site_slot;
static site_slot *_Atomic site_chunks[SITE_MAX_CHUNKS];

/* Serialises site creation: ids, chunks, string interning. Never taken on the fast path. */
static uint32_t site_total;
static size_t record_bytes;

const struct allocation_site *allocation_site_get(site_id site)
{
    if (site == 0 || site > SITE_MAX_CHUNKS * SITE_CHUNK_SIZE)
        return NULL;
    uint32_t index = site - 1;
    site_slot *chunk =
        atomic_load_explicit(&site_chunks[index >> SITE_CHUNK_SHIFT], memory_order_acquire);
    if (!chunk)
        return NULL;
    struct site_record *record =
        atomic_load_explicit(&chunk[index & (SITE_CHUNK_SIZE - 1)], memory_order_acquire);
    return record ? &record->site : NULL;
}

/* ---- interned strings ------------------------------------------------------------------------
 * File names and function names repeat across sites: each distinct string is stored once, in a
 * chained hash set, under LOCK_SITES.
 */

struct interned {
    struct interned *next;
    char text[];
};

static struct interned **string_buckets;
static size_t string_bucket_count, string_count, string_bytes;

static size_t hash_string(const char *text)
{
    size_t hash = 1469598103934665603ull; /* FNV-1a */
    for (; *text; text++)
        hash = (hash ^ (unsigned char)*text) * 1099511628211ull;
    return hash;
}

static void grow_strings(void)
{
    size_t count = string_bucket_count ? 2 * string_bucket_count : 1024;
    struct interned **buckets = calloc(count, sizeof *buckets);
    if (!buckets)
        return;
    for (size_t i = 0; i < string_bucket_count; i++) {
        for (struct interned *entry = string_buckets[i], *next; entry; entry = next) {
            next = entry->next;
            size_t bucket = hash_string(entry->text) & (count - 1);
            entry->next = buckets[bucket];
            buckets[bucket] = entry;
        }
    }
    free(string_buckets);
    string_buckets = buckets;
    string_bucket_count = count;
}

static const char *intern(const char *text)
{
    if (!text)
        return "?";
    if (string_count >= string_bucket_count)
        grow_strings();
    if (!string_buckets)
        return "?";
    size_t bucket = hash_string(text) & (string_bucket_count - 1);
    for (struct interned *entry = string_buckets[bucket]; entry; entry = entry->next)
        if (!strcmp(entry->text, text))
            return entry->text;
    size_t length = strlen(text);
    struct interned *entry = malloc(sizeof *entry + length + 1);
    if (!entry)
        return "?";
    memcpy(entry->text, text, length + 1);
    entry->next = string_buckets[bucket];
    string_buckets[bucket] = entry;
    string_count++;
    string_bytes += sizeof *entry + length + 1;
    return entry->text;
}

/* UTF-8 of a str, or "?" (clearing the error a lone surrogate raises). */
static const char *intern_unicode(PyObject *text)
{
    const char *utf8 = text ? python_api.PyUnicode_AsUTF8(text) : NULL;
    if (!utf8)
        python_api.PyErr_Clear();
    return intern(utf8);
}

/*
 * The same for a thread without an attached thread state, which may not call the C API: the
 * UTF-8 a str already has (an ASCII one's characters, or a cached encoding), else NULL.
 */
static const char *intern_unicode_detached(PyObject *text)
{
    if (!text || !PyUnicode_Check(text) || !PyUnicode_IS_COMPACT(text))
        return NULL;
    if (PyUnicode_IS_COMPACT_ASCII(text))
        return intern((const char *)((PyASCIIObject *)text + 1));
    return intern(((PyCompactUnicodeObject *)text)->utf8);
}

/* ---- creation ---------------------------------------------------------------------------------
 */

static site_id create(const struct site_key *key, PyThreadState *thread, bool attached)
{
    struct python_frame_ref refs[MAX_PYTHON_DEPTH];
    unsigned max = (unsigned)extsan_options.site_python_depth;
    unsigned depth =
        python_stack_capture(thread, refs, max < MAX_PYTHON_DEPTH ? max : MAX_PYTHON_DEPTH);
    stack_id native = stack_capture_caller((unsigned)extsan_options.stack_depth);

    size_t bytes = sizeof(struct site_record) + depth * sizeof(struct python_frame);
    struct site_record *record = calloc(1, bytes);
    if (!record)
        return 0;
    record->site.native = native;
    record->site.context = key->context;
    record->native_frames = stack_depot_get(native, &record->native_depth);
    record->site.python = record->python;

    /* An allocation can happen while an exception is being raised: keep it as it was. */
    PyObject *error_type = NULL, *error_value = NULL, *error_traceback = NULL;
    if (attached)
        python_api.PyErr_Fetch(&error_type, &error_value, &error_traceback);
    lock_acquire(LOCK_SITES);
    for (unsigned i = 0; i < depth; i++) {
        PyObject *file = refs[i].code->co_filename, *name = python_code_name(refs[i].code);
        record->python[i].file = attached ? intern_unicode(file) : intern_unicode_detached(file);
        record->python[i].function =
            attached ? intern_unicode(name) : intern_unicode_detached(name);
        record->python[i].line = refs[i].line;
    }
    record->site.python_depth = depth;
    site_id id = 0;
    if (site_total < SITE_MAX_CHUNKS * SITE_CHUNK_SIZE) {
        uint32_t index = site_total;
        site_slot *_Atomic *chunk_ref = &site_chunks[index >> SITE_CHUNK_SHIFT];
        site_slot *chunk = atomic_load_explicit(chunk_ref, memory_order_relaxed);
        if (!chunk) {
            chunk = calloc(SITE_CHUNK_SIZE, sizeof *chunk);
            atomic_store_explicit(chunk_ref, chunk, memory_order_release);
            record_bytes += chunk ? SITE_CHUNK_SIZE * sizeof *chunk : 0;
        }
        if (chunk) {
            atomic_store_explicit(&chunk[index & (SITE_CHUNK_SIZE - 1)], record,
                                  memory_order_release);
            id = ++site_total;
            record_bytes += bytes;
        }
    }
    lock_release(LOCK_SITES);
    if (attached)
        python_api.PyErr_Restore(error_type, error_value, error_traceback);
    if (!id) {
        free(record);
        return 0;
    }
    return id;
}

site_id site_create(const struct site_key *key, PyThreadState *thread)
{
    return create(key, thread, true);
}

site_id site_create_detached(PyThreadState *thread)
{
    struct site_key key = {.context = context_current()};
    return create(&key, thread, false);
}

/* ---- the cache ---------------------------------------------------------------------------------
 * Open addressing, linear probing, never a deletion; doubles above 50% load. Only touched with
 * the registry's lock held.
 */

struct cache_entry {
    struct site_key key;
    site_id site; /* 0: empty */
};

static struct {
    struct cache_entry *entries;
    size_t capacity; /* a power of two, or 0 */
    size_t count;
} cache;

static size_t hash_key(const struct site_key *key)
{
    uint64_t hash = (uint64_t)key->return_address * 0x9E3779B97F4A7C15ull;
    hash ^= (uint64_t)(uintptr_t)key->python.code * 0xC2B2AE3D27D4EB4Full;
    hash ^= (uint64_t)(uintptr_t)key->python.instruction * 0x165667B19E3779F9ull;
    hash ^= (uint64_t)(uint32_t)key->python.first_line * 0x85EBCA77C2B2AE63ull;
    hash ^= (uint64_t)(uintptr_t)key->context * 0x27D4EB2F165667C5ull;
    hash ^= hash >> 29;
    return (size_t)hash;
}

struct site_key site_last_key;
site_id site_last_found;

site_id site_lookup_in_cache(const struct site_key *key)
{
    if (!cache.capacity)
        return 0;
    size_t mask = cache.capacity - 1;
    for (size_t slot = hash_key(key) & mask; cache.entries[slot].site; slot = (slot + 1) & mask) {
        if (site_key_equal(&cache.entries[slot].key, key)) {
            site_last_key = cache.entries[slot].key;
            site_last_found = cache.entries[slot].site;
            return site_last_found;
        }
    }
    return 0;
}

static bool grow_cache(void)
{
    size_t capacity = cache.capacity ? 2 * cache.capacity : 1024;
    struct cache_entry *entries = mmap(NULL, capacity * sizeof *entries, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (entries == MAP_FAILED)
        return false;
    for (size_t i = 0; i < cache.capacity; i++) {
        if (!cache.entries[i].site)
            continue;
        size_t slot = hash_key(&cache.entries[i].key) & (capacity - 1);
        while (entries[slot].site)
            slot = (slot + 1) & (capacity - 1);
        entries[slot] = cache.entries[i];
    }
    if (cache.entries)
        munmap(cache.entries, cache.capacity * sizeof *cache.entries);
    cache.entries = entries;
    cache.capacity = capacity;
    return true;
}

site_id site_publish(const struct site_key *key, site_id site)
{
    site_id existing = site_lookup(key);
    if (existing)
        return existing;
    if ((cache.count + 1) * 2 > cache.capacity && !grow_cache() &&
        cache.count + 1 >= cache.capacity)
        return site; /* uncached: the next allocation from here makes another record */
    size_t mask = cache.capacity - 1;
    size_t slot = hash_key(key) & mask;
    while (cache.entries[slot].site)
        slot = (slot + 1) & mask;
    cache.entries[slot].key = *key;
    cache.entries[slot].site = site;
    cache.count++;
    return site;
}

size_t sites_memory_bytes(void)
{
    lock_acquire(LOCK_SITES);
    size_t bytes = record_bytes + string_bytes + string_bucket_count * sizeof *string_buckets;
    lock_release(LOCK_SITES);
    return bytes + cache.capacity * sizeof(struct cache_entry);
}

size_t sites_count(void)
{
    return site_total;
}

/*
 * The child of fork starts with an empty stack depot (the parent's ids mean nothing there) but
 * inherits the depot's memory untouched: every site's frames are still readable where they were,
 * and are stored again under new ids.
 */
void sites_restore_stacks_after_fork(void)
{
    for (uint32_t index = 0; index < site_total; index++) {
        site_slot *chunk =
            atomic_load_explicit(&site_chunks[index >> SITE_CHUNK_SHIFT], memory_order_relaxed);
        struct site_record *record =
            atomic_load_explicit(&chunk[index & (SITE_CHUNK_SIZE - 1)], memory_order_relaxed);
        record->site.native = stack_depot_put(record->native_frames, record->native_depth);
        record->native_frames = stack_depot_get(record->site.native, &record->native_depth);
    }
}
