/*
 * Symbolisation at report time.
 *
 * The module and its offset come from the dynamic linker (dladdr1 with the link map), which is
 * cheap and needs no debug information: the offset is taken from the object's load bias, so it
 * is what `addr2line -e module offset` expects for PIE, shared and non-PIE objects alike.
 * Function names and file:line come from libdwfl, which reads .symtab (static functions too)
 * and DWARF, and finds separate debug files the standard way (build-id, .gnu_debuglink). When
 * libdwfl knows nothing, the dynamic symbol dladdr found is the fallback name.
 *
 * One libdwfl session serves the process, behind one mutex; it never calls into Python.
 */
#define _GNU_SOURCE

#include "symbolize.h"
#include "loaded_objects.h"
#include "locks.h"
#include "symbol_cache.h"

#include <dlfcn.h>
#include <elfutils/libdwfl.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Everything below is touched only with LOCK_SYMBOLIZE held. */

static Dwfl *session;       /* NULL until the first full lookup, or after libdwfl failed */
static bool session_failed; /* libdwfl could not start: use dladdr alone from now on */

/* Objects loaded + unloaded by the dynamic linker when /proc/self/maps was last reported. */
static unsigned long long reported_load_events;

/*
 * Separate debug files are looked up locally by build-id only (/usr/lib/debug/.build-id, where
 * Debian's -dbgsym packages put them). Not dwfl_standard_find_debuginfo: its last resort loads
 * libdebuginfod with libcurl and some 25 other libraries into the host process, and may go to
 * the network; a sanitizer must not do either at exit.
 */
static const Dwfl_Callbacks proc_callbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_build_id_find_debuginfo,
};

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 */

/* Copies with truncation; dst always ends up terminated. */
static void copy_string(char *dst, size_t dst_size, const char *src)
{
    size_t length = strlen(src);
    if (length >= dst_size)
        length = dst_size - 1;
    memcpy(dst, src, length);
    dst[length] = '\0';
}

/* ---------------------------------------------------------------------------------------------
 * C++ demangling
 */

typedef char *demangle_fn(const char *mangled, char *buffer, size_t *length, int *status);

/*
 * A symbol of the C++ runtime already in the process (__cxa_demangle, type_info vtables), so
 * that extsan need not link one. Python loads extension modules RTLD_LOCAL, so the libstdc++
 * they bring is usually not in the global scope that RTLD_DEFAULT searches: ask for the runtimes
 * by soname as well, with RTLD_NOLOAD so that nothing is ever loaded for it. A handle that
 * found the symbol is kept (never closed) so that it cannot be unloaded under us.
 */
static void *cxx_runtime_symbol(const char *name)
{
    static const char *const runtimes[] = {"libstdc++.so.6", "libc++abi.so.1", "libc++.so.1"};
    void *symbol = dlsym(RTLD_DEFAULT, name);
    for (size_t i = 0; symbol == NULL && i < sizeof runtimes / sizeof runtimes[0]; i++) {
        void *runtime = dlopen(runtimes[i], RTLD_LAZY | RTLD_NOLOAD);
        if (runtime == NULL)
            continue;
        symbol = dlsym(runtime, name);
        if (symbol == NULL)
            dlclose(runtime);
    }
    return symbol;
}

static demangle_fn *find_demangler(void)
{
    static demangle_fn *demangler;
    if (demangler == NULL) {
        void *symbol = cxx_runtime_symbol("__cxa_demangle");
        /* memcpy: ISO C has no conversion from an object pointer to a function pointer. */
        if (symbol != NULL)
            memcpy(&demangler, &symbol, sizeof demangler);
    }
    return demangler;
}

bool symbolize_is_class_type_info(uintptr_t vptr)
{
    /* The Itanium ABI's type_info classes of class types; an object's vptr points two words
       into its class's vtable (past the offset-to-top and the RTTI pointer). */
    static const char *const vtables[] = {
        "_ZTVN10__cxxabiv117__class_type_infoE",
        "_ZTVN10__cxxabiv120__si_class_type_infoE",
        "_ZTVN10__cxxabiv121__vmi_class_type_infoE",
    };
    enum { COUNT = sizeof vtables / sizeof vtables[0] };
    static uintptr_t found[COUNT];
    for (size_t i = 0; i < COUNT; i++) {
        if (!found[i])
            found[i] = (uintptr_t)cxx_runtime_symbol(vtables[i]);
        if (found[i] && vptr == found[i] + 2 * sizeof(void *))
            return true;
    }
    return false;
}

