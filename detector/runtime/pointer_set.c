#include "pointer_set.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Fibonacci hashing: the high bits of the product depend on every bit of the address. */
static size_t home_slot(const void *pointer, size_t capacity)
{
    return (size_t)(((uint64_t)(uintptr_t)pointer * 0x9E3779B97F4A7C15ull) >> 32) & (capacity - 1);
}

static void place(const void **slots, size_t capacity, const void *pointer)
{
    size_t slot = home_slot(pointer, capacity);
    while (slots[slot])
        slot = (slot + 1) & (capacity - 1);
    slots[slot] = pointer;
}

bool pointer_set_add(struct pointer_set *set, const void *pointer)
{
    if (pointer_set_contains(set, pointer))
        return false;
    if ((set->count + 1) * 2 > set->capacity) {
        size_t capacity = set->capacity ? 2 * set->capacity : 1024;
        const void **slots = calloc(capacity, sizeof *slots);
        if (!slots)
            return false;
        for (size_t i = 0; i < set->capacity; i++)
            if (set->slots[i])
                place(slots, capacity, set->slots[i]);
        free(set->slots);
        set->slots = slots;
        set->capacity = capacity;
    }
    place(set->slots, set->capacity, pointer);
    set->count++;
    return true;
}

bool pointer_set_contains(const struct pointer_set *set, const void *pointer)
{
    if (!set->capacity || !pointer)
        return false;
    for (size_t slot = home_slot(pointer, set->capacity); set->slots[slot];
         slot = (slot + 1) & (set->capacity - 1))
        if (set->slots[slot] == pointer)
            return true;
    return false;
}

void pointer_set_clear(struct pointer_set *set)
{
    free(set->slots);
    *set = (struct pointer_set){0};
}

void pointer_set_empty(struct pointer_set *set)
{
    if (set->count)
        memset(set->slots, 0, set->capacity * sizeof *set->slots);
    set->count = 0;
}
