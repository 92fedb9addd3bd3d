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

/* The same, naming only each frame's module (no debug info is read): cheap. */
void report_for_each_frame_module(stack_id stack,
                                  void (*emit)(const struct frame_info *frame, unsigned index,
                                               void *context),
                                  void *context);

/*
 * A function's entry address (a type's tp_new, say) symbolised as the options ask, its pc and
 * offset those of the entry; false for 0 or an address in no loaded object.
 */
bool report_describe_function(uintptr_t address, struct frame_info *out);

/* "3.12.1": the running Python's version without its build details. */
const char *report_python_version(void);

#endif