bool symbolize_demangle(const char *mangled, char *out, size_t size)
{
    demangle_fn *demangle = find_demangler();
    int status = -1;
    char *demangled = demangle ? demangle(mangled, NULL, NULL, &status) : NULL;
    if (status == 0 && demangled)
        copy_string(out, size, demangled);
    free(demangled);
    return status == 0 && demangled;
}

static void set_function(struct frame_info *out, const char *name)
{
    /* Symbol versions ("__libc_start_main@@GLIBC_2.34" in glibc's .symtab) are not the name. */
    char unversioned[sizeof out->function];
    if (strchr(name, '@') != NULL) {
        copy_string(unversioned, sizeof unversioned, name);
        unversioned[strcspn(unversioned, "@")] = '\0';
        name = unversioned;
    }

    if (strncmp(name, "_Z", 2) != 0 ||
        !symbolize_demangle(name, out->function, sizeof out->function))
        copy_string(out->function, sizeof out->function, name);
}

/* ---------------------------------------------------------------------------------------------
 * Function names by bisection
 *
 * dwfl_module_addrname scans a module's whole symbol table for each address: a report of a few
 * hundred frames in libpython (tens of thousands of symbols) spent most of a short process's
 * exit there. Each module's function symbols are read once instead, sorted by address and
 * searched by bisection; an address they do not cover still goes to libdwfl. The names point
 * into the session's ELF data: the indexes go with the session.
 */

struct function_symbol {
    uintptr_t start, end;
    const char *name;
    bool global;
};

struct symbol_index {
    Dwfl_Module *module;
    struct function_symbol *symbols;
    size_t count;
};

static struct symbol_index symbol_indexes[128];
static unsigned symbol_index_count;

static void drop_symbol_indexes(void)
{
    for (unsigned i = 0; i < symbol_index_count; i++)
        free(symbol_indexes[i].symbols);
    symbol_index_count = 0;
}

/* By start; at one address a global symbol first (the name dwfl_module_addrname prefers). */
static int compare_symbols(const void *left, const void *right)
{
    const struct function_symbol *a = left, *b = right;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    return (int)b->global - (int)a->global;
}

static struct symbol_index *symbol_index_of(Dwfl_Module *module)
{
    for (unsigned i = 0; i < symbol_index_count; i++)
        if (symbol_indexes[i].module == module)
            return &symbol_indexes[i];
    if (symbol_index_count == sizeof symbol_indexes / sizeof symbol_indexes[0])
        return NULL;
    int total = dwfl_module_getsymtab(module);
    struct function_symbol *symbols = total > 0 ? malloc((size_t)total * sizeof *symbols) : NULL;
    if (!symbols)
        return NULL;
    size_t count = 0;
    for (int i = 1; i < total; i++) {
        GElf_Sym symbol;
        GElf_Addr address = 0;
        GElf_Word section = 0;
        const char *name =
            dwfl_module_getsym_info(module, i, &symbol, &address, &section, NULL, NULL);
        int type = GELF_ST_TYPE(symbol.st_info);
        if (!name || !name[0] || section == SHN_UNDEF || !symbol.st_size ||
            (type != STT_FUNC && type != STT_GNU_IFUNC))
            continue;
        symbols[count++] = (struct function_symbol){address, address + symbol.st_size, name,
                                                    GELF_ST_BIND(symbol.st_info) != STB_LOCAL};
    }
    qsort(symbols, count, sizeof *symbols, compare_symbols);
    struct symbol_index *index = &symbol_indexes[symbol_index_count++];
    *index = (struct symbol_index){module, symbols, count};
    return index;
}

/* The name of the function symbol covering address, NULL when none does. */
static const char *indexed_function(Dwfl_Module *module, uintptr_t address)
{
    struct symbol_index *index = symbol_index_of(module);
    if (!index || !index->count)
        return NULL;
    size_t low = 0, high = index->count; /* the first symbol starting after address: high */
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        if (index->symbols[middle].start <= address)
            low = middle + 1;
        else
            high = middle;
    }
    if (!high)
        return NULL;
    /* Among the symbols at the greatest start not above address, the first (global) wins. */
    size_t first = high - 1;
    while (first > 0 && index->symbols[first - 1].start == index->symbols[high - 1].start)
        first--;
    for (size_t i = first; i < high; i++)
        if (address < index->symbols[i].end)
            return index->symbols[i].name;
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * libdwfl session
 */

