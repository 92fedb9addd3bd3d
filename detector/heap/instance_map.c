#define _GNU_SOURCE
#include "instance_map.h"

#include <sys/mman.h>

#define MIN_CAPACITY 4096u /* entries; 96 KiB, of which only the touched pages cost memory */

static struct {
    struct instance_record *entries; /* object == NULL: empty */
    size_t capacity;                 /* a power of two, or 0 before the first put */
    unsigned shift;                  /* 64 - log2(capacity): the hash's top bits pick the slot */
    size_t count;                    /* entries in the table */
    /*
     * The newest record waits outside the table until the next put (object == NULL: none). In
     * an allocation-heavy loop most instances die before the next allocation, so they are
     * forgotten with one compare and never cost an insertion and a deletion.
     */
    struct instance_record newest;
} map;

/*
 * Fibonacci hashing of the address: objects are 16-byte aligned and often allocated in
 * sequence, and the multiply spreads such runs over the whole table through its top bits.
 */
static size_t home_slot(const PyObject *object, unsigned shift)
{
    return (size_t)(((uint64_t)(uintptr_t)object * 0x9E3779B97F4A7C15ull) >> shift);
}

static struct instance_record *map_table(size_t capacity)
{
    void *memory = mmap(NULL, capacity * sizeof(struct instance_record), PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return memory == MAP_FAILED ? NULL : memory;
}

static unsigned shift_for(size_t capacity)
{
    return 64u - (unsigned)__builtin_ctzll(capacity);
}

/* Rebuilds the map in a table of `capacity` entries; false (map unchanged) when out of memory. */
static bool rehash(size_t capacity)
{
    struct instance_record *entries = map_table(capacity);
    if (!entries)
        return false;
    unsigned shift = shift_for(capacity);
    size_t mask = capacity - 1;
    for (size_t i = 0; i < map.capacity; i++) {
        if (!map.entries[i].object)
            continue;
        size_t slot = home_slot(map.entries[i].object, shift);
        while (entries[slot].object)
            slot = (slot + 1) & mask;
        entries[slot] = map.entries[i];
    }
    if (map.entries)
        munmap(map.entries, map.capacity * sizeof(struct instance_record));
    map.entries = entries;
    map.capacity = capacity;
    map.shift = shift;
    return true;
}

/* The table slot holding `object`, or NULL. */
static inline __attribute__((always_inline)) struct instance_record *find_entry(PyObject *object)
{
    if (!map.count)
        return NULL;
    size_t mask = map.capacity - 1;
    for (size_t slot = home_slot(object, map.shift);; slot = (slot + 1) & mask) {
        if (map.entries[slot].object == object)
            return &map.entries[slot];
        if (!map.entries[slot].object)
            return NULL;
    }
}

/* Enters `record`, whose object is not in the table, into it; false when out of memory. */
static bool table_insert(const struct instance_record *record)
{
    /* Grow before the load passes 70%: linear probing's runs lengthen quickly beyond that. */
    if ((map.count + 1) * 10 > map.capacity * 7 &&
        !rehash(map.capacity ? 2 * map.capacity : MIN_CAPACITY) && map.count + 1 >= map.capacity)
        return false;
    size_t mask = map.capacity - 1;
    size_t slot = home_slot(record->object, map.shift);
    while (map.entries[slot].object)
        slot = (slot + 1) & mask;
    map.entries[slot] = *record;
    map.count++;
    return true;
}

bool instance_map_put(PyObject *object, struct type_record *type, site_id site, uint32_t size,
                      unsigned generation, bool replace)
{
    struct instance_record *present =
        map.newest.object == object ? &map.newest : find_entry(object);
    if (!present) {
        if (map.newest.object && !table_insert(&map.newest))
            return false;
        present = &map.newest;
    } else if (!replace) {
        return true;
    }
    *present = (struct instance_record){.object = object,
                                        .type = type,
                                        .allocated_at = site,
                                        .generation = generation,
                                        .size = size};
    return true;
}

struct instance_record *instance_map_find(PyObject *object)
{
    return object && map.newest.object == object ? &map.newest : find_entry(object);
}

/* True when `home` does not lie cyclically in (hole, slot]: the entry may move back to hole. */
static bool may_fill(size_t hole, size_t slot, size_t home)
{
    return hole <= slot ? (home <= hole || home > slot) : (home <= hole && home > slot);
}

bool instance_map_remove(PyObject *object)
{
    if (object && map.newest.object == object) {
        map.newest.object = NULL;
        return true;
    }
    struct instance_record *found = find_entry(object);
    if (!found)
        return false;
    /*
     * Backward shift: walk the rest of the probe run; every entry whose home slot does not lie
     * between the hole and itself would become unreachable behind the hole, so it moves into
     * the hole, which moves on to where it was. The run ends at the first empty slot.
     */
    size_t mask = map.capacity - 1;
    size_t hole = (size_t)(found - map.entries);
    for (size_t slot = (hole + 1) & mask; map.entries[slot].object; slot = (slot + 1) & mask) {
        if (may_fill(hole, slot, home_slot(map.entries[slot].object, map.shift))) {
            map.entries[hole] = map.entries[slot];
            hole = slot;
        }
    }
    map.entries[hole].object = NULL;
    map.count--;
    /* Shrink after a burst of instances died, so a one-time peak does not pin its table. */
    if (map.capacity > MIN_CAPACITY && map.count * 10 < map.capacity)
        rehash(map.capacity / 2);
    return true;
}

size_t instance_map_count(void)
{
    return map.count + (map.newest.object != NULL);
}

size_t instance_map_bytes(void)
{
    return map.capacity * sizeof(struct instance_record);
}

void instance_map_for_each(void (*visit)(struct instance_record *record, void *context),
                           void *context)
{
    for (size_t i = 0; i < map.capacity; i++)
        if (map.entries[i].object)
            visit(&map.entries[i], context);
    if (map.newest.object)
        visit(&map.newest, context);
}
