/*
 * A set of pointers: open addressing with linear probing, at most half full, grown by doubling.
 * Used for the types the type walk has seen (registry.c), which the heap analysis keeps as the
 * set of live types a registry record's object must name before it is read.
 */
#ifndef EXTSAN_POINTER_SET_H
#define EXTSAN_POINTER_SET_H

#include <stdbool.h>
#include <stddef.h>

struct pointer_set {
    const void **slots; /* NULL: empty */
    size_t capacity, count;
};

/* Adds `pointer` (not NULL); true when it was not there yet. False also when out of memory. */
bool pointer_set_add(struct pointer_set *set, const void *pointer);

bool pointer_set_contains(const struct pointer_set *set, const void *pointer);

/* Frees the slots; the set is empty and usable again. */
void pointer_set_clear(struct pointer_set *set);
/* Empties the set and keeps its slots, for a set filled and emptied over and over. */
void pointer_set_empty(struct pointer_set *set);

#endif
