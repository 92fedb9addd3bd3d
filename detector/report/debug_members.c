/* Member names from DWARF: see debug_members.h. */
#define _GNU_SOURCE
#include "debug_members.h"

#include "symbolize.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nesting of members followed into (structs in structs, array elements) before giving up. */
#define MAX_STEPS 32

/* ---------------------------------------------------------------------------------------------
 * Types: peeling, naming, sizes
 */

/* snprintf at the end of what out holds: names are cut at the buffer's end, by design. */
static void append(char *out, size_t size, const char *format, ...)
{
    size_t used = strlen(out);
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(out + used, size - used, format, arguments);
    va_end(arguments);
}

/* The DIE that die's DW_AT_type names (through abstract origins); false for none (void). */
static bool type_of(Dwarf_Die *die, Dwarf_Die *type)
{
    Dwarf_Attribute attribute;
    return dwarf_attr_integrate(die, DW_AT_type, &attribute) &&
           dwarf_formref_die(&attribute, type) != NULL;
}

/* type without typedefs and qualifiers; false when that leaves nothing (void). */
static bool peel(Dwarf_Die *type, Dwarf_Die *peeled)
{
    return dwarf_peel_type(type, peeled) == 0;
}

static bool is_aggregate(int tag)
{
    return tag == DW_TAG_structure_type || tag == DW_TAG_class_type || tag == DW_TAG_union_type;
}

static bool is_cxx(Dwarf_Die *die)
{
    Dwarf_Die cu;
    if (!dwarf_diecu(die, &cu, NULL, NULL))
        return false;
    int language = dwarf_srclang(&cu);
    return language == DW_LANG_C_plus_plus || language == DW_LANG_C_plus_plus_03 ||
           language == DW_LANG_C_plus_plus_11 || language == DW_LANG_C_plus_plus_14;
}

/* Appends "ns::Outer::" for a C++ type declared in namespaces or classes. */
static void append_scopes(Dwarf_Die *die, char *out, size_t size)
{
    Dwarf_Die *scopes = NULL;
    int count = dwarf_getscopes_die(die, &scopes);
    /* scopes[0] is die itself, then its parents out to the compile unit. */
    for (int i = count - 1; i >= 1; i--) {
        int tag = dwarf_tag(&scopes[i]);
        const char *name = dwarf_diename(&scopes[i]);
        if ((tag == DW_TAG_namespace || is_aggregate(tag)) && name)
            append(out, size, "%s::", name);
    }
    free(scopes);
}

/* The C or C++ spelling of a type DIE into out ("PyObject *", "std::function<void ()>"). */
static void type_spelling(Dwarf_Die *type, bool present, char *out, size_t size)
{
    out[0] = '\0';
    if (!present) {
        append(out, size, "void");
        return;
    }
    Dwarf_Die inner;
    bool has_inner = type_of(type, &inner);
    char inner_text[192];
    int tag = dwarf_tag(type);
    switch (tag) {
    case DW_TAG_pointer_type:
    case DW_TAG_reference_type: /* read as pointers: the word holds an address either way */
    case DW_TAG_rvalue_reference_type:
        type_spelling(&inner, has_inner, inner_text, sizeof inner_text);
        append(out, size, "%s%s", inner_text,
               inner_text[strlen(inner_text) - 1] == '*' ? "*" : " *");
        return;
    case DW_TAG_const_type:
    case DW_TAG_volatile_type:
        type_spelling(&inner, has_inner, inner_text, sizeof inner_text);
        append(out, size, "%s %s", tag == DW_TAG_const_type ? "const" : "volatile", inner_text);
        return;
    case DW_TAG_array_type: {
        type_spelling(&inner, has_inner, inner_text, sizeof inner_text);
        Dwarf_Word bytes = 0, element = 0;
        if (dwarf_aggregate_size(type, &bytes) == 0 && has_inner &&
            dwarf_aggregate_size(&inner, &element) == 0 && element)
            append(out, size, "%s[%llu]", inner_text, (unsigned long long)(bytes / element));
        else
            append(out, size, "%s[]", inner_text);
        return;
    }
    case DW_TAG_subroutine_type:
        append(out, size, "function");
        return;
    default:
        break;
    }
    const char *name = dwarf_diename(type);
    if (!name) {
        append(out, size, "%s {...}", tag == DW_TAG_union_type ? "union" : "struct");
        return;
    }
    if (is_cxx(type))
        append_scopes(type, out, size);
    else if (tag == DW_TAG_structure_type || tag == DW_TAG_union_type)
        append(out, size, "%s ", tag == DW_TAG_union_type ? "union" : "struct");
    append(out, size, "%s", name);
}

