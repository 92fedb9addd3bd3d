/*
 * Unit test of stack capture, the stack depot and the symbolizer.
 *
 * Build with -g (file:line checks) and without -fomit-frame-pointer worries: libunwind reads the
 * unwind tables. Example:
 *   gcc -std=c11 -g -O1 -Idetector/threads -Idetector/runtime -Idetector/heap -Idetector/report \
 *       detector/report/stacks.c detector/report/symbolize.c \
 *       tests/unit/test_stacks.c $(pkg-config --cflags --libs libunwind libdw) -ldl -lpthread
 */
#define _GNU_SOURCE

#include "options.h"
#include "stacks.h"
#include "symbolize.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static bool ends_with(const char *string, const char *suffix)
{
    size_t length = strlen(string), suffix_length = strlen(suffix);
    return length >= suffix_length && strcmp(string + length - suffix_length, suffix) == 0;
}

/* ---------------------------------------------------------------------------------------------
 * Frames with known names and lines. noinline keeps each a frame of its own; the empty asm after
 * the call keeps the call from becoming a tail call, which would drop the frame as well.
 */

static int capture_line;

__attribute__((noinline)) static unsigned capture_here(uintptr_t *pcs, unsigned skip)
{
    capture_line = __LINE__ + 1;
    unsigned depth = stack_capture(pcs, STACK_MAX_DEPTH, skip);
    __asm__ volatile("" ::: "memory");
    return depth;
}

__attribute__((noinline)) static unsigned capture_from_caller(uintptr_t *pcs)
{
    unsigned depth = capture_here(pcs, 1);
    __asm__ volatile("" ::: "memory");
    return depth;
}

