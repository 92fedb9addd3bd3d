/* What to write to fix a finding about a type, in the words of the library it was written with. */
#ifndef EXTSAN_FIX_HINTS_H
#define EXTSAN_FIX_HINTS_H

#include "findings.h"
#include "registry.h"

const char *fix_hint(enum finding_kind kind, enum binding_library binding);

/*
 * The statement a tp_traverse needs for a member debug info named, in the variables of the
 * binding's hint above ("Py_VISIT(self->callback)", nanobind's "Py_VISIT(nb::find(t->callback)
 * .ptr())", pybind11's "Py_VISIT(t.callback.ptr())"); false when there is none to write (Cython
 * writes the traverse itself, a member without a path).
 */
struct member_name;
bool fix_hint_visit_member(enum binding_library binding, const struct member_name *member,
                           char *out, size_t size);

/* The extra hint for a heap type whose traverse does not visit its type. */
const char *fix_hint_missing_type_visit(void);

#endif
