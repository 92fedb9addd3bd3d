#define _GNU_SOURCE
#include "loaded_objects.h"

#include <limits.h>
#include <stdatomic.h>
#include <unistd.h>

#define MAX_OBJECTS 4096

struct loaded_object {
    const char *path;
    uintptr_t base, start, end;
};

/* Entries are filled, then published by the count (release); readers read up to the count. */
static struct loaded_object objects[MAX_OBJECTS];
static _Atomic unsigned object_count;
static char executable_path[PATH_MAX];

void loaded_objects_note(const char *path, uintptr_t base, uintptr_t start, uintptr_t end)
{
    unsigned count = atomic_load_explicit(&object_count, memory_order_relaxed);
    for (unsigned i = 0; i < count; i++)
        if (objects[i].base == base && objects[i].start == start)
            return;
    if (count == MAX_OBJECTS)
        return;
    if (!*path) { /* the executable: the kernel knows its path */
        ssize_t length = readlink("/proc/self/exe", executable_path, sizeof executable_path - 1);
        executable_path[length > 0 ? length : 0] = '\0';
        path = executable_path;
    }
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