/*
 * Reports one loaded object to the session: its file and its load bias, as the dynamic linker
 * has them. Not /proc/self/maps, which also lists the files libdw itself maps to read their
 * debug info: a second mapping of a file makes libdwfl stretch its module over both.
 */
static int report_object(struct dl_phdr_info *info, size_t size, void *unused)
{
    (void)size;
    (void)unused;
    const char *path = info->dlpi_name[0] ? info->dlpi_name : loaded_objects_executable_path();
    if (path[0] != '/')
        return 0; /* the vdso, which has no file */
    dwfl_report_elf(session, strrchr(path, '/') + 1, path, -1, info->dlpi_addr, true);
    return 0;
}

/* Reports every loaded object to the new session. */
static bool report_modules(void)
{
    /* Counted before the walk, so an object loaded meanwhile is caught next time. */
    reported_load_events = loaded_objects_events();
    dwfl_report_begin(session);
    dl_iterate_phdr(report_object, NULL);
    return dwfl_report_end(session, NULL, NULL) == 0;
}

static bool open_session(void)
{
    if (session != NULL)
        return true;
    if (session_failed)
        return false;
    session = dwfl_begin(&proc_callbacks);
    if (session != NULL && !report_modules()) {
        dwfl_end(session);
        session = NULL;
    }
    session_failed = session == NULL;
    return session != NULL;
}

static bool module_starts_at(Dwfl_Module *module, Dwarf_Addr object_start)
{
    Dwarf_Addr start = 0;
    return module != NULL &&
           dwfl_module_info(module, NULL, &start, NULL, NULL, NULL, NULL, NULL) != NULL &&
           start == object_start;
}

/*
 * The module for address, which the dynamic linker places in the object mapped from
 * object_start. The session can be stale: objects dlopen'ed after it was built (extension
 * modules, mostly) are missing. Then, if the dynamic linker has mapped or unmapped something
 * since, a new session is made: libdwfl refuses to report again a module it already has
 * ("address range overlaps"), so a session cannot be brought up to date in place. What the old
 * one had loaded is read again when needed.
 */
static Dwfl_Module *find_module(Dwarf_Addr address, Dwarf_Addr object_start)
{
    if (!open_session())
        return NULL;
    Dwfl_Module *module = dwfl_addrmodule(session, address);
    if (!module_starts_at(module, object_start) &&
        loaded_objects_events() != reported_load_events) {
        drop_symbol_indexes();
        dwfl_end(session);
        session = NULL;
        module = open_session() ? dwfl_addrmodule(session, address) : NULL;
    }
    return module_starts_at(module, object_start) ? module : NULL;
}

/*
 * In a forked child the session describes the parent (its pid names the vdso): start again from
 * nothing. The old session leaks; the child never touches it.
 */
static void reset_in_child(void)
{
    symbol_index_count = 0; /* the parent's indexes leak with its session */
    session = NULL;
    session_failed = false;
    reported_load_events = 0;
    symbol_cache_reset_counts();
}

static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;

static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, reset_in_child);
}

/* ---------------------------------------------------------------------------------------------
 * Lookups
 */

/* The link map names the main executable ""; its path comes from the kernel instead. */
static void set_module_path(struct frame_info *out, const struct link_map *map, const char *dl_name)
{
    if (map->l_name[0] == '/') {
        copy_string(out->module, sizeof out->module, map->l_name);
    } else if (map->l_name[0] != '\0') {
        /* dlopen("./x.so") keeps the name as given; the vdso has no path at all. */
        if (realpath(map->l_name, out->module) == NULL)
            copy_string(out->module, sizeof out->module, map->l_name);
    } else {
        const char *executable = loaded_objects_executable_path();
        copy_string(out->module, sizeof out->module, executable[0] != '\0' ? executable : dl_name);
    }
}

static void set_source_line(struct frame_info *out, Dwfl_Module *module, Dwarf_Addr address)
{
    Dwfl_Line *line = dwfl_module_getsrc(module, address);
    if (line == NULL)
        return;
    int line_number = 0;
    const char *file = dwfl_lineinfo(line, NULL, &line_number, NULL, NULL, NULL);
    if (file == NULL)
        return;
    copy_string(out->file, sizeof out->file, file);
    out->line = line_number;
}

