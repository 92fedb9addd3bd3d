#define _GNU_SOURCE
#include "got_patch.h"
#include "call_stubs.h"
#include "../detector/runtime/loaded_objects.h"
#include "../detector/runtime/options.h"
#include "../detector/threads/call_check.h"
#include "../detector/threads/locks.h"

#include "../detector/runtime/log.h"
#include "../detector/runtime/python_api.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__x86_64__)
#define RELOC_JUMP_SLOT R_X86_64_JUMP_SLOT
#define RELOC_GLOB_DAT  R_X86_64_GLOB_DAT
#elif defined(__aarch64__)
#define RELOC_JUMP_SLOT R_AARCH64_JUMP_SLOT
#define RELOC_GLOB_DAT  R_AARCH64_GLOB_DAT
#else
#error "extsan's GOT patcher knows x86_64 and aarch64 relocations only"
#endif

/* What the patcher needs to know about one loaded object. */
struct loaded_object {
    const char *name;
    ElfW(Addr) base;
    const ElfW(Sym) * symbols;
    const char *strings;
    bool is_python_runtime;
    /* RELRO pages are read-only after start-up; slots there need an mprotect around the write. */
    ElfW(Addr) relro_start, relro_end;
};

/* glibc relocates most .dynamic pointers in place, but not for every object (the vdso). */
static ElfW(Addr) dynamic_pointer(const struct loaded_object *object, ElfW(Addr) pointer)
{
    return pointer < object->base ? pointer + object->base : pointer;
}

static const struct hook *hook_for_symbol(const char *name)
{
    for (unsigned i = 0; i < hook_count; i++)
        if (!strcmp(hooks[i].name, name))
            return &hooks[i];
    return NULL;
}

static bool hook_applies(const struct hook *hook, const struct loaded_object *object)
{
    switch (hook->scope) {
    case PATCH_IN_EXTENSIONS:
        return !object->is_python_runtime;
    case PATCH_IN_RUNTIME:
        return object->is_python_runtime;
    case PATCH_EVERYWHERE:
        return true;
    }
    return false;
}

static bool write_slot(const struct loaded_object *object, void **slot, void *value)
{
    ElfW(Addr) address = (ElfW(Addr))slot;
    bool in_relro = address >= object->relro_start && address < object->relro_end;
    uintptr_t page = address & ~(uintptr_t)(getpagesize() - 1);
    if (in_relro && mprotect((void *)page, getpagesize(), PROT_READ | PROT_WRITE) != 0) {
        extsan_log(1, "cannot make the GOT of %s writable; its calls stay unchecked", object->name);
        return false;
    }
    /* An aligned pointer store: a thread calling through the slot sees the old or the new. */
    __atomic_store_n(slot, value, __ATOMIC_RELEASE);
    if (in_relro)
        mprotect((void *)page, getpagesize(), PROT_READ);
    return true;
}

/* The runtime's executable segments: where its functions are (its data is elsewhere). */
static struct {
    uintptr_t start, end;
} runtime_code[4];
static unsigned runtime_code_count;
static bool runtime_code_known;

/* The runtime is the object whose loaded segments hold Py_IsInitialized. */
static bool holds_runtime(const struct dl_phdr_info *info)
{
    uintptr_t probe = (uintptr_t)python_api.is_initialized;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *header = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + header->p_vaddr;
        if (header->p_type == PT_LOAD && probe >= start && probe < start + header->p_memsz)
            return true;
    }
    return false;
}

static int note_runtime_code(struct dl_phdr_info *info, size_t size, void *unused)
{
    (void)size, (void)unused;
    bool is_runtime = holds_runtime(info);
    for (int i = 0; is_runtime && i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *header = &info->dlpi_phdr[i];
        if (header->p_type != PT_LOAD || !(header->p_flags & PF_X) ||
            runtime_code_count == sizeof runtime_code / sizeof runtime_code[0])
            continue;
        uintptr_t start = info->dlpi_addr + header->p_vaddr;
        runtime_code[runtime_code_count].start = start;
        runtime_code[runtime_code_count++].end = start + header->p_memsz;
    }
    return is_runtime;
}

static bool in_runtime_code(const void *address)
{
    if (!runtime_code_known) {
        dl_iterate_phdr(note_runtime_code, NULL);
        runtime_code_known = true;
    }
    for (unsigned i = 0; i < runtime_code_count; i++)
        if ((uintptr_t)address >= runtime_code[i].start && (uintptr_t)address < runtime_code[i].end)
            return true;
    return false;
}

/*
 * The generic wrapper (call_stubs.h) for a C-API function an extension imports: a function the
 * runtime defines (in its code, not its data: PyExc_*, type objects) that its documentation does
 * not let a thread call without an attached thread state. NULL: leave the slot alone. Each name
 * is judged once per process (call_stubs_lookup).
 */
static void *checked_call_stub(const char *name)
{
    /* Not a C-API name (libc's, the C++ runtime's): not judged, nor remembered. */
    if (!extsan_options.check_calls ||
        (strncmp(name, "Py", 2) != 0 && strncmp(name, "_Py", 3) != 0))
        return NULL;
    void *stub;
    if (call_stubs_lookup(name, &stub))
        return stub;
    void *real = call_check_exempt(name) ? NULL : dlsym(RTLD_DEFAULT, name);
    return call_stubs_assign(name, real && in_runtime_code(real) ? real : NULL);
}

