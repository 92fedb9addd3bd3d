#define _GNU_SOURCE
#include "memory_map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mapping {
    uintptr_t start, end;
    bool writable;
};

struct memory_map {
    struct mapping *mappings; /* readable ones, sorted by address (as the kernel lists them) */
    size_t count;
    /* The mapping found last: the analysis asks about neighbouring objects, mostly in one
       allocator arena, in a row. Touched by one thread only (the analysis holds the GIL). */
    size_t last;
};

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
    return map;
}

void memory_map_free(struct memory_map *map)
{
    if (map)
        free(map->mappings);
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

size_t memory_map_data_extent(struct memory_map *map, uintptr_t address, size_t wanted)
{
    const struct mapping *mapping = find_mapping(map, address);
    if (!mapping || !mapping->writable)
        return 0;
    size_t available = mapping->end - address;
    return available < wanted ? available : wanted;
}
