#define _GNU_SOURCE
#include "symbol_cache.h"

#include "log.h"
#include "options.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_NAME "extsan-symbols.tsv"
/* A line is written with one write(): longer ones (a huge C++ name) are not cached. */
#define MAX_LINE 4096

/* ---- objects: path, size and mtime ------------------------------------------------------------
 */

struct object_identity {
    char *path;
    long long size, mtime_ns; /* -1: could not stat; not cached */
};

static struct object_identity objects[128];
static unsigned object_count;

static const struct object_identity *identity_of(const char *path)
{
    for (unsigned i = 0; i < object_count; i++)
        if (!strcmp(objects[i].path, path))
            return &objects[i];
    if (object_count == sizeof objects / sizeof objects[0])
        return NULL;
    struct object_identity *object = &objects[object_count];
    struct stat st;
    object->path = strdup(path);
    if (!object->path)
        return NULL;
    object->size = object->mtime_ns = -1;
    if (stat(path, &st) == 0) {
        object->size = (long long)st.st_size;
        object->mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    }
    object_count++;
    return object;
}

/* ---- entries: an open-addressing table of the lines read ------------------------------------- */

struct entry {
    uint64_t hash; /* 0: empty slot */
    const struct object_identity *object;
    uintptr_t offset;
    char *function, *file; /* one allocation: function, then file */
    int line;
};

static struct entry *entries;
static size_t entry_capacity, entry_count; /* capacity a power of two, at most half full */

static uint64_t key_hash(const struct object_identity *object, uintptr_t offset)
{
    uint64_t hash = 0xcbf29ce484222325ull; /* FNV-1a over the path, then the offset mixed in */
    for (const char *c = object->path; *c; c++)
        hash = (hash ^ (unsigned char)*c) * 0x100000001b3ull;
    hash ^= (offset + (uint64_t)object->size) * 0x9E3779B97F4A7C15ull;
    return hash ? hash : 1;
}

static struct entry *slot_for(uint64_t hash, const struct object_identity *object, uintptr_t offset)
{
    size_t mask = entry_capacity - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask)
        if (!entries[i].hash ||
            (entries[i].hash == hash && entries[i].object == object && entries[i].offset == offset))
            return &entries[i];
}

static bool make_room(void)
{
    if (entry_capacity && (entry_count + 1) * 2 <= entry_capacity)
        return true;
    size_t capacity = entry_capacity ? entry_capacity * 2 : 1024;
    struct entry *old = entries, *grown = calloc(capacity, sizeof *grown);
    if (!grown)
        return false;
    size_t old_capacity = entry_capacity;
    entries = grown, entry_capacity = capacity;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].hash)
            *slot_for(old[i].hash, old[i].object, old[i].offset) = old[i];
    free(old);
    return true;
}

static void remember(const struct object_identity *object, uintptr_t offset, const char *function,
                     const char *file, int line)
{
    uint64_t hash = key_hash(object, offset);
    if (!make_room())
        return;
    struct entry *entry = slot_for(hash, object, offset);
    if (entry->hash)
        return; /* two processes described it at once: both lines say the same */
    size_t function_size = strlen(function) + 1, file_size = strlen(file) + 1;
    char *text = malloc(function_size + file_size);
    if (!text)
        return;
    memcpy(text, function, function_size);
    memcpy(text + function_size, file, file_size);
    *entry = (struct entry){.hash = hash,
                            .object = object,
                            .offset = offset,
                            .function = text,
                            .file = text + function_size,
                            .line = line};
    entry_count++;
}

/* ---- the file ----------------------------------------------------------------------------------
 */

static int cache_fd = -1;
static bool cache_tried; /* opened, or found unusable */
static off_t read_up_to; /* bytes of the file parsed: whole lines */
static unsigned long found_count, described_count;

static void open_cache(void)
{
    cache_tried = true;
    if (!extsan_options.log_dir[0])
        return;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", extsan_options.log_dir, CACHE_NAME) >=
        (int)sizeof path)
        return;
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        if (fd >= 0)
            close(fd);
        extsan_log(1, "symbol cache: %s is not this user's regular file; not used", path);
        return;
    }
    cache_fd = fd;
}

