/*
 * Naming the member of an extension's instance that holds a hidden reference, from the DWARF
 * debug info of the module that defines it: `HolderObject.callback (PyObject *)` rather than
 * `+16`, `IndirectObject.side->obj` through a side block, `Container::callback
 * (std::function<void ()>) → …` in a bound C++ class.
 *
 * What the instance is, the heap analysis says (struct instance_layout: it knows the type
 * object); what its bytes are, DWARF says:
 *   - a C API or Cython type: the struct that its own functions (slots, methods, getters) take
 *     or cast `self` to, whose size is tp_basicsize and which starts with the object header
 *     (`ob_base`, or a struct that starts with it: a subtype's base);
 *   - a C++ class bound by a binding library: the class of the std::type_info the binding's
 *     type record points to, looked up by its qualified name in the module's DWARF, inline at
 *     the end of the instance or behind a pointer in it.
 * The path then follows the members that cover each offset: into nested structs and arrays,
 * through a pointer member into the block it points to (the analysis's `->` hops). It descends
 * only into types declared beside the holder's own (the same source directory): a library's
 * type (std::function, nanobind::object) ends the path, which then says `→ …` when the word
 * lies in a block that type points to.
 *
 * Runs when findings are recorded, with the GIL held and the type alive; never on a hook's path.
 */
#ifndef EXTSAN_DEBUG_MEMBERS_H
#define EXTSAN_DEBUG_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INSTANCE_LAYOUT_MAX_FUNCTIONS 48

/* What the heap analysis knows of a holder type's instances (heap_report.c fills it). */
struct instance_layout {
    size_t basicsize; /* tp_basicsize */
    /* The type's own functions (slots, methods, getters and setters): their DWARF says what
       `self` is. Only those in the object that created the type. */
    uintptr_t functions[INSTANCE_LAYOUT_MAX_FUNCTIONS];
    unsigned function_count;
    /* A C++ class bound by a binding library: its std::type_info's name ("9Container"), or
       NULL; the type_info's address locates the module whose DWARF describes the class. */
    const char *cxx_mangled_name;
    uintptr_t cxx_type_info;
    /*
     * Else, for a binding library whose type record is out of reach (pybind11 keeps it in its
     * internals): the class is looked up by the Python type's name, in the object that created
     * the type (cxx_module, an address in it), and taken only when exactly one class of that
     * name fits the block the instance's first pointer leads to (cxx_block_bytes, its extent).
     */
    const char *cxx_class_name;
    uintptr_t cxx_module;
    size_t cxx_block_bytes;
};

enum member_naming {
    MEMBER_NAMED,         /* path, type and declaration filled */
    MEMBER_NO_DEBUG_INFO, /* the module has no DWARF: building it with -g would name it */
    MEMBER_UNKNOWN,       /* DWARF exists but does not say (no typed self, no such class) */
};

struct member_name {
    char path[256]; /* "HolderObject.callback", "IndirectObject.side->obj", "Container::callback" */
    char type[192]; /* the declared type of the path's last member, "PyObject *" */
    char file[512]; /* where that member is declared, as DWARF names it; "" unknown */
    int line;       /* 0 unknown */
    /* The word lies in a block reached through pointers the path does not follow (a library
       type's internals, a block of unknown type): written `→ …` after it. */
    bool beyond;
    bool by_name; /* the class was found by the Python type's name (cxx_class_name) */
};

/*
 * Names the member of an instance of `layout`'s type at offsets[0] and, for a path through
 * heap blocks (depth > 1), the members at the next offsets of the blocks it points to.
 */
enum member_naming debug_member_name(const struct instance_layout *layout, const uint16_t *offsets,
                                     unsigned depth, struct member_name *out);

#endif