static bool byte_size(Dwarf_Die *type, Dwarf_Word *size)
{
    return dwarf_aggregate_size(type, size) == 0;
}

/* The directory part of a path, for "declared beside the holder" (with its slash). */
static size_t directory_length(const char *path)
{
    const char *slash = path ? strrchr(path, '/') : NULL;
    return slash ? (size_t)(slash - path + 1) : 0;
}

/* ---------------------------------------------------------------------------------------------
 * The instance's struct
 */

/*
 * Whether aggregate `type` starts with the object header: a first member named ob_base (what
 * PyObject_HEAD and PyObject_VAR_HEAD declare), or a first member of a struct that does (a
 * subtype's struct embedding its base's).
 */
static bool starts_with_object_header(Dwarf_Die *type, unsigned depth)
{
    Dwarf_Die member;
    if (depth > 8 || dwarf_child(type, &member) != 0)
        return false;
    do {
        if (dwarf_tag(&member) != DW_TAG_member)
            continue;
        const char *name = dwarf_diename(&member);
        if (name && !strcmp(name, "ob_base"))
            return true;
        Dwarf_Die member_type, peeled;
        return type_of(&member, &member_type) && peel(&member_type, &peeled) &&
               is_aggregate(dwarf_tag(&peeled)) && starts_with_object_header(&peeled, depth + 1);
    } while (dwarf_siblingof(&member, &member) == 0);
    return false;
}

struct root {
    Dwarf_Die type;      /* the aggregate whose members are named */
    char name[160];      /* how the path starts: "HolderObject", "Container" */
    uint64_t start;      /* where it starts in the instance */
    bool behind_pointer; /* the instance holds a pointer to it at offsets[0] */
    char directory[512]; /* where its declaration's file is: members of types declared there are
                            followed */
};

/* The name a struct is known by: its own, or the typedef's through which it was reached. */
static void aggregate_name(Dwarf_Die *named, Dwarf_Die *aggregate, char *out, size_t size)
{
    out[0] = '\0';
    if (is_cxx(aggregate) && dwarf_diename(aggregate))
        append_scopes(aggregate, out, size);
    const char *name = dwarf_diename(aggregate);
    if (!name && dwarf_tag(named) == DW_TAG_typedef)
        name = dwarf_diename(named);
    append(out, size, "%s", name ? name : "{anonymous}");
}

static void set_root_directory(struct root *root)
{
    const char *file = dwarf_decl_file(&root->type);
    size_t length = directory_length(file);
    if (length >= sizeof root->directory)
        length = 0;
    memcpy(root->directory, file ? file : "", length);
    root->directory[length] = '\0';
}

/*
 * Whether variable or parameter die points to the instance's struct: a pointer (through
 * typedefs) to an aggregate of `basicsize` bytes that starts with the object header.
 */
static bool points_to_instance(Dwarf_Die *die, size_t basicsize, struct root *root)
{
    Dwarf_Die type, pointer, named, aggregate;
    if (!type_of(die, &type) || !peel(&type, &pointer) ||
        dwarf_tag(&pointer) != DW_TAG_pointer_type || !type_of(&pointer, &named))
        return false;
    /* Peel qualifiers and typedefs one at a time, to keep the typedef's name. */
    Dwarf_Die last_typedef = named;
    aggregate = named;
    for (int i = 0; i < 8; i++) {
        int tag = dwarf_tag(&aggregate);
        if (tag == DW_TAG_typedef)
            last_typedef = aggregate;
        if (tag != DW_TAG_typedef && tag != DW_TAG_const_type && tag != DW_TAG_volatile_type)
            break;
        if (!type_of(&aggregate, &aggregate))
            return false;
    }
    Dwarf_Word size = 0;
    if (!is_aggregate(dwarf_tag(&aggregate)) || dwarf_hasattr(&aggregate, DW_AT_declaration) ||
        !byte_size(&aggregate, &size) || size != basicsize ||
        !starts_with_object_header(&aggregate, 0))
        return false;
    root->type = aggregate;
    aggregate_name(&last_typedef, &aggregate, root->name, sizeof root->name);
    root->start = 0;
    root->behind_pointer = false;
    set_root_directory(root);
    return true;
}

