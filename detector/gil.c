#define _GNU_SOURCE
#include "gil.h"

bool gil_held(void)
{
    PyThreadState *current = python_api.unchecked_thread_state();
#if PY_VERSION_HEX >= 0x030C0000
    /* 3.12+: the getter reads this thread's own attached state. */
    return current != NULL;
#else
    /*
     * 3.9-3.11: the getter returns the global GIL holder, possibly another thread's state.
     * It is ours when it is this thread's gilstate state (the common case, a pointer compare)
     * or, for a state made by hand or in a subinterpreter, when it was created on this thread.
     * The holder cannot be freed while we read it unless it is dropped concurrently, a window
     * of a few instructions on an already-buggy path (we only get here when it is not ours).
     */
    if (!current)
        return false;
    if (current == python_api.gilstate_this_thread())
        return true;
    return current->thread_id == python_api.thread_ident();
#endif
}

bool thread_has_python_state(void)
{
    return python_api.gilstate_this_thread() != NULL || gil_held();
}

bool python_is_running(void)
{
    return python_api.is_initialized() && !python_api.is_finalizing();
}

bool gil_borrow(struct gil_borrow *borrow)
{
    borrow->taken = false;
    if (!python_is_running())
        return false;
    borrow->state = python_api.gil_ensure();
    borrow->taken = true;
    return true;
}

void gil_give_back(struct gil_borrow *borrow)
{
    if (borrow->taken)
        python_api.gil_release(borrow->state);
    borrow->taken = false;
}