/* Patches the hooked slots among `count` relocations of one table; returns slots written. */
static unsigned patch_relocations(const struct loaded_object *object, const void *table,
                                  size_t table_size, bool with_addend)
{
    size_t entry_size = with_addend ? sizeof(ElfW(Rela)) : sizeof(ElfW(Rel));
    unsigned written = 0;
    for (size_t offset = 0; offset + entry_size <= table_size; offset += entry_size) {
        /* Rel is a prefix of Rela: r_offset and r_info sit at the same place in both. */
        const ElfW(Rel) *relocation = (const ElfW(Rel) *)((const char *)table + offset);
        unsigned type = ELF64_R_TYPE(relocation->r_info);
        if (type != RELOC_JUMP_SLOT && type != RELOC_GLOB_DAT)
            continue;
        const ElfW(Sym) *symbol = &object->symbols[ELF64_R_SYM(relocation->r_info)];
        if (symbol->st_shndx != SHN_UNDEF)
            continue; /* the object's own definition: its internal calls are not ours to see */
        const char *name = object->strings + symbol->st_name;
        const struct hook *hook = hook_for_symbol(name);
        void *wrapper = NULL;
        if (hook && *hook->real && hook_applies(hook, object))
            wrapper = hook->wrapper;
        else if (!hook && !object->is_python_runtime)
            wrapper = checked_call_stub(name);
        void **slot = (void **)(object->base + relocation->r_offset);
        if (!wrapper || *slot == wrapper)
            continue;
        if (write_slot(object, slot, wrapper)) {
            written++;
            extsan_log(2, "patched %s in %s", name, object->name);
        }
    }
    return written;
}

static bool is_extsan_or_loader(const char *name)
{
    static const char *const skipped[] = {"libextsan", "ld-linux", "linux-vdso", "ld64.so"};
    for (unsigned i = 0; i < sizeof skipped / sizeof skipped[0]; i++)
        if (strstr(name, skipped[i]))
            return true;
    return false;
}

/* Every object visited, extsan's own and the loader's included, is noted (loaded_objects.h). */
static void note_object(const struct dl_phdr_info *info)
{
    uintptr_t start, end;
    if (loaded_object_span(info, &start, &end))
        loaded_objects_note(info->dlpi_name, info->dlpi_addr, start, end);
}

/* The dynamic linker's load events when the objects were last patched (loaded_objects.h). */
static _Atomic unsigned long long events_patched;

static int patch_one_object(struct dl_phdr_info *info, size_t size, void *total_written)
{
    (void)size;
    struct loaded_object object = {.name = info->dlpi_name[0] ? info->dlpi_name : "(executable)",
                                   .base = info->dlpi_addr};
    note_object(info);
    if (is_extsan_or_loader(object.name))
        return 0;
    const ElfW(Dyn) *dynamic = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *header = &info->dlpi_phdr[i];
        if (header->p_type == PT_DYNAMIC)
            dynamic = (const ElfW(Dyn) *)(info->dlpi_addr + header->p_vaddr);
        if (header->p_type == PT_GNU_RELRO) {
            object.relro_start = info->dlpi_addr + header->p_vaddr;
            object.relro_end = object.relro_start + header->p_memsz;
        }
    }
    object.is_python_runtime = holds_runtime(info);
    if (!dynamic)
        return 0;
    ElfW(Addr) jmprel = 0, rela = 0, rel = 0;
    size_t jmprel_size = 0, rela_size = 0, rel_size = 0;
    bool jmprel_with_addend = true;
    for (const ElfW(Dyn) *entry = dynamic; entry->d_tag != DT_NULL; entry++) {
        switch (entry->d_tag) {
        case DT_SYMTAB:
            object.symbols = (const ElfW(Sym) *)dynamic_pointer(&object, entry->d_un.d_ptr);
            break;
        case DT_STRTAB:
            object.strings = (const char *)dynamic_pointer(&object, entry->d_un.d_ptr);
            break;
        case DT_JMPREL:
            jmprel = dynamic_pointer(&object, entry->d_un.d_ptr);
            break;
        case DT_PLTRELSZ:
            jmprel_size = entry->d_un.d_val;
            break;
        case DT_PLTREL:
            jmprel_with_addend = entry->d_un.d_val == DT_RELA;
            break;
        case DT_RELA:
            rela = dynamic_pointer(&object, entry->d_un.d_ptr);
            break;
        case DT_RELASZ:
            rela_size = entry->d_un.d_val;
            break;
        case DT_REL:
            rel = dynamic_pointer(&object, entry->d_un.d_ptr);
            break;
        case DT_RELSZ:
            rel_size = entry->d_un.d_val;
            break;
        }
    }
    if (!object.symbols || !object.strings)
        return 0;
    unsigned written = 0;
    if (jmprel)
        written +=
            patch_relocations(&object, (const void *)jmprel, jmprel_size, jmprel_with_addend);
    if (rela)
        written += patch_relocations(&object, (const void *)rela, rela_size, true);
    if (rel)
        written += patch_relocations(&object, (const void *)rel, rel_size, false);
    if (written)
        extsan_log(1, "patched %u call slot%s in %s", written, written == 1 ? "" : "s",
                   object.name);
    *(unsigned *)total_written += written;
    return 0;
}

unsigned got_patch_loaded_objects(void)
{
    unsigned written = 0;
    lock_acquire(LOCK_PATCH);
    /* Counted before the walk: an object loaded meanwhile is caught by the next look. */
    atomic_store_explicit(&events_patched, loaded_objects_events(), memory_order_relaxed);
    dl_iterate_phdr(patch_one_object, &written);
    lock_release(LOCK_PATCH);
    return written;
}

bool got_patch_objects_loaded_since(void)
{
    if (loaded_objects_events() == atomic_load_explicit(&events_patched, memory_order_relaxed))
        return false;
    got_patch_loaded_objects();
    return true;
}