/* Searches the parameters and variables of a function's scope, nested blocks included. */
static bool find_self_in_scope(Dwarf_Die *scope, size_t basicsize, struct root *root,
                               unsigned depth)
{
    Dwarf_Die child;
    if (depth > 8 || dwarf_child(scope, &child) != 0)
        return false;
    do {
        int tag = dwarf_tag(&child);
        if ((tag == DW_TAG_formal_parameter || tag == DW_TAG_variable) &&
            points_to_instance(&child, basicsize, root))
            return true;
        if ((tag == DW_TAG_lexical_block || tag == DW_TAG_inlined_subroutine) &&
            find_self_in_scope(&child, basicsize, root, depth + 1))
            return true;
    } while (dwarf_siblingof(&child, &child) == 0);
    return false;
}

/* The instance's struct from the DWARF of the type's own functions in module. */
static enum member_naming find_c_root(Dwfl_Module *module, const struct instance_layout *layout,
                                      struct root *root)
{
    bool has_dwarf = false;
    for (unsigned i = 0; i < layout->function_count; i++) {
        Dwarf_Addr bias = 0;
        Dwarf_Die *cu = dwfl_module_addrdie(module, layout->functions[i], &bias);
        if (!cu)
            continue;
        has_dwarf = true;
        Dwarf_Die *scopes = NULL;
        int count = dwarf_getscopes(cu, layout->functions[i] - bias, &scopes);
        bool found = false;
        for (int s = 0; s < count && !found; s++)
            if (dwarf_tag(&scopes[s]) == DW_TAG_subprogram)
                found = find_self_in_scope(&scopes[s], layout->basicsize, root, 0);
        free(scopes);
        if (found)
            return MEMBER_NAMED;
    }
    return has_dwarf ? MEMBER_UNKNOWN : MEMBER_NO_DEBUG_INFO;
}

/* ---------------------------------------------------------------------------------------------
 * A bound C++ class, by the qualified name of its std::type_info
 */

struct class_search {
    const char *qualified; /* "ns::Container" */
    Dwarf_Die found;
    bool is_found;
    bool has_dwarf;
};

/*
 * Classes named `name` in any scope that fit a block of block_bytes (glibc's extents exceed a
 * request by less than two words plus its 16-byte rounding): the first into *found, how many
 * distinct ones into *count (the same class is described again in every compile unit).
 */
struct name_search {
    const char *name;
    size_t block_bytes;
    Dwarf_Die found;
    Dwarf_Word found_size;
    const char *found_file;
    int found_line;
    unsigned count;
    bool has_dwarf;
};

static void find_classes_named(Dwarf_Die *die, struct name_search *search, unsigned depth)
{
    Dwarf_Die child;
    if (depth > 16 || dwarf_child(die, &child) != 0)
        return;
    do {
        int tag = dwarf_tag(&child);
        if (tag == DW_TAG_namespace || is_aggregate(tag))
            find_classes_named(&child, search, depth + 1);
        const char *name = dwarf_diename(&child);
        Dwarf_Word size = 0;
        if (!is_aggregate(tag) || !name || strcmp(name, search->name) != 0 ||
            dwarf_hasattr(&child, DW_AT_declaration) || !byte_size(&child, &size) ||
            size > search->block_bytes || search->block_bytes >= size + 32)
            continue;
        int line = 0;
        dwarf_decl_line(&child, &line);
        const char *file = dwarf_decl_file(&child);
        if (search->count && size == search->found_size && line == search->found_line && file &&
            search->found_file && !strcmp(file, search->found_file))
            continue; /* the same class, described by another compile unit */
        if (!search->count++) {
            search->found = child;
            search->found_size = size;
            search->found_file = file;
            search->found_line = line;
        }
    } while (dwarf_siblingof(&child, &child) == 0);
}

/* Walks namespaces and classes under die for a defined aggregate named prefix + name. */
static void find_class_under(Dwarf_Die *die, const char *rest, struct class_search *search,
                             unsigned depth)
{
    Dwarf_Die child;
    if (depth > 16 || dwarf_child(die, &child) != 0)
        return;
    do {
        int tag = dwarf_tag(&child);
        const char *name = dwarf_diename(&child);
        if (!name || (tag != DW_TAG_namespace && !is_aggregate(tag)))
            continue;
        size_t length = strlen(name);
        if (strncmp(rest, name, length) != 0)
            continue;
        if (rest[length] == '\0' && is_aggregate(tag) &&
            !dwarf_hasattr(&child, DW_AT_declaration)) {
            search->found = child;
            search->is_found = true;
            return;
        }
        if (rest[length] == ':' && rest[length + 1] == ':')
            find_class_under(&child, rest + length + 2, search, depth + 1);
    } while (!search->is_found && dwarf_siblingof(&child, &child) == 0);
}

/*
 * The bound C++ class as the root: inline at the end of the instance (nanobind: a header, then
 * the object), else behind the pointer at offsets[0] (pybind11's value pointer).
 */
