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
 * Where the innermost complete Python frame is: its code object, its current instruction
 * (3.11+: the instruction pointer, an address inside the code object; 3.9/3.10: f_lasti) and the
 * code's first line. Two positions are equal when they name the same instruction of the same
 * code object; a code object born at a dead one's address with the same first line would alias
 * it. NULL and 0 when the thread runs no Python code.
 */
struct python_position {
    PyCodeObject *code;
    const void *instruction;
    int first_line;
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

/*
 * What the frames a thread runs hold, from the object of its innermost frame
 * (sys._current_frames()): references no object's traverse shows. `visit` gets the objects a
 * frame certainly holds: from 3.11, where a running frame is not an object, its locals and its
 * frame object once one was made; on 3.9/3.10 the frame object itself, which the C call running
 * it holds (its traverse shows its locals). `visit_word`, unless NULL, gets every word of each
 * frame's value stack: a running frame does not keep its stack depth up to date, so a word may
 * be stale, to be compared against objects known to be live, never dereferenced.
 */
void python_running_frames(PyObject *frame_object, visitproc visit,
                           void (*visit_word)(void *word, void *argument), void *argument);

/* The name a report shows for a code object: co_qualname (3.11+) or co_name. Borrowed. */
PyObject *python_code_name(PyCodeObject *code);

#endif
