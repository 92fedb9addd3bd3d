/*
 * Writing this process's report: the text report on stderr and, with log_dir, the JSON file
 * log_dir/extsan.<pid>.json (replaced atomically each time it is written).
 */
#ifndef EXTSAN_REPORT_H
#define EXTSAN_REPORT_H

#include "findings.h"

#include <stdio.h>

/* One report format. Writers are given every finding; each decides what it prints. */
struct report_writer {
    /* Text: the blocks of findings not yet printed (marking them), and the summary line. */
    void (*write)(FILE *out, bool final);
};

extern const struct report_writer text_report_writer;
extern const struct report_writer json_report_writer;

/*
 * Now, not at exit: the process may die right after this (a capsule freed without the GIL on
 * 3.12+ where the GIL could not be taken, or halt_on_error). Writes the new finding's text
 * block and a JSON snapshot.
 */
void report_now(void);

/* At process exit (atexit, _exit): the rest of the text report with its summary, and JSON. */
void report_at_exit(void);

/*
 * The text blocks of the findings from the first-th on (in order of first occurrence), written
 * already or not, suppressed ones left out, without marking them written: what a test runner
 * shows for the findings of one test (shim/activate.c). No summary line.
 */
void report_text_since(FILE *out, unsigned first);
void text_report_write_since(FILE *out, unsigned first); /* report_text.c; LOCK_REPORT held */

/*
 * Whether a rule of the suppressions file matches the finding (decided once, at the first
 * report or at this call, with its frames symbolised). Writers skip or mark such a finding;
 * halt_on_error does not stop the process for it.
 */
bool report_is_suppressed(struct finding *finding);

#endif
