/* What the report writers share: symbolised frames and the process's identity. */
#ifndef EXTSAN_REPORT_FRAMES_H
#define EXTSAN_REPORT_FRAMES_H

#include "stacks.h"
#include "symbolize.h"

/* Calls emit for each frame of a stored stack, symbolised as the options ask. */
void report_for_each_frame(stack_id stack,
                           void (*emit)(const struct frame_info *frame, unsigned index,
                                        void *context),
                           void *context);

/* "3.12.1": the running Python's version without its build details. */
const char *report_python_version(void);

#endif