static enum member_naming find_cxx_root(Dwfl_Module *module, const struct instance_layout *layout,
                                        uint16_t first_offset, struct root *root)
{
    char qualified[256];
    Dwarf_Addr bias = 0;
    Dwarf_Die found;
    bool has_dwarf = false;
    if (layout->cxx_mangled_name) {
        struct class_search search = {0};
        if (!symbolize_demangle(layout->cxx_mangled_name, qualified, sizeof qualified))
            return MEMBER_UNKNOWN;
        search.qualified = qualified;
        for (Dwarf_Die *cu = dwfl_module_nextcu(module, NULL, &bias); cu && !search.is_found;
             cu = dwfl_module_nextcu(module, cu, &bias)) {
            has_dwarf = true;
            find_class_under(cu, search.qualified, &search, 0);
        }
        if (!search.is_found)
            return has_dwarf ? MEMBER_UNKNOWN : MEMBER_NO_DEBUG_INFO;
        found = search.found;
    } else {
        struct name_search search = {.name = layout->cxx_class_name,
                                     .block_bytes = layout->cxx_block_bytes};
        for (Dwarf_Die *cu = dwfl_module_nextcu(module, NULL, &bias); cu;
             cu = dwfl_module_nextcu(module, cu, &bias)) {
            has_dwarf = true;
            find_classes_named(cu, &search, 0);
        }
        if (search.count != 1)
            return has_dwarf ? MEMBER_UNKNOWN : MEMBER_NO_DEBUG_INFO;
        found = search.found;
        qualified[0] = '\0';
        append_scopes(&found, qualified, sizeof qualified);
        append(qualified, sizeof qualified, "%s", layout->cxx_class_name);
    }
    Dwarf_Word size = 0;
    if (!byte_size(&found, &size))
        return MEMBER_UNKNOWN;
    root->type = found;
    root->name[0] = '\0';
    append(root->name, sizeof root->name, "%s", qualified);
    root->behind_pointer = !layout->cxx_mangled_name ||
                           !(size <= layout->basicsize && first_offset >= layout->basicsize - size);
    root->start = root->behind_pointer ? 0 : layout->basicsize - size;
    set_root_directory(root);
    return MEMBER_NAMED;
}

/* ---------------------------------------------------------------------------------------------
 * The path
 */

/* The member or base-class subobject of aggregate that covers offset; false when none does. */
static bool member_at(Dwarf_Die *aggregate, uint64_t offset, Dwarf_Die *member, uint64_t *start,
                      Dwarf_Die *member_type)
{
    if (dwarf_child(aggregate, member) != 0)
        return false;
    do {
        int tag = dwarf_tag(member);
        if (tag != DW_TAG_member && tag != DW_TAG_inheritance)
            continue;
        Dwarf_Attribute attribute;
        Dwarf_Word location = 0, size = 0;
        if (dwarf_attr(member, DW_AT_data_member_location, &attribute)) {
            if (dwarf_formudata(&attribute, &location) != 0)
                continue;
        } else if (dwarf_tag(aggregate) != DW_TAG_union_type) {
            continue; /* a static member */
        }
        if (!type_of(member, member_type) || !byte_size(member_type, &size))
            continue;
        if (location <= offset && offset < location + size) {
            *start = location;
            return true;
        }
    } while (dwarf_siblingof(member, member) == 0);
    return false;
}

/* Whether a type is declared beside the holder's struct, so its members are the user's. */
static bool declared_beside(Dwarf_Die *type, const struct root *root)
{
    const char *file = dwarf_decl_file(type);
    size_t length = directory_length(file);
    return length && length == strlen(root->directory) && !strncmp(file, root->directory, length);
}

static void note_member(struct member_name *out, Dwarf_Die *member, Dwarf_Die *type)
{
    type_spelling(type, true, out->type, sizeof out->type);
    const char *file = dwarf_decl_file(member);
    snprintf(out->file, sizeof out->file, "%s", file ? file : "");
    out->line = 0;
    dwarf_decl_line(member, &out->line);
}

