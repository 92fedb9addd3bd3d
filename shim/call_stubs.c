/* The stub pool and the common routine of the generic C-API wrapper: see call_stubs.h. */
#define _GNU_SOURCE
#include "call_stubs.h"

#include "../detector/threads/call_check.h"
#include "../detector/threads/gil.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* What stub i stands for; read by the common routine (the real function) and its slow path. */
struct call_entry {
    void *real;
    const char *name;
};
struct call_entry extsan_call_entries[CALL_STUB_COUNT];
static unsigned entries_used;

/* The slow path, called by the common routine with the argument registers saved. */
void extsan_call_slow_path(uintptr_t index, uintptr_t first_argument);
void extsan_call_slow_path(uintptr_t index, uintptr_t first_argument)
{
    /* The exact check, which also locates what the fast path reads on its first calls. */
    if (gil_attached_thread_state())
        return;
    call_check_without_gil(extsan_call_entries[index].name, first_argument);
}

#if defined(__x86_64__)

#define STUB_BYTES 16 /* push imm32 (5) + jmp rel32 (5), padded */

/*
 * The offsets the common routine reads, as assembler symbols (an extended asm statement is the
 * only way to give top-level asm a C constant).
 */
__attribute__((used)) static void call_stub_constants(void)
{
#if PY_VERSION_HEX < 0x030C0000
    __asm__(".equ extsan_thread_id_offset, %c0" ::"i"(offsetof(PyThreadState, thread_id)));
#endif
    __asm__(".equ extsan_call_entry_shift, %c0" ::"i"(__builtin_ctz(sizeof(struct call_entry))));
}

/*
 * The pool: stub i pushes i and jumps to the common routine. Explicit encodings keep every stub
 * the same size (an assembler would pick short forms for small numbers and near targets).
 */
__asm__(".text\n"
        ".p2align 4\n"
        ".globl extsan_call_stubs\n"
        ".hidden extsan_call_stubs\n"
        "extsan_call_stubs:\n"
        ".set extsan_stub_index, 0\n"
        ".rept 4096\n"
        "    .byte 0x68\n" /* push imm32 */
        "    .long extsan_stub_index\n"
        "    .byte 0xe9\n" /* jmp rel32 */
        "    .long extsan_call_common - . - 4\n"
        "    .p2align 4, 0xcc\n"
        "    .set extsan_stub_index, extsan_stub_index + 1\n"
        ".endr\n"
        ".globl extsan_call_stubs_end\n"
        ".hidden extsan_call_stubs_end\n"
        "extsan_call_stubs_end:\n");
_Static_assert(CALL_STUB_COUNT == 4096, "the pool's .rept count");

/*
 * The fast path's test: does the thread have an attached thread state? The same as
 * gil_attached_thread_state() once the variables are located (until then, and whenever the
 * answer is no, the slow path decides). %r10 and %r11 are free at a call: neither carries an
 * argument.
 */
#if PY_VERSION_HEX >= 0x030C0000
#define ATTACHED_TEST                                                                              \
    "    movq gil_thread_state_variable@gottpoff(%rip), %r10\n"                                    \
    "    movq %fs:(%r10), %r10\n"                                                                  \
    "    testq %r10, %r10\n"                                                                       \
    "    jz 1f\n"                                                                                  \
    "    movq (%r10), %r10\n"                                                                      \
    "    testq %r10, %r10\n"                                                                       \
    "    jz 1f\n"
#else
/* The GIL holder is this thread's remembered state, with this thread's id (gil_holder_if_ours). */
#define ATTACHED_TEST                                                                              \
    "    movq gil_holder_variable(%rip), %r10\n"                                                   \
    "    testq %r10, %r10\n"                                                                       \
    "    jz 1f\n"                                                                                  \
    "    movq (%r10), %r10\n"                                                                      \
    "    testq %r10, %r10\n"                                                                       \
    "    jz 1f\n"                                                                                  \
    "    movq gil_own_state@gottpoff(%rip), %r11\n"                                                \
    "    cmpq %fs:(%r11), %r10\n"                                                                  \
    "    jne 1f\n"                                                                                 \
    "    movq extsan_thread_id_offset(%r10), %r10\n"                                               \
    "    movq gil_this_thread@gottpoff(%rip), %r11\n"                                              \
    "    cmpq %fs:(%r11), %r10\n"                                                                  \
    "    jne 1f\n"
#endif

/*
 * On entry: the stub's number at (%rsp), the caller's return address above it, the arguments
 * where the caller put them. The slow path saves the six argument registers, %rax and
 * %xmm0-%xmm7 (every register a call may pass something in) around the C call.
 */
