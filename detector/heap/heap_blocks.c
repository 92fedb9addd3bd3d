#define _GNU_SOURCE
#include "heap_blocks.h"

#include <Python.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The most of one block the scan reads: 512 pointers. */
#define MAX_EXTENT 4096

/* ---- pymalloc ------------------------------------------------------------------------------
 * Objects/obmalloc.c of each version. The pool header's layout is the same in 3.9 to 3.13:
 *   union { block *_padding; uint count; } ref;  block *freeblock;
 *   struct pool_header *nextpool, *prevpool;
 *   uint arenaindex, szidx, nextoffset, maxnextoffset;
 * Blocks are 16-byte aligned on 64-bit (ALIGNMENT), the largest size class is 512 bytes, and
 * the blocks start after the header rounded up to the alignment (POOL_OVERHEAD). Pools are a
 * page up to 3.9, 16 KiB on 64-bit since 3.10 (USE_LARGE_POOLS, with the radix tree).
 */
#if PY_VERSION_HEX >= 0x030A0000
#define POOL_SIZE ((uintptr_t)16 * 1024)
#else
#define POOL_SIZE ((uintptr_t)4 * 1024)
#endif
#define BLOCK_ALIGNMENT    16
#define SMALL_SIZE_CLASSES (512 / BLOCK_ALIGNMENT)
#define POOL_OVERHEAD      48

struct pool_header {
    union {
        void *padding;
        unsigned count; /* blocks in use */
    } ref;
    void *freeblock;
    struct pool_header *nextpool, *prevpool;
    unsigned arenaindex, szidx, nextoffset, maxnextoffset;
};

_Static_assert(sizeof(struct pool_header) == POOL_OVERHEAD, "pymalloc's pool header");

/* The block size of the pool holding `address`, 0 when its page holds no pool in use. */
static size_t pool_block_size(struct memory_map *memory, uintptr_t address, uintptr_t *pool_out)
{
    uintptr_t pool = address & ~(POOL_SIZE - 1);
    if (!memory_map_readable(memory, pool, POOL_SIZE))
        return 0;
    const struct pool_header *header = (const struct pool_header *)pool;
    if (header->szidx >= SMALL_SIZE_CLASSES)
        return 0;
    size_t size = (size_t)(header->szidx + 1) * BLOCK_ALIGNMENT;
    /* The fields pymalloc keeps consistent: the last block's offset from the size, the next
       fresh block's offset on a block boundary, at most as many blocks in use as fit. */
    if (header->maxnextoffset != POOL_SIZE - size || header->nextoffset < POOL_OVERHEAD ||
        header->nextoffset > POOL_SIZE || (header->nextoffset - POOL_OVERHEAD) % size != 0 ||
        header->ref.count == 0 || header->ref.count > (POOL_SIZE - POOL_OVERHEAD) / size)
        return 0;
    *pool_out = pool;
    return size;
}

/*
 * A pool's free blocks, from its free list: a freed block keeps the words of its last use, and a
 * stale pointer to it (an integer field never set, a dangling pointer) would read them as the
 * holder's. Walked once per pool and analysis, kept in a small cache by pool address.
 */
#define MAX_POOL_BLOCKS ((POOL_SIZE - POOL_OVERHEAD) / BLOCK_ALIGNMENT)
#define POOL_CACHE      64

struct pool_free_blocks {
    uintptr_t pool; /* 0: empty entry */
    bool readable;  /* the free list is well formed: the bits are true */
    uint64_t free[(MAX_POOL_BLOCKS + 63) / 64];
};

static struct pool_free_blocks pool_cache[POOL_CACHE];

static const struct pool_free_blocks *free_blocks_of(uintptr_t pool, size_t size)
{
    struct pool_free_blocks *entry = &pool_cache[(pool / POOL_SIZE) % POOL_CACHE];
    if (entry->pool == pool)
        return entry;
    *entry = (struct pool_free_blocks){.pool = pool};
    const struct pool_header *header = (const struct pool_header *)pool;
    uintptr_t block = (uintptr_t)header->freeblock;
    /* Each link must name a block of the pool's used part; a list longer than the pool is
       corrupt (or changing under us): then no block of the pool is read. */
    for (size_t steps = 0; block; steps++) {
        if (steps > MAX_POOL_BLOCKS || block < pool + POOL_OVERHEAD ||
            block >= pool + header->nextoffset || (block - pool - POOL_OVERHEAD) % size != 0)
            return entry;
        size_t index = (block - pool - POOL_OVERHEAD) / size;
        entry->free[index / 64] |= (uint64_t)1 << (index % 64);
        block = *(const uintptr_t *)block;
    }
    entry->readable = true;
    return entry;
}

/* The extent of a pymalloc block in use starting at `address`; 0 when it is none. */
static size_t pymalloc_extent(struct memory_map *memory, uintptr_t address, bool *in_pool)
{
    uintptr_t pool;
    size_t size = pool_block_size(memory, address, &pool);
    *in_pool = size != 0;
    if (!size || address < pool + POOL_OVERHEAD ||
        address >= pool + ((const struct pool_header *)pool)->nextoffset ||
        (address - pool - POOL_OVERHEAD) % size != 0)
        return 0;
    const struct pool_free_blocks *free_blocks = free_blocks_of(pool, size);
    size_t index = (address - pool - POOL_OVERHEAD) / size;
    if (!free_blocks->readable || free_blocks->free[index / 64] >> (index % 64) & 1)
        return 0;
    return size;
}

