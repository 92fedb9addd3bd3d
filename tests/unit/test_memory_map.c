/*
 * Unit test of the memory map (detector/runtime/memory_map.c) against mappings the test makes
 * itself: writable pages, a PROT_NONE guard page, an unmapped hole, a read-only page, and more
 * than the first 256 mappings the loader has room for. Build (the suite does it with Meson as
 * build/test-memory-map):
 *   gcc -std=c11 -Idetector/threads -Idetector/runtime -Idetector/heap -Idetector/report \
 *       detector/runtime/memory_map.c tests/unit/test_memory_map.c
 */
#define _GNU_SOURCE

#include "memory_map.h"

#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static size_t page;

static char *map_pages(size_t count, int protection)
{
    void *memory =
        mmap(NULL, count * page, protection, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return memory;
}

static void protect(char *address, size_t count, int protection)
{
    if (mprotect(address, count * page, protection) != 0) {
        perror("mprotect");
        exit(2);
    }
}

/* True when no mapping covers the page at address (mincore fails with ENOMEM there). */
static bool unmapped(const char *address)
{
    unsigned char resident;
    return mincore((void *)address, page, &resident) != 0 && errno == ENOMEM;
}

static uintptr_t at(const char *address)
{
    return (uintptr_t)address;
}

/*
 * Seven pages, each its own mapping because its neighbours differ: a guard, two writable pages
 * around a guard, a hole, a read-only page, a guard.
 */
enum { GUARD_LOW, DATA, GUARD, MORE_DATA, HOLE, READ_ONLY, GUARD_HIGH, PAGES };

static void test_mappings_made_here(void)
{
    char *region = map_pages(PAGES, PROT_READ | PROT_WRITE);
    char *p[PAGES];
    for (int i = 0; i < PAGES; i++)
        p[i] = region + i * page;
    protect(p[GUARD_LOW], 1, PROT_NONE);
    protect(p[GUARD], 1, PROT_NONE);
    protect(p[READ_ONLY], 1, PROT_READ);
    protect(p[GUARD_HIGH], 1, PROT_NONE);
    if (munmap(p[HOLE], page) != 0) {
        perror("munmap");
        exit(2);
    }
    p[DATA][0] = p[MORE_DATA][0] = 1; /* touched or not, a mapping is a mapping */

    struct memory_map *map = memory_map_load();
    CHECK(map != NULL, "memory_map_load failed");
    if (!map)
        return;
    CHECK(unmapped(p[HOLE]), "the hole was mapped again before the snapshot: the test is void");

    CHECK(memory_map_readable(map, at(p[DATA]), page), "a whole writable page");
    CHECK(memory_map_readable(map, at(p[DATA]) + page - 8, 8), "the last 8 bytes before a guard");
    CHECK(!memory_map_readable(map, at(p[DATA]) + page - 8, 9), "one byte into the guard");
    CHECK(!memory_map_readable(map, at(p[DATA]), 2 * page), "across the guard");
    CHECK(!memory_map_readable(map, at(p[GUARD]), 1), "the PROT_NONE guard");
    CHECK(!memory_map_readable(map, at(p[GUARD_LOW]) + page - 1, 2), "from a guard into data");
    CHECK(memory_map_readable(map, at(p[MORE_DATA]) + 100, page - 100), "to the page's end");
    CHECK(!memory_map_readable(map, at(p[MORE_DATA]) + 100, page - 99), "past it, into the hole");
    CHECK(!memory_map_readable(map, at(p[HOLE]), 1), "the unmapped hole");
    CHECK(!memory_map_readable(map, at(p[HOLE]) + page - 1, 2), "from the hole into a mapping");
    CHECK(memory_map_readable(map, at(p[READ_ONLY]), page), "the read-only page");
    CHECK(!memory_map_readable(map, at(p[READ_ONLY]) + page - 1, 2), "into the high guard");

    CHECK(memory_map_data_extent(map, at(p[DATA]), 100) == 100, "well inside: all of it");
    size_t extent = memory_map_data_extent(map, at(p[DATA]) + page - 10, 100);
    CHECK(extent == 10, "clamped at the guard: %zu", extent);
    extent = memory_map_data_extent(map, at(p[MORE_DATA]) + 5, 10 * page);
    CHECK(extent == page - 5, "clamped at the hole: %zu", extent);
    CHECK(memory_map_data_extent(map, at(p[GUARD]), 16) == 0, "the guard holds no data");
    CHECK(memory_map_data_extent(map, at(p[HOLE]), 16) == 0, "the hole holds no data");
    CHECK(memory_map_data_extent(map, at(p[READ_ONLY]), 16) == 0,
          "a read-only mapping is not where objects live");

    /* A snapshot: what is mapped after it was taken is not in it. */
    char *later = map_pages(1, PROT_READ | PROT_WRITE);
    CHECK(!memory_map_readable(map, at(later), 1), "a mapping made after the snapshot");
    struct memory_map *fresh = memory_map_load();
    CHECK(fresh && memory_map_readable(fresh, at(later), page), "a new snapshot sees it");
    memory_map_free(fresh);
    munmap(later, page);

    memory_map_free(map);
    munmap(region, PAGES * page);
}

/* The process's own memory: its stack, its data, its heap, its code and read-only data. */
static int zeroed_global;
static int initialised_global = 7;

static void test_own_memory(void)
{
    struct memory_map *map = memory_map_load();
    CHECK(map != NULL, "memory_map_load failed");
    if (!map)
        return;
    int local = 0;
    static const char constant[] = "read-only data";
    CHECK(memory_map_data_extent(map, at((char *)&local), sizeof local) == sizeof local,
          "the stack");
    /* Static variables are readable, but no instance owns them: no data for the scan. */
    CHECK(memory_map_readable(map, at((char *)&zeroed_global), sizeof zeroed_global),
          ".bss is readable");
    CHECK(memory_map_data_extent(map, at((char *)&zeroed_global), sizeof zeroed_global) == 0,
          ".bss is a loaded object's, not data");
    CHECK(memory_map_readable(map, at((char *)&initialised_global), 4), ".data is readable");
    CHECK(memory_map_data_extent(map, at((char *)&initialised_global), 4) == 0,
          ".data is a loaded object's, not data");
    CHECK(memory_map_readable(map, at(constant), sizeof constant), ".rodata is readable");
    CHECK(memory_map_data_extent(map, at(constant), sizeof constant) == 0, ".rodata is not data");
    CHECK(memory_map_readable(map, (uintptr_t)&test_own_memory, 1), "code is readable");
    char *heap = malloc(64);
    CHECK(memory_map_data_extent(map, at(heap), 64) == 64, "the heap");
    free(heap);

    memory_map_free(map);
    memory_map_free(NULL);
}

/*
 * The kernel's special mappings named `name` in /proc/self/maps ("[vvar]"): listed as readable,
 * but some of their pages fault (SIGBUS) when read, so none of their pages may be offered.
 * Returns how many such mappings there were.
 */
static unsigned check_never_offered(const char *name)
{
    struct memory_map *map = memory_map_load();
    FILE *maps = fopen("/proc/self/maps", "re");
    CHECK(map && maps, "cannot read the mappings");
    char line[4096];
    unsigned found = 0;
    while (map && maps && fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        char *newline = strchr(line, '\n');
        if (newline)
            *newline = '\0';
        size_t length = strlen(line), name_length = strlen(name);
        bool named = length >= name_length && !strcmp(line + length - name_length, name);
        if (!named || sscanf(line, "%lx-%lx", &start, &end) != 2)
            continue;
        found++;
        for (unsigned long address = start; address < end; address += page)
            CHECK(!memory_map_readable(map, address, 1), "offered: %s, page %#lx", line,
                  address - start);
    }
    if (maps)
        fclose(maps);
    memory_map_free(map);
    return found;
}

/* More mappings than the loader's first allocation holds (256): it must grow and keep them all. */
static void test_many_mappings(void)
{
    enum { READABLE = 300 };
    /* Readable pages alternating with PROT_NONE ones, so that no two of them merge. */
    char *region = map_pages(2 * READABLE + 1, PROT_NONE);
    for (int i = 0; i < READABLE; i++)
        protect(region + (2 * i + 1) * page, 1, PROT_READ | PROT_WRITE);
    struct memory_map *map = memory_map_load();
    CHECK(map != NULL, "memory_map_load failed");
    if (!map)
        return;
    int wrong = 0;
    for (int i = 0; i < 2 * READABLE + 1; i++) {
        bool readable = i % 2 == 1;
        const char *address = region + i * page;
        wrong += memory_map_readable(map, at(address), page) != readable;
        wrong += memory_map_data_extent(map, at(address) + 1, page) != (readable ? page - 1 : 0);
    }
    CHECK(wrong == 0, "%d answers wrong among %d alternating pages", wrong, 2 * READABLE + 1);
    memory_map_free(map);
    munmap(region, (2 * READABLE + 1) * page);
}

int main(void)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    test_mappings_made_here();
    test_own_memory();
    test_many_mappings();
    /* [vvar_vclock]: what Linux 6.x splits off the vvar area; its pages fault with SIGBUS when
       the clock they belong to is not in use. Not every kernel has it. */
    CHECK(check_never_offered("[vvar]") + check_never_offered("[vvar_vclock]") +
                  check_never_offered("[vsyscall]") >
              0,
          "no [vvar] or [vsyscall] mapping to check");
    return checks_summary();
}
