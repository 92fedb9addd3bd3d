#define _GNU_SOURCE
#include "memory_map.h"

#include "loaded_objects.h"

#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mapping {
    uintptr_t start, end;
    bool writable;
};

/* Where a loaded object lies: its code, its static data and its .bss. */
struct span {
    uintptr_t start, end;
    bool own; /* extsan's core, whose statics hold the objects it is looking at */
};

struct memory_map {
    struct mapping *mappings; /* readable ones, sorted by address (as the kernel lists them) */
    size_t count;
    /* The mapping found last: the analysis asks about neighbouring objects, mostly in one
       allocator arena, in a row. Touched by one thread only (the analysis holds the GIL). */
    size_t last;
    struct span *images; /* where the loaded objects lie, sorted by address */
    size_t image_count, image_capacity;
};

/*
 * Notes where a loaded object lies. Its mappings are not data for the scan, even where
 * writable: .data and .bss are static variables (type objects, module state, vtables), which no
 * instance owns. Compared by address, not by mapping: the kernel may merge a .bss with anonymous
 * memory mapped right after it.
 */
static int note_images(struct dl_phdr_info *info, size_t size, void *context)
{
    (void)size;
    struct memory_map *map = context;
    struct span span;
    if (!loaded_object_span(info, &span.start, &span.end))
        return 0;
    span.own = span.start <= (uintptr_t)note_images && (uintptr_t)note_images < span.end;
    if (map->image_count == map->image_capacity) {
        size_t capacity = map->image_capacity ? 2 * map->image_capacity : 256;
        struct span *grown = realloc(map->images, capacity * sizeof *grown);
        if (!grown)
            return 1;
        map->images = grown;
        map->image_capacity = capacity;
    }
    map->images[map->image_count++] = span;
    return 0;
}

static int compare_spans(const void *left, const void *right)
{
    const struct span *a = left, *b = right;
    return (a->start > b->start) - (a->start < b->start);
}

int compare_addresses(const void *left, const void *right)
{
    uintptr_t a = *(const uintptr_t *)left, b = *(const uintptr_t *)right;
    return (a > b) - (a < b);
}

/* The first image span that ends after `address`, or image_count. */
static size_t image_after(const struct memory_map *map, uintptr_t address)
{
    size_t low = 0, high = map->image_count;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        if (map->images[middle].end <= address)
            low = middle + 1;
        else
            high = middle;
    }
    return low;
}

struct memory_map *memory_map_load(void)
{
    FILE *maps = fopen("/proc/self/maps", "re");
    if (!maps)
        return NULL;
    struct memory_map *map = calloc(1, sizeof *map);
    size_t capacity = 0;
    char line[4096];
    while (map && fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        char permissions[5];
        if (sscanf(line, "%lx-%lx %4s", &start, &end, permissions) != 3 || permissions[0] != 'r')
            continue;
        /* [vvar] (and [vvar_vclock], split off it by Linux 6.x) is readable on paper but faults
           on some kernels: never touch it. */
        if (strstr(line, "[vvar") || strstr(line, "[vsyscall]"))
            continue;
        if (map->count == capacity) {
            capacity = capacity ? 2 * capacity : 256;
            struct mapping *grown = realloc(map->mappings, capacity * sizeof *grown);
            if (!grown) {
                memory_map_free(map);
                map = NULL;
                break;
            }
            map->mappings = grown;
        }
        map->mappings[map->count++] =
            (struct mapping){.start = start, .end = end, .writable = permissions[1] == 'w'};
    }
    fclose(maps);
    if (map) {
        dl_iterate_phdr(note_images, map);
        qsort(map->images, map->image_count, sizeof *map->images, compare_spans);
    }
    return map;
}

void memory_map_free(struct memory_map *map)
{
    if (map) {
        free(map->mappings);
        free(map->images);
    }
    free(map);
}

static const struct mapping *find_mapping(struct memory_map *map, uintptr_t address)
{
    if (map->last < map->count && address >= map->mappings[map->last].start &&
        address < map->mappings[map->last].end)
        return &map->mappings[map->last];
    size_t low = 0, high = map->count;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        if (address < map->mappings[middle].start) {
            high = middle;
        } else if (address >= map->mappings[middle].end) {
            low = middle + 1;
        } else {
            map->last = middle;
            return &map->mappings[middle];
        }
    }
    return NULL;
}

bool memory_map_readable(struct memory_map *map, uintptr_t address, size_t length)
{
    const struct mapping *mapping = find_mapping(map, address);
    return mapping && length <= mapping->end - address;
}

static void find_in_words(uintptr_t start, uintptr_t end, const uintptr_t *targets, size_t count,
                          bool *found)
{
    for (const uintptr_t *word = (const uintptr_t *)start; (uintptr_t)(word + 1) <= end; word++) {
        if (*word < targets[0] || *word > targets[count - 1])
            continue;
        const uintptr_t *hit = bsearch(word, targets, count, sizeof *targets, compare_addresses);
        if (hit)
            found[hit - targets] = true;
    }
}

void memory_map_find_in_static_data(struct memory_map *map, const uintptr_t *targets, size_t count,
                                    bool *found)
{
    if (!count)
        return;
    for (size_t m = 0; m < map->count; m++) {
        const struct mapping *mapping = &map->mappings[m];
        if (!mapping->writable)
            continue;
        /* The parts of the mapping that loaded objects span. */
        for (size_t i = image_after(map, mapping->start);
             i < map->image_count && map->images[i].start < mapping->end; i++) {
            if (map->images[i].own)
                continue;
            uintptr_t start =
                map->images[i].start > mapping->start ? map->images[i].start : mapping->start;
            uintptr_t end = map->images[i].end < mapping->end ? map->images[i].end : mapping->end;
            start = (start + sizeof(uintptr_t) - 1) & ~(uintptr_t)(sizeof(uintptr_t) - 1);
            if (start < end)
                find_in_words(start, end, targets, count, found);
        }
    }
}

size_t memory_map_data_extent(struct memory_map *map, uintptr_t address, size_t wanted)
{
    const struct mapping *mapping = find_mapping(map, address);
    if (!mapping || !mapping->writable)
        return 0;
    uintptr_t end = mapping->end;
    size_t image = image_after(map, address);
    if (image < map->image_count) {
        if (map->images[image].start <= address)
            return 0; /* static data of a loaded object */
        if (map->images[image].start < end)
            end = map->images[image].start;
    }
    size_t available = end - address;
    return available < wanted ? available : wanted;
}