/* Function and file:line of call_site, an address inside a loaded object. */
static void describe_call_site(struct frame_info *out, uintptr_t call_site, const Dl_info *dl)
{
    Dwfl_Module *module = find_module(call_site, (Dwarf_Addr)(uintptr_t)dl->dli_fbase);
    if (module != NULL) {
        const char *function = indexed_function(module, call_site);
        if (function == NULL)
            function = dwfl_module_addrname(module, call_site);
        if (function != NULL)
            set_function(out, function);
        set_source_line(out, module, call_site);
    }
    /* The dynamic symbol the dynamic linker finds, a scan of the object's symbols: the last
       resort only. */
    Dl_info symbol;
    if (out->function[0] == '\0' && dladdr((void *)call_site, &symbol) && symbol.dli_sname)
        set_function(out, symbol.dli_sname);
}

/*
 * dladdr1 for the object that holds address: its link map, file name and base, without the
 * symbol dladdr1 also looks up by scanning all the object's symbols (with libdwfl's own scan, what
 * a report's symbolisation spent its time on). Objects are remembered by the base and the path
 * the loaded-objects table knows them by; one it does not know is asked of the dynamic linker.
 * LOCK_SYMBOLIZE held.
 */
static bool find_object(uintptr_t address, Dl_info *dl, struct link_map **map)
{
    static struct {
        uintptr_t base;
        const char *path; /* the table's string: a new object at the same base has another */
        Dl_info dl;
        struct link_map *map;
    } known[64];
    static unsigned known_count;
    const char *path;
    uintptr_t base;
    bool listed = loaded_objects_find(address, &path, &base);
    for (unsigned i = 0; listed && i < known_count; i++)
        if (known[i].base == base && known[i].path == path) {
            *dl = known[i].dl;
            *map = known[i].map;
            return true;
        }
    if (!dladdr1((void *)address, dl, (void **)map, RTLD_DL_LINKMAP) || !*map)
        return false;
    dl->dli_sname = NULL, dl->dli_saddr = NULL; /* this address's, not the object's */
    if (listed && (*map)->l_addr == base && known_count < sizeof known / sizeof known[0])
        known[known_count].base = base, known[known_count].path = path, known[known_count].dl = *dl,
        known[known_count++].map = *map;
    return true;
}

/*
 * A return address is the instruction after the call, which may belong to the next line or,
 * after a call to a noreturn function, to the next function: look up pc - 1, the call itself.
 *
 * Whether pc is in an object at all is the dynamic linker's answer (its PT_LOAD segments):
 * libdwfl's modules, read from /proc/self/maps, also stretch over neighbouring anonymous memory.
 */
bool symbolize_pc(uintptr_t pc, bool full, struct frame_info *out)
{
    memset(out, 0, sizeof *out);
    out->pc = pc;
    if (pc == 0)
        return false;
    uintptr_t call_site = pc - 1;

    pthread_once(&fork_handler_once, register_fork_handler);
    lock_acquire(LOCK_SYMBOLIZE);
    Dl_info dl = {0};
    struct link_map *map = NULL;
    bool found = find_object(call_site, &dl, &map);
    if (found) {
        set_module_path(out, map, dl.dli_fname != NULL ? dl.dli_fname : "");
        out->module_offset = pc - map->l_addr;
        out->in_extension = loaded_object_is_extension(out->module);
        if (full && !symbol_cache_find(out)) {
            describe_call_site(out, call_site, &dl);
            symbol_cache_add(out);
        }
    }
    lock_release(LOCK_SYMBOLIZE);
    return found;
}

bool symbolize_with_module(uintptr_t address, void (*use)(Dwfl_Module *module, void *context),
                           void *context)
{
    pthread_once(&fork_handler_once, register_fork_handler);
    lock_acquire(LOCK_SYMBOLIZE);
    Dl_info dl = {0};
    Dwfl_Module *module = NULL;
    if (address && dladdr((void *)address, &dl) != 0)
        module = find_module(address, (Dwarf_Addr)(uintptr_t)dl.dli_fbase);
    if (module)
        use(module, context);
    lock_release(LOCK_SYMBOLIZE);
    return module != NULL;
}

/* pc - 1 for the same reason as in symbolize_pc: a return address may be one past the end. */
bool pc_in_same_object(uintptr_t pc, const void *anchor)
{
    return pc != 0 && loaded_objects_same((const void *)(pc - 1), anchor);
}
