/*
 * The Python stack of the calling thread, read from the interpreter's own frame structures: the
 * public PyFrameObject chain up to 3.10, the internal _PyInterpreterFrame chain from 3.11 (no
 * frame object is ever materialised). Every function here needs the thread state the calling
 * thread has attached (it holds the GIL), so the chain cannot change while it is read.
 */
#ifndef EXTSAN_PYTHON_STACK_H
#define EXTSAN_PYTHON_STACK_H

#include "python_api.h"

/*
 * Where the innermost complete Python frame is: its code object and its current instruction
 * (3.11+: the instruction pointer, an address inside the code object; 3.9/3.10: f_lasti). Two
 * positions are equal exactly when they name the same instruction of the same code object (as
 * long as that code object lives). Both NULL when the thread runs no Python code.
 */
struct python_position {
    PyCodeObject *code;
    const void *instruction;
};

/* The fast path of allocation sites: a few loads, no call, no allocation. */
void python_position_now(PyThreadState *thread, struct python_position *out);

/* One frame as Python objects, for the slow path that turns it into text. */
struct python_frame_ref {
    PyCodeObject *code;
    int line;
};

/* Up to `max` frames, innermost first, incomplete and C-stack shim frames skipped. */
unsigned python_stack_capture(PyThreadState *thread, struct python_frame_ref *frames, unsigned max);

/* The name a report shows for a code object: co_qualname (3.11+) or co_name. Borrowed. */
PyObject *python_code_name(PyCodeObject *code);

#endif