/* The line's fields split at tabs into `field`; false when it is not a cache line. */
static bool parse_line(char *line, const char **module, long long *size, long long *mtime_ns,
                       uintptr_t *offset, const char **function, const char **file, int *number)
{
    char *field[7];
    for (int i = 0; i < 7; i++) {
        field[i] = line;
        char *tab = strchr(line, '\t');
        if ((tab == NULL) != (i == 6))
            return false;
        if (tab)
            *tab = '\0', line = tab + 1;
    }
    char *end;
    errno = 0;
    *size = strtoll(field[1], &end, 10);
    if (*end || errno)
        return false;
    *mtime_ns = strtoll(field[2], &end, 10);
    if (*end || errno)
        return false;
    *offset = (uintptr_t)strtoull(field[3], &end, 16);
    if (*end || errno)
        return false;
    long value = strtol(field[6], &end, 10);
    if (*end || errno || value < 0 || value > INT_MAX)
        return false;
    *module = field[0], *function = field[4], *file = field[5], *number = (int)value;
    return true;
}

/* Parses what other processes (and this one) appended since the last read. */
static void read_new_lines(void)
{
    struct stat st;
    if (cache_fd < 0 || fstat(cache_fd, &st) != 0 || st.st_size <= read_up_to)
        return;
    size_t length = (size_t)(st.st_size - read_up_to);
    char *text = malloc(length + 1);
    if (!text)
        return;
    ssize_t got = pread(cache_fd, text, length, read_up_to);
    if (got <= 0) {
        free(text);
        return;
    }
    text[got] = '\0';
    char *line = text, *newline;
    while ((newline = memchr(line, '\n', (size_t)(text + got - line)))) {
        *newline = '\0';
        const char *module, *function, *file;
        long long size, mtime_ns;
        uintptr_t offset;
        int number;
        if (parse_line(line, &module, &size, &mtime_ns, &offset, &function, &file, &number)) {
            const struct object_identity *object = identity_of(module);
            if (object && object->size == size && object->mtime_ns == mtime_ns)
                remember(object, offset, function, file, number);
        }
        line = newline + 1;
    }
    read_up_to += line - text; /* a last line without its newline is read again next time */
    free(text);
}

static struct entry *lookup(const struct object_identity *object, uintptr_t offset)
{
    if (!entry_capacity)
        return NULL;
    struct entry *entry = slot_for(key_hash(object, offset), object, offset);
    return entry->hash ? entry : NULL;
}

static void copy_field(char *out, size_t size, const char *text)
{
    size_t length = strnlen(text, size - 1);
    memcpy(out, text, length);
    out[length] = '\0';
}

bool symbol_cache_find(struct frame_info *frame)
{
    if (!cache_tried)
        open_cache();
    const struct object_identity *object = identity_of(frame->module);
    if (!object || object->size < 0)
        return false;
    struct entry *entry = lookup(object, frame->module_offset);
    if (!entry) {
        read_new_lines();
        entry = lookup(object, frame->module_offset);
    }
    if (!entry)
        return false;
    copy_field(frame->function, sizeof frame->function, entry->function);
    copy_field(frame->file, sizeof frame->file, entry->file);
    frame->line = entry->line;
    found_count++;
    return true;
}

static bool has_separator(const char *text)
{
    return strpbrk(text, "\t\n") != NULL;
}

void symbol_cache_add(const struct frame_info *frame)
{
    described_count++;
    const struct object_identity *object = identity_of(frame->module);
    if (!object || object->size < 0 || has_separator(frame->module) ||
        has_separator(frame->function) || has_separator(frame->file))
        return;
    remember(object, frame->module_offset, frame->function, frame->file, frame->line);
    if (cache_fd < 0)
        return;
    char line[MAX_LINE];
    int length = snprintf(line, sizeof line, "%s\t%lld\t%lld\t%" PRIxPTR "\t%s\t%s\t%d\n",
                          object->path, object->size, object->mtime_ns, frame->module_offset,
                          frame->function, frame->file, frame->line);
    if (length > 0 && length < (int)sizeof line && write(cache_fd, line, (size_t)length) < 0)
        extsan_log(1, "symbol cache: could not append (%s)", strerror(errno));
}

void symbol_cache_reset_counts(void)
{
    found_count = described_count = 0;
}

void symbol_cache_log_counts(void)
{
    if (found_count || described_count)
        extsan_log(1, "symbols: %lu call sites from the run's cache, %lu described", found_count,
                   described_count);
}
