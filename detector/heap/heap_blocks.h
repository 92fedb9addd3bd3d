/*
 * The extent of a heap block, from the allocator's own bookkeeping: what the scan may read when
 * it follows a pointer out of an instance. Only a block whose extent is known is read, and only
 * up to its end: a fixed window read past the end of a short block (a name string, say) and met
 * whatever came after it.
 *
 *   pymalloc (PyObject_Malloc, PyMem_Malloc: blocks of at most 512 bytes): the pool header at the
 *     start of the block's pool names its size class; its fields are checked against each other
 *     first, so a page that is no pool is not taken for one.
 *   glibc malloc (larger blocks, and malloc, new, PyMem_RawMalloc): the chunk header before the
 *     block holds its size, which the next chunk's header must confirm (its "previous chunk in
 *     use" bit); a chunk of its own mapping (mmapped) must span whole pages of one mapping.
 *
 * The pointer must be the block's start: one into the middle of a block cannot be sized. A block
 * that holds only a C string (a name) has no references to offer, nor has a free one (on a pool's
 * free list, or in a glibc tcache): their extent is taken as 0.
 */
#ifndef EXTSAN_HEAP_BLOCKS_H
#define EXTSAN_HEAP_BLOCKS_H

#include "memory_map.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Forgets what was learnt of the allocators' free lists: call before each analysis, since the
 * heap changed since the last one.
 */
void heap_blocks_forget(void);

/* Whose bookkeeping gave a block's extent: the evidence a reference found in it rests on. */
enum heap_block_kind {
    HEAP_BLOCK_NONE,
    HEAP_BLOCK_PYMALLOC, /* a pymalloc pool's size class */
    HEAP_BLOCK_MALLOC,   /* a glibc chunk header, confirmed by the next chunk's */
    HEAP_BLOCK_MMAPPED,  /* a glibc chunk of its own mapping */
};

/* The report's name of a kind: "pymalloc block", "malloc chunk", "mmapped malloc chunk". */
const char *heap_block_kind_name(enum heap_block_kind kind);

/*
 * Bytes of the block that starts at `address`, and whose bookkeeping says so (`kind`); 0 (and
 * HEAP_BLOCK_NONE) when it is no block whose extent is known.
 */
size_t heap_block_extent(struct memory_map *memory, uintptr_t address, enum heap_block_kind *kind);

#endif