/* ---- glibc malloc ----------------------------------------------------------------------------
 * malloc/malloc.c: a chunk is its size word (the allocation's size rounded up, with three flag
 * bits) followed by the user's bytes; the allocation ends where the next chunk's size word is,
 * and that word's lowest bit says the chunk before it is in use. A chunk of its own mapping has
 * IS_MMAPPED and no next chunk: it starts a page after its header.
 */
#define PREV_INUSE  ((size_t)1)
#define IS_MMAPPED  ((size_t)2)
#define CHUNK_FLAGS ((size_t)7)
#define SIZE_WORD   sizeof(size_t)
#define MIN_CHUNK   (4 * SIZE_WORD)

/*
 * A chunk in a thread's tcache looks in use to the next chunk's header; glibc 2.29+ marks it by
 * writing one process-wide random key in its second word (tcache_entry.key), which is learnt
 * here by freeing a chunk of our own and reading that word back. 0: not learnt.
 */
static uintptr_t tcache_key;

static void learn_tcache_key(void)
{
    uintptr_t *chunk = calloc(3, sizeof(uintptr_t));
    if (!chunk)
        return;
    /* Reading a freed chunk is the point (it stays mapped, in this thread's tcache): free is
       called through a pointer the compiler's use-after-free warning does not follow. */
    void (*volatile release)(void *) = free;
    release(chunk);
    tcache_key = ((volatile const uintptr_t *)chunk)[1];
}

static size_t glibc_extent(struct memory_map *memory, uintptr_t address, enum heap_block_kind *kind)
{
    if (address % (2 * SIZE_WORD) != 0 ||
        !memory_map_readable(memory, address - SIZE_WORD, SIZE_WORD))
        return 0;
    size_t word = *(const size_t *)(address - SIZE_WORD);
    size_t chunk = word & ~CHUNK_FLAGS;
    if (chunk < MIN_CHUNK || chunk % (2 * SIZE_WORD) != 0)
        return 0;
    uintptr_t start = address - 2 * SIZE_WORD;
    if (word & IS_MMAPPED) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        if (start % page != 0 || chunk % page != 0 || !memory_map_readable(memory, start, chunk))
            return 0;
        *kind = HEAP_BLOCK_MMAPPED;
        return chunk - 2 * SIZE_WORD;
    }
    /* The next chunk's size word, which must say this chunk is in use. */
    if (!memory_map_readable(memory, start, chunk + 2 * SIZE_WORD))
        return 0;
    size_t next = *(const size_t *)(start + chunk + SIZE_WORD);
    if (!(next & PREV_INUSE) || (next & ~CHUNK_FLAGS) < MIN_CHUNK)
        return 0;
    if (tcache_key && chunk >= MIN_CHUNK && ((const uintptr_t *)address)[1] == tcache_key)
        return 0; /* freed into a tcache */
    *kind = HEAP_BLOCK_MALLOC;
    return chunk - SIZE_WORD;
}

/*
 * Whether the block holds a C string that fills it: at least three printable ASCII characters,
 * its terminator, and no more than the allocator's rounding after it. Such a block is a
 * `char *` member's (a name), and the bytes after its terminator are slack left by an earlier
 * allocation, not data. A block of pointers or numbers starts this way only when its first bytes
 * all happen to be printable and are followed by a zero.
 */
#define MIN_STRING 3

static bool holds_only_a_string(uintptr_t address, size_t extent)
{
    const unsigned char *bytes = (const unsigned char *)address;
    size_t length = 0;
    while (length < extent && bytes[length] >= 0x20 && bytes[length] < 0x7F)
        length++;
    return length >= MIN_STRING && length < extent && bytes[length] == '\0' &&
           extent < length + 1 + 2 * BLOCK_ALIGNMENT;
}

void heap_blocks_forget(void)
{
    memset(pool_cache, 0, sizeof pool_cache);
    if (!tcache_key)
        learn_tcache_key();
}

const char *heap_block_kind_name(enum heap_block_kind kind)
{
    switch (kind) {
    case HEAP_BLOCK_PYMALLOC:
        return "pymalloc block";
    case HEAP_BLOCK_MALLOC:
        return "malloc chunk";
    case HEAP_BLOCK_MMAPPED:
        return "mmapped malloc chunk";
    default:
        return "none";
    }
}

size_t heap_block_extent(struct memory_map *memory, uintptr_t address, enum heap_block_kind *kind)
{
    *kind = HEAP_BLOCK_NONE;
    if (address % BLOCK_ALIGNMENT != 0 || !memory_map_data_extent(memory, address, 1))
        return 0; /* not heap data: a loaded object's, read-only, or not mapped */
    bool in_pool;
    size_t extent = pymalloc_extent(memory, address, &in_pool);
    if (in_pool)
        *kind = extent ? HEAP_BLOCK_PYMALLOC : HEAP_BLOCK_NONE;
    else
        extent = glibc_extent(memory, address, kind);
    extent = memory_map_data_extent(memory, address, extent);
    if (!extent || holds_only_a_string(address, extent)) {
        *kind = HEAP_BLOCK_NONE;
        return 0;
    }
    return extent < MAX_EXTENT ? extent : MAX_EXTENT;
}
