/*
 * A capsule-heavy workload for scripts/bench-capsules: every iteration makes a capsule, reads
 * it through the accessors an extension typically uses, and frees it, all with the GIL held:
 * extsan's fast path, the cost it adds to correct code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int payload;

static void release_payload(PyObject *capsule)
{
    (void)capsule;
}

static PyObject *churn(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_ssize_t iterations = PyLong_AsSsize_t(arg);
    if (iterations < 0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t checksum = 0;
    for (Py_ssize_t i = 0; i < iterations; i++) {
        PyObject *capsule = PyCapsule_New(&payload, "bench.payload", release_payload);
        if (!capsule)
            return NULL;
        checksum += PyCapsule_GetPointer(capsule, "bench.payload") == &payload;
        checksum += PyCapsule_IsValid(capsule, "bench.payload");
        checksum += PyCapsule_GetName(capsule)[0] == 'b';
        Py_DECREF(capsule);
    }
    return PyLong_FromSsize_t(checksum);
}

static PyMethodDef methods[] = {
    {"churn", churn, METH_O, "churn(n): make, read and free n capsules; returns a checksum"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capsule_workload", NULL, -1, methods};

PyMODINIT_FUNC PyInit_capsule_workload(void)
{
    return PyModule_Create(&module);
}
