/*
 * Turning a return address into function, module and, where debug info exists, file:line.
 * Runs when reports are written, never on a hook's path.
 */
#ifndef EXTSAN_SYMBOLIZE_H
#define EXTSAN_SYMBOLIZE_H

#include <stdbool.h>
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

/* True when pc lies inside the loaded object that contains `anchor` (e.g. extsan itself). */
bool pc_in_same_object(uintptr_t pc, const void *anchor);

#endif
