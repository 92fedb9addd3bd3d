/*
 * Writing this process's report: the text report on stderr and, with log_dir, the JSON file
 * log_dir/extsan.<pid>.json (replaced atomically each time it is written).
 */
#ifndef EXTSAN_REPORT_H
#define EXTSAN_REPORT_H

#include "findings.h"

#include <stdint.h>
#include <stdio.h>

/* What a report writer is asked for. */
struct report_request {
    bool final;      /* the process ends normally: text summary; JSON "complete": true */
    int signal;      /* JSON: the signal that ends the process; 0 for none */
    bool keep_marks; /* text: print the blocks not printed yet without marking them printed */
    struct report_fields *fields; /* JSON of a snapshot: notes its fields (report_put_field) */
};

/* One report format. Writers are given every finding; each decides what it prints. */
struct report_writer {
    /* Text: the blocks of findings not yet printed (marking them), and the summary line. */
    void (*write)(FILE *out, const struct report_request *request);
};

extern const struct report_writer text_report_writer;
extern const struct report_writer json_report_writer;

/*
 * The JSON fields whose value may change between a snapshot and the process's death: a signal
 * handler fills them in (report_snapshot_write_safely).
 */
enum report_field_kind {
    FIELD_COUNT,         /* a finding's count */
    FIELD_SIGNAL,        /* the process's "signal": "SIGTERM", or null */
    FIELD_ANALYSIS,      /* the process's "analysis": how far the heap analysis got */
    FIELD_MORE_FINDINGS, /* where the findings list ends: a deadly-signal finding goes there */
};

/*
 * Writes a field's value; in a snapshot, padded with blanks to a fixed width, and noted. For
 * FIELD_COUNT `finding` is the finding; for FIELD_MORE_FINDINGS the last finding written
 * (NULL when none was).
 */
void report_put_field(FILE *out, const struct report_request *request, enum report_field_kind kind,
                      const struct finding *finding);

/*
 * Now, not at exit: the process may die right after this (a capsule freed without the GIL on
 * 3.12+ where the GIL could not be taken, or halt_on_error). Writes the new finding's text
 * block and the JSON report.
 */
void report_now(void);

/*
 * A finding was made (call it outside every extsan lock): the JSON report is written with it
 * ("complete": false), and the snapshot a signal handler writes is prepared again: the report as
 * JSON with the fields above at a fixed width, and the text blocks not printed yet.
 */
void report_snapshot(void);

/*
 * At process exit (atexit, _exit): the rest of the text report with its summary, and JSON.
 * Returns how many findings no rule suppressed (what the exitcode option goes by).
 */
unsigned report_at_exit(void);

/* What a signal handler knows of the crash that ends the process (signals.c). */
struct crash {
    int signal, code;
    uintptr_t address;    /* of the fault, for SIGSEGV and SIGBUS */
    const uintptr_t *pcs; /* the stack of the thread it hit, the faulting instruction first */
    unsigned depth;
    struct thread_description thread;
};

/*
 * The process is being killed by `signal` (a crash when `crash` is not NULL). Async-signal-safe:
 * writes the JSON report from the snapshot with the current counts, the signal and the
 * analysis' state, and for a crash a deadly-signal finding with the unsymbolised stack.
 */
void report_snapshot_write_safely(int signal, const struct crash *crash);

/*
 * Async-signal-safe: the snapshot's text blocks on stderr, and for a crash a line naming the
 * signal. Nothing once report_at_death wrote its text.
 */
void report_snapshot_text_safely(int signal, bool crash);

/*
 * The process is being killed by `signal`, after report_snapshot_write_safely: the full report
 * (text with its summary, symbolised JSON with the signal). Allocates and takes locks: called in
 * the signal handler under a watchdog (signals.c).
 */
void report_at_death(int signal);

/* In a forked child: the parent's snapshot describes the parent. */
void report_reset_after_fork(void);

/*
 * The text blocks of the findings from the first-th on (in order of first occurrence), written
 * already or not, suppressed ones left out, without marking them written: what a test runner
 * shows for the findings of one test (shim/activate.c). No summary line.
 */
void report_text_since(FILE *out, unsigned first);
void text_report_write_since(FILE *out, unsigned first); /* report_text.c; LOCK_REPORT held */

/*
 * The findings from the first-th on as a JSON array, each as the JSON report writes it
 * (suppressed ones included, with "suppressed"), for a test runner to classify them.
 */
void report_json_since(FILE *out, unsigned first);
void json_report_write_since(FILE *out, unsigned first); /* report_json.c; LOCK_REPORT held */

/*
 * Whether a rule of the suppressions file matches the finding (decided once, at the first
 * report or at this call, with its frames symbolised). Writers skip or mark such a finding;
 * halt_on_error does not stop the process for it.
 */
bool report_is_suppressed(struct finding *finding);

/*
 * The index in set of the first rule that matches the index-th finding (0-based, in order of
 * first occurrence), by the names a suppression is matched against; -1 when none does or there
 * is no such finding.
 */
struct suppression_set;
int report_match_rules(unsigned index, struct suppression_set *set);

#endif
