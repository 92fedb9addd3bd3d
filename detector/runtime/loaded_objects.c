#define _GNU_SOURCE
#include "loaded_objects.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#define MAX_OBJECTS 4096

struct loaded_object {
    const char *path;
    uintptr_t base, start, end;
};

/* Entries are filled, then published by the count (release); readers read up to the count. */
static struct loaded_object objects[MAX_OBJECTS];
static _Atomic unsigned object_count;

/* glibc (since 2.4) keeps the counts in every entry: the first one answers. */
static int read_events(struct dl_phdr_info *info, size_t size, void *events)
{
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs)
        *(unsigned long long *)events = info->dlpi_adds + info->dlpi_subs;
    return 1;
}

unsigned long long loaded_objects_events(void)
{
    unsigned long long events = 0;
    dl_iterate_phdr(read_events, &events);
    return events;
}

static char executable_path[PATH_MAX];

static void read_executable_path(void)
{
    ssize_t length = readlink("/proc/self/exe", executable_path, sizeof executable_path - 1);
    executable_path[length > 0 ? length : 0] = '\0';
}

const char *loaded_objects_executable_path(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, read_executable_path);
    return executable_path;
}

bool loaded_object_span(const struct dl_phdr_info *info, uintptr_t *start, uintptr_t *end)
{
    uintptr_t lowest = UINTPTR_MAX, highest = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *segment = &info->dlpi_phdr[i];
        if (segment->p_type != PT_LOAD)
            continue;
        uintptr_t segment_start = info->dlpi_addr + segment->p_vaddr;
        lowest = segment_start < lowest ? segment_start : lowest;
        if (segment_start + segment->p_memsz > highest)
            highest = segment_start + segment->p_memsz;
    }
    *start = lowest;
    *end = highest;
    return lowest < highest;
}

void loaded_objects_note(const char *path, uintptr_t base, uintptr_t start, uintptr_t end)
{
    unsigned count = atomic_load_explicit(&object_count, memory_order_relaxed);
    for (unsigned i = 0; i < count; i++)
        if (objects[i].base == base && objects[i].start == start)
            return;
    if (count == MAX_OBJECTS)
        return;
    if (!*path)
        path = loaded_objects_executable_path();
    objects[count] = (struct loaded_object){path, base, start, end};
    atomic_store_explicit(&object_count, count + 1, memory_order_release);
}

bool loaded_objects_find(uintptr_t pc, const char **path, uintptr_t *base)
{
    unsigned count = atomic_load_explicit(&object_count, memory_order_acquire);
    for (unsigned i = 0; i < count; i++) {
        if (pc >= objects[i].start && pc < objects[i].end) {
            *path = objects[i].path;
            *base = objects[i].base;
            return true;
        }
    }
    return false;
}

bool loaded_objects_same(const void *address, const void *other)
{
    const char *path, *other_path;
    uintptr_t base, other_base;
    if (!address || !other)
        return false;
    if (loaded_objects_find((uintptr_t)address, &path, &base) &&
        loaded_objects_find((uintptr_t)other, &other_path, &other_base))
        return base == other_base && path == other_path;
    Dl_info object, other_object;
    return dladdr(address, &object) && dladdr(other, &other_object) &&
           object.dli_fbase == other_object.dli_fbase;
}

/* "python3.11", "python3", "python3.12d": the interpreter's executable. */
static bool is_python_executable(const char *name)
{
    if (strncmp(name, "python", 6))
        return false;
    name += 6;
    name += strspn(name, "0123456789.");
    return strspn(name, "abcdefghijklmnopqrstuvwxyz") == strlen(name);
}

bool loaded_object_is_extension(const char *path)
{
    /* Base-name prefixes; scripts/python/extsan/findings.py reads the reports' mark instead. */
    static const char *const not_extension[] = {
        "libpython", "libc.so",  "libm.so", "libpthread", "libdl.",     "librt.",
        "libutil.",  "ld-linux", "ld.so",   "ld64.so",    "libstdc++",  "libgcc_s",
        "libunwind", "libdw",    "libelf",  "libextsan",  "linux-vdso", "[vdso]",
    };
    if (!path || !*path)
        return false;
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    if (is_python_executable(name))
        return false;
    for (size_t i = 0; i < sizeof not_extension / sizeof not_extension[0]; i++)
        if (!strncmp(name, not_extension[i], strlen(not_extension[i])))
            return false;
    return true;
}
