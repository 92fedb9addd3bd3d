/*
 * Where each loaded object lies, for naming a code address where nothing else may run: in a
 * signal handler, where dladdr could wait for the dynamic linker's lock forever. The GOT patcher
 * notes every object each time it visits them (at start and after every load).
 */
#ifndef EXTSAN_LOADED_OBJECTS_H
#define EXTSAN_LOADED_OBJECTS_H

#include <link.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * The objects the dynamic linker has loaded plus those it has unloaded, ever (glibc keeps both
 * counts): a change says the set of loaded objects changed.
 */
unsigned long long loaded_objects_events(void);

/* The executable's path, which the dynamic linker names "" (read once from the kernel). */
const char *loaded_objects_executable_path(void);

/* The span of an object's loaded segments; false when it has none. */
bool loaded_object_span(const struct dl_phdr_info *info, uintptr_t *start, uintptr_t *end);

/*
 * Notes an object: its path (a string that lives as long as the object does; "" for the
 * executable), its load base and the span of its loaded segments. Once per object; LOCK_PATCH
 * held.
 */
void loaded_objects_note(const char *path, uintptr_t base, uintptr_t start, uintptr_t end);

/*
 * Whether code in the object at `path` is an extension's own: false for the Python runtime
 * (libpython, or the python executable of a statically linked build), the C and C++ runtimes,
 * the dynamic loader, the unwinding and symbolising libraries, extsan, and an unknown object
 * (NULL or ""). Reports mark each frame with it; `extsan report` reads that mark. Async-signal-
 * safe.
 */
bool loaded_object_is_extension(const char *path);

/* The object holding `pc`: its path and load base. Async-signal-safe, lock-free. */
bool loaded_objects_find(uintptr_t pc, const char **path, uintptr_t *base);

/*
 * Whether two addresses lie in the same loaded object: from the table above, else (an object
 * it does not list yet) from the dynamic linker. Not dladdr first: it also looks up the nearest
 * symbol by scanning all the object's symbols, which dominated the analysis' type walk.
 */
bool loaded_objects_same(const void *address, const void *other);

#endif
