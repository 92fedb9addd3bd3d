#define _GNU_SOURCE
#include "context.h"
#include "locks.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

const char *_Atomic current_context;

/* The interned contexts: a fixed hash table of chains (a test run sets one per test). */
struct interned_context {
    struct interned_context *next;
    char name[];
};

#define CONTEXT_BUCKETS 4096

static struct interned_context *buckets[CONTEXT_BUCKETS];
static size_t interned_bytes;

/* Contexts longer than this are cut: a test id is rarely a tenth of it. */
#define MAX_CONTEXT_LENGTH 1024

static const char *intern(const char *name)
{
    size_t length = strnlen(name, MAX_CONTEXT_LENGTH);
    size_t hash = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < length; i++)
        hash = (hash ^ (unsigned char)name[i]) * 1099511628211ull;
    struct interned_context **bucket = &buckets[hash % CONTEXT_BUCKETS];
    for (struct interned_context *entry = *bucket; entry; entry = entry->next)
        if (!strncmp(entry->name, name, length) && entry->name[length] == '\0')
            return entry->name;
    struct interned_context *entry = malloc(sizeof *entry + length + 1);
    if (!entry)
        return NULL;
    memcpy(entry->name, name, length);
    entry->name[length] = '\0';
    entry->next = *bucket;
    *bucket = entry;
    interned_bytes += sizeof *entry + length + 1;
    return entry->name;
}

void context_set(const char *name)
{
    const char *interned = NULL;
    if (name && *name) {
        lock_acquire(LOCK_CONTEXTS);
        interned = intern(name);
        lock_release(LOCK_CONTEXTS);
    }
    atomic_store_explicit(&current_context, interned, memory_order_release);
}

size_t context_memory_bytes(void)
{
    lock_acquire(LOCK_CONTEXTS);
    size_t bytes = interned_bytes;
    lock_release(LOCK_CONTEXTS);
    return bytes;
}
