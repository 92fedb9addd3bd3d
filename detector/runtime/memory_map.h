/*
 * The process's readable memory, from /proc/self/maps, so that a conservative scan reads only
 * memory known to be mapped and can never fault.
 */
#ifndef EXTSAN_MEMORY_MAP_H
#define EXTSAN_MEMORY_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct memory_map;

/* A snapshot of the readable mappings now; NULL when /proc/self/maps cannot be read. */
struct memory_map *memory_map_load(void);
void memory_map_free(struct memory_map *map);

/* True when [address, address + length) lies inside one readable mapping. The map remembers the
   mapping found last (a lookup nearby is then one compare): one thread at a time. */
bool memory_map_readable(struct memory_map *map, uintptr_t address, size_t length);

/*
 * The number of bytes readable from address up to at most `wanted`, within its writable mapping
 * (heap and anonymous data, where objects live) and short of the next loaded object; 0 when
 * address is not in one, or lies in a loaded object's segments (static data and .bss: no
 * instance owns them).
 */
size_t memory_map_data_extent(struct memory_map *map, uintptr_t address, size_t wanted);

/* qsort/bsearch order of uintptr_t addresses, the order of memory_map_find_in_static_data's
   targets. */
int compare_addresses(const void *left, const void *right);

/*
 * Sets found[i] when some aligned word of a loaded object's writable segments (its static
 * variables, .data and .bss) equals targets[i]: what a C static owns, LeakSanitizer's roots.
 * `targets` is sorted ascending. Reads every such word: call it for a few targets, rarely.
 */
void memory_map_find_in_static_data(struct memory_map *map, const uintptr_t *targets, size_t count,
                                    bool *found);

#endif
