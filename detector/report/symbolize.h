/*
 * Turning a return address into function, module and, where debug info exists, file:line.
 * Runs when reports are written, never on a hook's path.
 */
#ifndef EXTSAN_SYMBOLIZE_H
#define EXTSAN_SYMBOLIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct frame_info {
    uintptr_t pc;            /* the return address as captured */
    char function[1024];     /* demangled when a C++ demangler is in the process; "" unknown */
    char module[4096];       /* path of the loaded object; "" unknown */
    uintptr_t module_offset; /* pc relative to the object's load base */
    char file[4096];         /* source file; "" unknown */
    int line;                /* 0 unknown */
    bool in_extension;       /* the module is an extension's (loaded_object_is_extension) */
};

/*
 * Describes the call site of return address pc (looks up pc - 1). Always fills pc, module and
 * module_offset when the address is inside a loaded object; with full = false stops there.
 * Returns false when pc is in no loaded object.
 */
bool symbolize_pc(uintptr_t pc, bool full, struct frame_info *out);

/*
 * Calls use with the libdwfl module of the loaded object that contains address, and that
 * object's load bias, with the session's lock held (use must not symbolise); false when the
 * address is in no object libdwfl could open. For debug_members.c, which reads DWARF types.
 */
typedef struct Dwfl_Module Dwfl_Module;
bool symbolize_with_module(uintptr_t address, void (*use)(Dwfl_Module *module, void *context),
                           void *context);

/*
 * Demangles a C++ symbol ("_ZN...") or type name ("9Container", as std::type_info::name gives)
 * into out with the C++ runtime already in the process; false when there is none or the name
 * is not a mangled one.
 */
bool symbolize_demangle(const char *mangled, char *out, size_t size);

/*
 * True when vptr is the virtual table pointer of a std::type_info that describes a class (the
 * C++ runtime's __class_type_info and its single- and multiple-inheritance kinds).
 */
bool symbolize_is_class_type_info(uintptr_t vptr);

/* True when pc lies inside the loaded object that contains `anchor` (e.g. extsan itself). */
bool pc_in_same_object(uintptr_t pc, const void *anchor);

#endif