/* Follows offsets from the root's aggregate down to the word; see debug_members.h. */
static enum member_naming walk(struct root *root, const uint16_t *offsets, unsigned depth,
                               struct member_name *out)
{
    snprintf(out->path, sizeof out->path, "%s", root->name);
    bool cxx = is_cxx(&root->type);
    const char *separator = cxx ? "::%s" : ".%s";
    Dwarf_Die aggregate = root->type;
    unsigned hop = root->behind_pointer ? 1 : 0;
    if (hop >= depth)
        return MEMBER_UNKNOWN;
    uint64_t offset = offsets[hop] - (hop == 0 ? root->start : 0);
    bool named_one = false;
    for (unsigned step = 0; step < MAX_STEPS; step++) {
        Dwarf_Die member, member_type, peeled;
        uint64_t start = 0;
        if (!member_at(&aggregate, offset, &member, &start, &member_type))
            break;
        offset -= start;
        bool base = dwarf_tag(&member) == DW_TAG_inheritance;
        if (!base) {
            append(out->path, sizeof out->path, separator, dwarf_diename(&member) ?: "?");
            separator = ".%s";
            note_member(out, &member, &member_type);
            named_one = true;
        }
        if (!peel(&member_type, &peeled))
            break;
        int tag = dwarf_tag(&peeled);
        if (is_aggregate(tag)) {
            if (!base && !declared_beside(&peeled, root)) {
                out->beyond = hop + 1 < depth;
                return MEMBER_NAMED; /* a library's type: its internals are not the user's */
            }
            aggregate = peeled;
            continue;
        }
        if (tag == DW_TAG_array_type) {
            Dwarf_Die element, element_peeled;
            Dwarf_Word element_size = 0;
            if (!type_of(&peeled, &element) || !byte_size(&element, &element_size) || !element_size)
                break;
            append(out->path, sizeof out->path, "[%llu]",
                   (unsigned long long)(offset / element_size));
            offset %= element_size;
            if (!peel(&element, &element_peeled) || !is_aggregate(dwarf_tag(&element_peeled))) {
                type_spelling(&element, true, out->type, sizeof out->type);
                out->beyond = hop + 1 < depth;
                return MEMBER_NAMED;
            }
            aggregate = element_peeled;
            continue;
        }
        /* A scalar: the word itself, or the pointer to the next block of the path. */
        if (hop + 1 < depth && tag == DW_TAG_pointer_type && offset == 0) {
            Dwarf_Die pointee, pointee_peeled;
            if (type_of(&peeled, &pointee) && peel(&pointee, &pointee_peeled) &&
                is_aggregate(dwarf_tag(&pointee_peeled)) &&
                declared_beside(&pointee_peeled, root)) {
                aggregate = pointee_peeled;
                offset = offsets[++hop];
                separator = "->%s";
                continue;
            }
        }
        out->beyond = hop + 1 < depth;
        return MEMBER_NAMED;
    }
    if (!named_one)
        return MEMBER_UNKNOWN;
    out->beyond = true;
    return MEMBER_NAMED;
}

struct naming {
    const struct instance_layout *layout;
    const uint16_t *offsets;
    unsigned depth;
    struct member_name *out;
    enum member_naming result;
};

/* Everything with the session's lock held: the DIEs live as long as the session. */
static void name_in_module(Dwfl_Module *module, void *context)
{
    struct naming *naming = context;
    struct root root;
    memset(&root, 0, sizeof root);
    const struct instance_layout *layout = naming->layout;
    naming->result = layout->cxx_mangled_name || layout->cxx_class_name
                         ? find_cxx_root(module, layout, naming->offsets[0], &root)
                         : find_c_root(module, layout, &root);
    if (naming->result == MEMBER_NAMED)
        naming->result = walk(&root, naming->offsets, naming->depth, naming->out);
    naming->out->by_name = !layout->cxx_mangled_name && layout->cxx_class_name;
}

enum member_naming debug_member_name(const struct instance_layout *layout, const uint16_t *offsets,
                                     unsigned depth, struct member_name *out)
{
    memset(out, 0, sizeof *out);
    struct naming naming = {layout, offsets, depth, out, MEMBER_UNKNOWN};
    if (!depth)
        return MEMBER_UNKNOWN;
    if (layout->cxx_mangled_name || layout->cxx_class_name) {
        symbolize_with_module(layout->cxx_mangled_name ? layout->cxx_type_info : layout->cxx_module,
                              name_in_module, &naming);
        return naming.result;
    }
    if (!layout->function_count)
        return MEMBER_UNKNOWN;
    /* The functions may lie in several objects (a slot inherited from another extension's
       type): each object is searched for all of them, until one names the member. */
    bool has_dwarf = false;
    for (unsigned i = 0; i < layout->function_count; i++) {
        naming.result = MEMBER_NO_DEBUG_INFO;
        symbolize_with_module(layout->functions[i], name_in_module, &naming);
        if (naming.result == MEMBER_NAMED)
            return MEMBER_NAMED;
        has_dwarf |= naming.result == MEMBER_UNKNOWN;
    }
    return has_dwarf ? MEMBER_UNKNOWN : MEMBER_NO_DEBUG_INFO;
}
