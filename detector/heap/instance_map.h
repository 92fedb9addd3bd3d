/*
 * The live extension instances: a hash map from object address to its instance_record.
 *
 * Open addressing with linear probing and backward-shift deletion: a delete moves the following
 * entries of its probe run back instead of leaving a tombstone, so a workload that creates and
 * destroys millions of objects never degrades the table and never needs a cleaning rehash. The
 * table doubles (rehash into a new mmap'd table) above 70% load and halves below 10%.
 * Records sit in the table itself (24 bytes each): one cache line touched per operation. The
 * newest record stays out of the table until the next put, so that an instance that dies before
 * another is made costs no insertion and no deletion.
 *
 * Not thread-safe by itself: the registry serialises every call with its own lock.
 */
#ifndef EXTSAN_INSTANCE_MAP_H
#define EXTSAN_INSTANCE_MAP_H

#include "registry.h"

/*
 * Records `object` as an instance of `type` allocated at `site`, `size` bytes long, registered
 * by the process of `generation`, with no marks; when the object is already present, replaces its
 * record (replace = true) or keeps it (replace = false). False when out of memory (nothing stored).
 * The fields come as values, not as a record built by the caller: a record written field by field
 * on the stack and read back whole stalls the store buffer, on a path taken once per allocation.
 */
bool instance_map_put(PyObject *object, struct type_record *type, site_id site, uint32_t size,
                      unsigned generation, bool replace);

/* Removes `object`; false when it was not there. */
bool instance_map_remove(PyObject *object);

/* The stored record of `object`, or NULL. Valid until the next put or remove. */
struct instance_record *instance_map_find(PyObject *object);

size_t instance_map_count(void);
size_t instance_map_bytes(void);

/* Calls visit for every record; the visitor must not put or remove. */
void instance_map_for_each(void (*visit)(struct instance_record *record, void *context),
                           void *context);

#endif
