#include "fix_hints.h"

#include "debug_members.h"

#include <stdio.h>
#include <string.h>

static const char nanobind_hint[] =
    "give the class a tp_traverse/tp_clear pair through nb::type_slots: "
    "int tp_traverse(PyObject *self, visitproc visit, void *arg) { Py_VISIT(Py_TYPE(self)); "
    "if (!nb::inst_ready(self)) return 0; T *t = nb::inst_ptr<T>(self); "
    "Py_VISIT(nb::find(t->member).ptr()); return 0; } and int tp_clear(PyObject *self) that resets "
    "the member; bind with nb::class_<T>(m, \"T\", nb::type_slots(slots)) where slots = "
    "{{Py_tp_traverse, (void *) tp_traverse}, {Py_tp_clear, (void *) tp_clear}, {0, nullptr}} "
    "(nanobind docs: refleaks)";

static const char pybind11_hint[] =
    "make the class take part in the GC with py::custom_type_setup: "
    "py::class_<T>(m, \"T\", py::custom_type_setup([](PyHeapTypeObject *heap_type) { auto *type = "
    "&heap_type->ht_type; type->tp_flags |= Py_TPFLAGS_HAVE_GC; type->tp_traverse = [](PyObject "
    "*self, visitproc visit, void *arg) { Py_VISIT(Py_TYPE(self)); auto &t = "
    "py::cast<T &>(py::handle(self)); Py_VISIT(t.member.ptr()); return 0; }; type->tp_clear = "
    "[](PyObject *self) { py::cast<T &>(py::handle(self)).member = py::none(); return 0; }; }))";

static const char c_api_hint[] =
    "set Py_TPFLAGS_HAVE_GC, allocate with PyObject_GC_New or tp_alloc, and give the type a "
    "tp_traverse that Py_VISITs every PyObject * it owns (and Py_TYPE(self) for a heap type) and "
    "a tp_clear that Py_CLEARs them; call PyObject_GC_UnTrack first in tp_dealloc";

static const char cython_no_traverse_hint[] =
    "Cython gave the class no tp_traverse: it omits one for a class declared @cython.no_gc "
    "(remove the decorator from a class whose object attributes can lead back to it) and for one "
    "whose Python references sit only in C-level members (void *, C++ objects): keep those in "
    "cdef object attributes, which the generated tp_traverse and tp_clear cover";

static const char cython_incomplete_traverse_hint[] =
    "Cython's generated tp_traverse misses this member: references kept behind C-level members "
    "(void *, C++ objects, a typed memoryview attribute's underlying object) are invisible to it; "
    "keep the object in a cdef object attribute as well";

static const char missing_type_visit_hint[] =
    "since Python 3.9 the traverse of a heap type's instance must Py_VISIT(Py_TYPE(self))";

static const char traverse_missing_gc_hint[] =
    "a type with Py_TPFLAGS_HAVE_GC needs a tp_traverse (3.11+ refuses it in PyType_Ready; "
    "on 3.9 and 3.10 the next collection crashes): add one, or drop the flag";

static const char reference_leak_hint[] =
    "a new reference that is never released: find where the extension function in the "
    "allocation stack takes or makes one (PyList_New, Py_BuildValue, PyObject_Call*, Py_INCREF, "
    "nb::handle::inc_ref, a py::handle made from a new reference) and Py_DECREF it on every "
    "path, error paths included; or hold it in nb::object / py::object (py::reinterpret_steal), "
    "which release it";

const char *fix_hint(enum finding_kind kind, enum binding_library binding)
{
    if (kind == FINDING_TRAVERSE_MISSING_GC)
        return traverse_missing_gc_hint;
    if (kind == FINDING_REFERENCE_LEAK)
        return reference_leak_hint;
    switch (binding) {
    case BINDING_NANOBIND:
        return nanobind_hint;
    case BINDING_PYBIND11:
        return pybind11_hint;
    case BINDING_CYTHON:
        return kind == FINDING_INCOMPLETE_TRAVERSE ? cython_incomplete_traverse_hint
                                                   : cython_no_traverse_hint;
    case BINDING_C_API:
        break;
    }
    return c_api_hint;
}

const char *fix_hint_missing_type_visit(void)
{
    return missing_type_visit_hint;
}

bool fix_hint_visit_member(enum binding_library binding, const struct member_name *member,
                           char *out, size_t size)
{
    /* The path after its root, the holder's struct or class: ".side->obj", "::callback". */
    const char *cxx_member = strstr(member->path, "::");
    const char *c_member = strchr(member->path, '.');
    switch (binding) {
    case BINDING_C_API:
        if (!c_member)
            return false;
        snprintf(out, size, "Py_VISIT(self->%s)", c_member + 1);
        return true;
    case BINDING_NANOBIND:
        if (!cxx_member)
            return false;
        /* An nb::object or nb::handle holds the object itself; anything else (a std::function)
           wraps one that nb::find finds. */
        if (!strncmp(member->type, "nanobind::", strlen("nanobind::")))
            snprintf(out, size, "Py_VISIT(t->%s.ptr())", cxx_member + 2);
        else
            snprintf(out, size, "Py_VISIT(nb::find(t->%s).ptr())", cxx_member + 2);
        return true;
    case BINDING_PYBIND11:
        if (!cxx_member || strncmp(member->type, "pybind11::", strlen("pybind11::")) != 0)
            return false;
        snprintf(out, size, "Py_VISIT(t.%s.ptr())", cxx_member + 2);
        return true;
    case BINDING_CYTHON:
        break;
    }
    return false;
}
