/*
 * An allocation-heavy workload for scripts/bench-instances: instances of a small extension type
 * made and destroyed in bulk, all with the GIL held. Every instance passes through extsan's
 * tp_alloc and tp_dealloc wrappers and the registry: the cost it adds to correct code.
 *
 *   Point(x)            from Python: tp_new -> tp_alloc, tp_dealloc on the last reference
 *   churn(n)            n Points made and freed by C code in one call (no interpreter in between)
 *   keep(n, label)      a list of n live Points, for the registry's memory per live instance;
 *                       each holds a reference to label (if given), which Point, having no
 *                       tp_traverse, hides from the collector: work for the exit analysis
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject_HEAD long x;
    PyObject *label; /* a reference, as real extension types have */
} PointObject;

static PyTypeObject PointType;

static PyObject *Point_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)kwds;
    long x = 0;
    if (!PyArg_ParseTuple(args, "|l", &x))
        return NULL;
    PointObject *self = (PointObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->x = x;
    self->label = NULL;
    return (PyObject *)self;
}

static void Point_dealloc(PyObject *self)
{
    Py_CLEAR(((PointObject *)self)->label);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject PointType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "instance_workload.Point",
    .tp_basicsize = sizeof(PointObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Point_new,
    .tp_dealloc = Point_dealloc,
};

static PyObject *churn(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_ssize_t iterations = PyLong_AsSsize_t(arg);
    if (iterations < 0 && PyErr_Occurred())
        return NULL;
    long checksum = 0;
    for (Py_ssize_t i = 0; i < iterations; i++) {
        PointObject *point = (PointObject *)PointType.tp_alloc(&PointType, 0);
        if (!point)
            return NULL;
        point->x = (long)i;
        point->label = NULL;
        checksum += point->x & 1;
        Py_DECREF(point);
    }
    return PyLong_FromLong(checksum);
}

static PyObject *keep(PyObject *module, PyObject *args)
{
    (void)module;
    Py_ssize_t count;
    PyObject *label = NULL;
    if (!PyArg_ParseTuple(args, "n|O", &count, &label))
        return NULL;
    PyObject *list = PyList_New(count);
    for (Py_ssize_t i = 0; list && i < count; i++) {
        PyObject *point = PyObject_CallFunction((PyObject *)&PointType, "n", i);
        if (!point) {
            Py_DECREF(list);
            return NULL;
        }
        Py_XINCREF(label);
        ((PointObject *)point)->label = label;
        PyList_SET_ITEM(list, i, point);
    }
    return list;
}

static PyMethodDef methods[] = {
    {"churn", churn, METH_O, "churn(n): make and free n Points in C; returns a checksum"},
    {"keep", keep, METH_VARARGS, "keep(n, label=None): a list of n live Points holding label"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "instance_workload", NULL, -1, methods};

PyMODINIT_FUNC PyInit_instance_workload(void)
{
    if (PyType_Ready(&PointType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&PointType);
    if (PyModule_AddObject(m, "Point", (PyObject *)&PointType) < 0) {
        Py_DECREF(&PointType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
