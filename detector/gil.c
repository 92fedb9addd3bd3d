#define _GNU_SOURCE
#include "gil.h"

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