/* The load bias of the test program, what addr2line offsets are relative to. */
static int find_main_program_bias(struct dl_phdr_info *info, size_t size, void *bias)
{
    (void)size;
    *(uintptr_t *)bias = info->dlpi_addr;
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Tests
 */

static void test_capture_and_symbolize(void)
{
    uintptr_t pcs[STACK_MAX_DEPTH];
    unsigned depth = capture_here(pcs, 0);
    CHECK(depth > 2, "depth %u", depth);

    struct frame_info frame;
    CHECK(symbolize_pc(pcs[0], true, &frame), "pc %#lx", (unsigned long)pcs[0]);
    CHECK(frame.pc == pcs[0], "pc %#lx reported as %#lx", (unsigned long)pcs[0],
          (unsigned long)frame.pc);
    CHECK(strcmp(frame.function, "capture_here") == 0, "function '%s'", frame.function);
    CHECK(ends_with(frame.file, "test_stacks.c"), "file '%s'", frame.file);
    CHECK(frame.line == capture_line, "line %d, expected %d", frame.line, capture_line);

    char executable[4096];
    ssize_t length = readlink("/proc/self/exe", executable, sizeof executable - 1);
    executable[length > 0 ? length : 0] = '\0';
    CHECK(strcmp(frame.module, executable) == 0, "module '%s', expected '%s'", frame.module,
          executable);
    uintptr_t bias = 0;
    dl_iterate_phdr(find_main_program_bias, &bias);
    CHECK(frame.module_offset == pcs[0] - bias, "offset %#lx", (unsigned long)frame.module_offset);

    CHECK(symbolize_pc(pcs[1], true, &frame), "pc %#lx", (unsigned long)pcs[1]);
    CHECK(strcmp(frame.function, "test_capture_and_symbolize") == 0, "function '%s'",
          frame.function);

    /* full = false: module and offset only. */
    struct frame_info brief;
    CHECK(symbolize_pc(pcs[0], false, &brief), "pc %#lx", (unsigned long)pcs[0]);
    CHECK(strcmp(brief.module, executable) == 0 && brief.module_offset == pcs[0] - bias,
          "module '%s' offset %#lx", brief.module, (unsigned long)brief.module_offset);
    CHECK(brief.function[0] == '\0' && brief.file[0] == '\0' && brief.line == 0,
          "function '%s' file '%s' line %d", brief.function, brief.file, brief.line);
}

static void test_capture_skip(void)
{
    uintptr_t pcs[STACK_MAX_DEPTH];
    unsigned depth = capture_from_caller(pcs);
    CHECK(depth > 1, "depth %u", depth);
    struct frame_info frame;
    symbolize_pc(pcs[0], true, &frame);
    CHECK(strcmp(frame.function, "capture_from_caller") == 0, "function '%s'", frame.function);

    uintptr_t few[3];
    CHECK(stack_capture(few, 3, 0) == 3, "max_depth not honoured");
    CHECK(stack_capture(few, 3, 100000) == 0, "an impossible skip must give no frames");
}

static void test_depot_identity(void)
{
    uintptr_t first[STACK_MAX_DEPTH], second[STACK_MAX_DEPTH];
    unsigned first_depth = capture_here(first, 0);
    unsigned second_depth = capture_from_caller(second);

    stack_id first_id = stack_depot_put(first, first_depth);
    stack_id second_id = stack_depot_put(second, second_depth);
    CHECK(first_id != 0 && second_id != 0, "ids %u %u", first_id, second_id);
    CHECK(first_id != second_id, "different stacks share id %u", first_id);
    CHECK(stack_depot_put(first, first_depth) == first_id, "same stack, new id");

    uintptr_t copy[STACK_MAX_DEPTH];
    memcpy(copy, first, first_depth * sizeof copy[0]);
    CHECK(stack_depot_put(copy, first_depth) == first_id, "same content elsewhere, new id");
    CHECK(stack_depot_put(first, first_depth - 1) != first_id, "a prefix is another stack");

    unsigned depth = 0;
    const uintptr_t *stored = stack_depot_get(first_id, &depth);
    CHECK(stored != NULL && depth == first_depth &&
              memcmp(stored, first, depth * sizeof first[0]) == 0,
          "stored stack differs");

    CHECK(stack_depot_get(0, &depth) == NULL && depth == 0, "id 0 is no stack");
    CHECK(stack_depot_get(0xfffffff0u, &depth) == NULL, "unknown id resolves");
    CHECK(stack_depot_put(first, 0) == 0, "an empty stack got an id");
}

/* Enough distinct stacks to grow the hash table several times. */
static void test_depot_many(void)
{
    enum { count = 100000, depth = 6 };
    static stack_id ids[count];
    uintptr_t pcs[depth];
    bool all_stored = true, all_found = true, all_same = true;
    for (unsigned i = 0; i < count; i++) {
        for (unsigned j = 0; j < depth; j++)
            pcs[j] = 0x400000u + i * 64u + j;
        ids[i] = stack_depot_put(pcs, depth);
        all_stored &= ids[i] != 0;
    }
    for (unsigned i = 0; i < count; i++) {
        for (unsigned j = 0; j < depth; j++)
            pcs[j] = 0x400000u + i * 64u + j;
        unsigned stored_depth = 0;
        const uintptr_t *stored = stack_depot_get(ids[i], &stored_depth);
        all_found &=
            stored != NULL && stored_depth == depth && memcmp(stored, pcs, sizeof pcs) == 0;
        all_same &= stack_depot_put(pcs, depth) == ids[i];
    }
    CHECK(all_stored, "a put failed");
    CHECK(all_found, "a stored stack is wrong");
    CHECK(all_same, "a repeated put gave a new id");
}

/*
 * Threads put overlapping stacks and read them back without the lock: every thread must get the
 * same id for the same stack.
 */
enum { thread_count = 4, shared_stacks = 5000 };
static stack_id ids_by_thread[thread_count][shared_stacks];

static void *put_shared_stacks(void *arg)
{
    unsigned thread = (unsigned)(uintptr_t)arg;
    for (unsigned n = 0; n < shared_stacks; n++) {
        unsigned i = (n * 7919u + thread * 1237u) % shared_stacks; /* a different order each */
        uintptr_t pcs[3] = {0x900000u + i, 0x910000u + i, 0x920000u};
        stack_id id = stack_depot_put(pcs, 3);
        unsigned depth = 0;
        const uintptr_t *stored = stack_depot_get(id, &depth);
        ids_by_thread[thread][i] = stored != NULL && depth == 3 && stored[0] == pcs[0] ? id : 0;
    }
    return NULL;
}

static void test_depot_threads(void)
{
    pthread_t threads[thread_count];
    for (unsigned t = 0; t < thread_count; t++)
        pthread_create(&threads[t], NULL, put_shared_stacks, (void *)(uintptr_t)t);
    for (unsigned t = 0; t < thread_count; t++)
        pthread_join(threads[t], NULL);
    bool agree = true;
    for (unsigned i = 0; i < shared_stacks; i++)
        for (unsigned t = 0; t < thread_count; t++)
            agree &= ids_by_thread[t][i] != 0 && ids_by_thread[t][i] == ids_by_thread[0][i];
    CHECK(agree, "threads disagree on ids");
}

static void test_depot_reset_after_fork(void)
{
    uintptr_t pcs[2] = {0x1234, 0x5678};
    stack_id parent_id = stack_depot_put(pcs, 2);
    pid_t child = fork();
    if (child == 0) {
        stack_depot_reset_after_fork();
        unsigned depth;
        bool forgotten = stack_depot_get(parent_id, &depth) == NULL;
        stack_id first = stack_depot_put(pcs, 2);
        _exit(forgotten && first == 1 && stack_depot_get(first, &depth) != NULL ? 0 : 1);
    }
    int status = 0;
    CHECK(child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0,
          "child status %#x", status);
    unsigned depth;
    CHECK(stack_depot_get(parent_id, &depth) != NULL, "the parent lost its stack");
}

/*
 * libstdc++ arrives after the symbolizer has started (so its session must be refreshed), and
 * RTLD_LOCAL, as Python loads extension modules: __cxa_demangle is not in the global scope.
 */
static void test_demangle_late_loaded_cxx(void)
{
    void *libstdcxx = dlopen("libstdc++.so.6", RTLD_NOW | RTLD_LOCAL);
    CHECK(libstdcxx != NULL, "dlopen: %s", dlerror());
    if (libstdcxx == NULL)
        return;
    void *what = dlsym(libstdcxx, "_ZNKSt9exception4whatEv");
    CHECK(what != NULL, "dlsym: %s", dlerror());
    if (what == NULL)
        return;
    struct frame_info frame;
    /* symbolize_pc looks up pc - 1: pass one past the entry to name the function itself. */
    CHECK(symbolize_pc((uintptr_t)what + 1, true, &frame), "libstdc++ not found");
    CHECK(strcmp(frame.function, "std::exception::what() const") == 0, "function '%s'",
          frame.function);
    CHECK(strstr(frame.module, "libstdc++.so.6") != NULL, "module '%s'", frame.module);
}

/* The child must not inherit the parent's session (or its lock) but build its own. */
static void test_symbolize_in_forked_child(void)
{
    uintptr_t pcs[STACK_MAX_DEPTH];
    unsigned depth = capture_here(pcs, 0);
    pid_t child = fork();
    if (child == 0) {
        struct frame_info frame;
        bool named = depth > 0 && symbolize_pc(pcs[0], true, &frame) &&
                     strcmp(frame.function, "capture_here") == 0 && frame.line == capture_line;
        _exit(named ? 0 : 1);
    }
    int status = 0;
    CHECK(child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0,
          "child status %#x", status);
}

static int anchor;

static void test_unknown_and_same_object(void)
{
    struct frame_info frame;
    CHECK(!symbolize_pc(0, true, &frame), "pc 0 symbolised");
    void *anonymous = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(!symbolize_pc((uintptr_t)anonymous + 16, true, &frame) && frame.module[0] == '\0',
          "anonymous memory symbolised as '%s'", frame.module);
    munmap(anonymous, 4096);

    uintptr_t pcs[STACK_MAX_DEPTH];
    unsigned depth = capture_here(pcs, 0);
    CHECK(depth > 0 && pc_in_same_object(pcs[0], &anchor), "own pc not in own object");
    void *libc_function = dlsym(RTLD_DEFAULT, "malloc");
    CHECK(libc_function != NULL && !pc_in_same_object((uintptr_t)libc_function + 1, &anchor),
          "libc in the test program");
    CHECK(!pc_in_same_object(0, &anchor), "pc 0 in an object");
}

int main(void)
{
    options_set_defaults(&extsan_options); /* the runtime parses EXTSAN_OPTIONS first */
    test_capture_and_symbolize();
    test_capture_skip();
    test_depot_identity();
    test_depot_many();
    test_depot_threads();
    test_depot_reset_after_fork();
    test_demangle_late_loaded_cxx();
    test_unknown_and_same_object();
    test_symbolize_in_forked_child();
    return checks_summary();
}