__asm__(".text\n"
        ".p2align 4\n"
        ".type extsan_call_common, @function\n"
        "extsan_call_common:\n"
        "    .cfi_startproc\n"
        "    .cfi_def_cfa_offset 16\n" ATTACHED_TEST "0:\n"
        "    popq %r11\n"
        "    .cfi_adjust_cfa_offset -8\n"
        "    shlq $extsan_call_entry_shift, %r11\n"
        "    leaq extsan_call_entries(%rip), %r10\n"
        "    jmp *(%r10,%r11)\n"
        "    .cfi_adjust_cfa_offset 8\n"
        "1:\n"
        "    pushq %rbp\n"
        "    .cfi_adjust_cfa_offset 8\n"
        "    .cfi_rel_offset %rbp, 0\n"
        "    movq %rsp, %rbp\n"
        "    .cfi_def_cfa_register %rbp\n"
        "    subq $192, %rsp\n"
        "    andq $-16, %rsp\n"
        "    movq %rdi, 0(%rsp)\n"
        "    movq %rsi, 8(%rsp)\n"
        "    movq %rdx, 16(%rsp)\n"
        "    movq %rcx, 24(%rsp)\n"
        "    movq %r8, 32(%rsp)\n"
        "    movq %r9, 40(%rsp)\n"
        "    movq %rax, 48(%rsp)\n"
        "    movdqa %xmm0, 64(%rsp)\n"
        "    movdqa %xmm1, 80(%rsp)\n"
        "    movdqa %xmm2, 96(%rsp)\n"
        "    movdqa %xmm3, 112(%rsp)\n"
        "    movdqa %xmm4, 128(%rsp)\n"
        "    movdqa %xmm5, 144(%rsp)\n"
        "    movdqa %xmm6, 160(%rsp)\n"
        "    movdqa %xmm7, 176(%rsp)\n"
        "    movq 8(%rbp), %rdi\n"
        "    movq 0(%rsp), %rsi\n"
        "    call extsan_call_slow_path\n"
        "    movq 0(%rsp), %rdi\n"
        "    movq 8(%rsp), %rsi\n"
        "    movq 16(%rsp), %rdx\n"
        "    movq 24(%rsp), %rcx\n"
        "    movq 32(%rsp), %r8\n"
        "    movq 40(%rsp), %r9\n"
        "    movq 48(%rsp), %rax\n"
        "    movdqa 64(%rsp), %xmm0\n"
        "    movdqa 80(%rsp), %xmm1\n"
        "    movdqa 96(%rsp), %xmm2\n"
        "    movdqa 112(%rsp), %xmm3\n"
        "    movdqa 128(%rsp), %xmm4\n"
        "    movdqa 144(%rsp), %xmm5\n"
        "    movdqa 160(%rsp), %xmm6\n"
        "    movdqa 176(%rsp), %xmm7\n"
        "    movq %rbp, %rsp\n"
        "    popq %rbp\n"
        "    .cfi_def_cfa %rsp, 16\n"
        "    .cfi_restore %rbp\n"
        "    jmp 0b\n"
        "    .cfi_endproc\n"
        ".size extsan_call_common, .-extsan_call_common\n");

extern const char extsan_call_stubs[], extsan_call_stubs_end[];

bool call_stubs_contains(const void *address)
{
    return (const char *)address >= extsan_call_stubs &&
           (const char *)address < extsan_call_stubs_end;
}

/*
 * Every name judged, stub or not: an open-addressing index (FNV-1a hash) of names to entry
 * numbers + 1, for names with a stub, or to the negative -1 - (index in `refused`) for names
 * without one, so that each name costs one lookup per object that imports it.
 */
#define NAME_SLOTS 16384 /* a power of two, well above the stubs plus the refused names */
static int32_t name_slots[NAME_SLOTS];
static const char *refused[NAME_SLOTS / 2];
static unsigned refused_count;

static uint32_t name_hash(const char *name)
{
    uint32_t hash = 2166136261u;
    for (; *name; name++)
        hash = (hash ^ (unsigned char)*name) * 16777619u;
    return hash;
}

static const char *slot_name(int32_t value)
{
    return value > 0 ? extsan_call_entries[value - 1].name : refused[-value - 1];
}

/* The slot holding `name`, or the empty one where it would go; NULL when the index is full. */
static int32_t *name_slot(const char *name)
{
    for (uint32_t i = name_hash(name), probes = 0; probes < NAME_SLOTS; i++, probes++) {
        int32_t *slot = &name_slots[i & (NAME_SLOTS - 1)];
        if (!*slot || !strcmp(slot_name(*slot), name))
            return slot;
    }
    return NULL;
}

static void *stub_of(int32_t value)
{
    return value > 0 ? (void *)(extsan_call_stubs + (size_t)(value - 1) * STUB_BYTES) : NULL;
}

bool call_stubs_lookup(const char *name, void **stub)
{
    int32_t *slot = name_slot(name);
    *stub = slot && *slot ? stub_of(*slot) : NULL;
    return slot && *slot;
}

void *call_stubs_assign(const char *name, void *real)
{
    int32_t *slot = name_slot(name);
    if (!slot)
        return NULL;
    if (*slot)
        return stub_of(*slot);
    if ((real && entries_used == CALL_STUB_COUNT) ||
        (!real && refused_count == sizeof refused / sizeof refused[0]))
        return NULL;
    /* The importing object's string table could go with it (an object dlclose'd): a copy. */
    char *copy = strdup(name);
    if (!copy)
        return NULL;
    if (!real) {
        refused[refused_count++] = copy;
        *slot = -(int32_t)refused_count;
        return NULL;
    }
    unsigned i = entries_used++;
    extsan_call_entries[i].name = copy;
    /* Published before the slot that leads to the stub is written (got_patch: a release store). */
    __atomic_store_n(&extsan_call_entries[i].real, real, __ATOMIC_RELEASE);
    *slot = (int32_t)i + 1;
    return stub_of(*slot);
}

#else

bool call_stubs_contains(const void *address)
{
    (void)address;
    return false;
}

bool call_stubs_lookup(const char *name, void **stub)
{
    (void)name;
    *stub = NULL;
    return true; /* nothing to judge: no stubs here */
}

void *call_stubs_assign(const char *name, void *real)
{
    (void)name, (void)real;
    return NULL;
}

#endif
