/*
 * Reading the Python stack without asking the interpreter for frame objects.
 *
 * 3.9/3.10: the thread state's `frame` is the innermost PyFrameObject (public struct), f_back
 * links outwards, f_lasti is the last instruction started.
 * 3.11/3.12: tstate->cframe->current_frame is the innermost _PyInterpreterFrame (internal
 * struct, pycore_frame.h), `previous` links outwards, prev_instr points into the code object.
 * 3.13: tstate->current_frame, and instr_ptr instead of prev_instr.
 * From 3.11, frames being set up (not yet at their first traceable instruction) and, from 3.12,
 * the shim frames the interpreter pushes when C calls into Python (owned by the C stack) are
 * skipped, as PyEval_GetFrame does.
 */
#define _GNU_SOURCE
#include "python_stack.h"

#if PY_VERSION_HEX >= 0x030B0000
/*
 * The internal header only, after Python.h: defining Py_BUILD_CORE before Python.h would turn
 * public macros into calls to internal symbols. Only its struct and static inline field readers
 * are used; none of them is a call into the runtime.
 */
#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
#else
#include <frameobject.h>
#endif

#if PY_VERSION_HEX >= 0x030B0000

static _PyInterpreterFrame *innermost_frame(PyThreadState *thread)
{
#if PY_VERSION_HEX >= 0x030D0000
    return thread->current_frame;
#else
    return thread->cframe ? thread->cframe->current_frame : NULL;
#endif
}

/*
 * The code object a frame runs, or NULL. 3.13's f_executable may be something else than code
 * (None in some shim frames); the header's _PyFrame_GetCode only asserts it, which would also
 * make this library reference PyCode_Type.
 */
static PyCodeObject *frame_code(_PyInterpreterFrame *frame)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *executable = frame->f_executable;
    return executable && Py_TYPE(executable) == python_api.code_type ? (PyCodeObject *)executable
                                                                     : NULL;
#else
    return frame->f_code;
#endif
}

static _Py_CODEUNIT *frame_instruction(_PyInterpreterFrame *frame)
{
#if PY_VERSION_HEX >= 0x030D0000
    return frame->instr_ptr;
#else
    return frame->prev_instr;
#endif
}

/* _PyFrame_IsIncomplete, plus the C-stack shim frames of 3.12+ (3.13's version checks those). */
static bool frame_is_skipped(_PyInterpreterFrame *frame)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (frame->owner == FRAME_OWNED_BY_CSTACK)
        return true;
#endif
    PyCodeObject *code = frame_code(frame);
    if (!code)
        return true;
    return frame->owner != FRAME_OWNED_BY_GENERATOR &&
           frame_instruction(frame) < _PyCode_CODE(code) + code->_co_firsttraceable;
}

static _PyInterpreterFrame *complete_frame(_PyInterpreterFrame *frame)
{
    while (frame && frame_is_skipped(frame))
        frame = frame->previous;
    return frame;
}

void python_position_now(PyThreadState *thread, struct python_position *out)
{
    _PyInterpreterFrame *frame = complete_frame(innermost_frame(thread));
    out->code = frame ? frame_code(frame) : NULL;
    out->instruction = frame ? frame_instruction(frame) : NULL;
    out->first_line = out->code ? out->code->co_firstlineno : 0;
}

unsigned python_stack_capture(PyThreadState *thread, struct python_frame_ref *frames, unsigned max)
{
    unsigned depth = 0;
    for (_PyInterpreterFrame *frame = complete_frame(innermost_frame(thread)); frame && depth < max;
         frame = complete_frame(frame->previous)) {
        PyCodeObject *code = frame_code(frame);
        /* PyCode_Addr2Line takes a byte offset into the code units. */
        int offset = (int)((frame_instruction(frame) - _PyCode_CODE(code)) *
                           (ptrdiff_t)sizeof(_Py_CODEUNIT));
        frames[depth].code = code;
        frames[depth].line = python_api.PyCode_Addr2Line(code, offset);
        depth++;
    }
    return depth;
}

void python_running_frames(PyObject *frame_object, visitproc visit,
                           void (*visit_word)(void *word, void *argument), void *argument)
{
    for (_PyInterpreterFrame *frame = complete_frame(((PyFrameObject *)frame_object)->f_frame);
         frame; frame = complete_frame(frame->previous)) {
        PyCodeObject *code = frame_code(frame);
        for (int i = 0; i < code->co_nlocalsplus; i++)
            if (frame->localsplus[i])
                visit(frame->localsplus[i], argument);
        if (frame->f_locals)
            visit(frame->f_locals, argument);
        if (frame->frame_obj)
            visit((PyObject *)frame->frame_obj, argument);
        /* The frame's memory holds co_stacksize words of value stack after its locals. */
        for (int i = 0; visit_word && i < code->co_stacksize; i++)
            visit_word(frame->localsplus[code->co_nlocalsplus + i], argument);
    }
}

PyObject *python_code_name(PyCodeObject *code)
{
    return code->co_qualname;
}

#else /* 3.9, 3.10 */

void python_position_now(PyThreadState *thread, struct python_position *out)
{
    PyFrameObject *frame = thread->frame;
    out->code = frame ? frame->f_code : NULL;
    out->instruction = frame ? (const void *)(intptr_t)frame->f_lasti : NULL;
    out->first_line = out->code ? out->code->co_firstlineno : 0;
}

unsigned python_stack_capture(PyThreadState *thread, struct python_frame_ref *frames, unsigned max)
{
    unsigned depth = 0;
    for (PyFrameObject *frame = thread->frame; frame && depth < max; frame = frame->f_back) {
        frames[depth].code = frame->f_code;
        frames[depth].line = python_api.PyFrame_GetLineNumber(frame);
        depth++;
    }
    return depth;
}

void python_running_frames(PyObject *frame_object, visitproc visit,
                           void (*visit_word)(void *word, void *argument), void *argument)
{
    /* A frame object is allocated with room for co_stacksize words of value stack. */
    for (PyFrameObject *frame = (PyFrameObject *)frame_object; frame; frame = frame->f_back) {
        visit((PyObject *)frame, argument);
        for (int i = 0; visit_word && i < frame->f_code->co_stacksize; i++)
            visit_word(frame->f_valuestack[i], argument);
    }
}

PyObject *python_code_name(PyCodeObject *code)
{
    return code->co_name;
}

#endif
