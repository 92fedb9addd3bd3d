/* When extsan starts in a process, and when it writes that process's report. */
#ifndef EXTSAN_LIFECYCLE_H
#define EXTSAN_LIFECYCLE_H

#include <stdbool.h>

/* Exit status of a process stopped because extsan could not run as asked (a bad option). */
#define EXTSAN_EXIT_BAD_OPTIONS 125

/*
 * Reads EXTSAN_OPTIONS and the suppressions file it names (a malformed one, or a file that
 * cannot be read, stops the process with one line and EXTSAN_EXIT_BAD_OPTIONS), finds the
 * Python runtime, and arranges the exit report, also for forked children. Returns false when
 * extsan stays dormant in this process.
 */
bool lifecycle_start(void);

/*
 * The process is ending (exit or _exit) with `status`: writes its report, once per process.
 * Returns the status to end with: the exitcode option's instead of 0 when findings no rule
 * suppressed were reported, else `status`.
 */
int lifecycle_process_exit(int status);

/*
 * os._exit(status): the process ends without exit handlers. With the GIL held the exit analysis
 * still runs (a forked multiprocessing child ends this way), then the report is written.
 * Returns the status to end with, as lifecycle_process_exit.
 */
int lifecycle_immediate_exit(int status);

/*
 * The runtime loaded a shared object (an extension module, as a rule): the interpreter runs and
 * the loading thread holds the GIL, the moment to arm the exit analysis.
 */
void lifecycle_object_loaded(void);

#endif
