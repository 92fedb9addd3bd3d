/*
 * A Python process that extsan does not check says so, so that a run cannot pass for checked
 * when it was not: the loader calls this when no core loads for the running Python (none built
 * for that version, or dlopen failed), and the core when it stays dormant.
 */
#ifndef EXTSAN_REPORT_UNCHECKED_H
#define EXTSAN_REPORT_UNCHECKED_H

/*
 * Prints one line on stderr whatever the verbosity, "extsan: PROGRAM (pid N) runs unchecked:
 * WHY HINT" (hint may be NULL), and with the option log_dir writes log_dir/extsan.<pid>.json:
 * {"extsan": 1, "pid", "ppid", "argv", "python": python_version, "checked": false, "why",
 * "complete": true, "findings": []}; `extsan run` and `extsan gate` fail a run holding one. A
 * child this process forks later writes its own such report (without the line).
 *
 * Reads extsan_options (log_dir, verbosity): the caller has parsed EXTSAN_OPTIONS. Call it once
 * per process, at start, before other threads run.
 */
void report_unchecked(const char *python_version, const char *why, const char *hint);

#endif
