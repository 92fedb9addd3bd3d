/*
 * A loop of cheap C-API calls for scripts/bench-calls, all with the GIL held: what the generic
 * wrapper's fast path (call-without-gil) costs correct code per call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *calls(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_ssize_t iterations = PyLong_AsSsize_t(arg);
    if (iterations < 0 && PyErr_Occurred())
        return NULL;
    PyObject *tuple = PyTuple_Pack(1, arg);
    if (!tuple)
        return NULL;
    Py_ssize_t checksum = 0;
    for (Py_ssize_t i = 0; i < iterations; i++) {
        /* Two calls an iteration: a small int (cached, no allocation) and a tuple item. */
        PyObject *small = PyLong_FromLong(i & 127);
        checksum += PyTuple_GetItem(tuple, 0) == arg;
        checksum += small != NULL;
        Py_XDECREF(small);
    }
    Py_DECREF(tuple);
    return PyLong_FromSsize_t(checksum);
}

static PyMethodDef methods[] = {
    {"calls", calls, METH_O, "calls(n): 2n cheap C-API calls; returns a checksum"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "call_workload", NULL, -1, methods};

PyMODINIT_FUNC PyInit_call_workload(void)
{
    return PyModule_Create(&module);
}
