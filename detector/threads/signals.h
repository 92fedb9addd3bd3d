/*
 * Deaths by signal, and interrupts during the heap analysis.
 *
 * extsan stands in for the default action of the signals that kill a process: the crash signals
 * (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) and the termination signals (SIGTERM, SIGINT,
 * SIGHUP). A process that dies of one still has its report: a crash is itself a finding
 * (deadly-signal, with the stack of the thread it hit), a termination is not, and the findings
 * made so far are written either way. Then the signal's default action runs, and the process
 * ends exactly as it would have.
 *
 * Standing in for the default is invisible to the program. sigaction, through which the runtime
 * implements signal.signal(), signal.getsignal() and faulthandler, is intercepted
 * (signals_sigaction): the program reads SIG_DFL where extsan's handler is, and every SIG_DFL it
 * sets puts extsan's handler there instead. A handler the program installs runs instead of
 * extsan's, as it would have run instead of the default; faulthandler, which puts back the
 * disposition it found (SIG_DFL, as it sees it) and raises the signal again, is followed by
 * extsan's report.
 *
 * The handler first does what is safe whatever state the process is in: the JSON report is
 * written from the snapshot prepared when the last finding was made (report.h), with the current
 * counts and, for a crash, the deadly-signal finding with its unsymbolised stack. A termination
 * then prints the snapshot's text, and that is all it may do: it can arrive inside malloc. A
 * crash is synchronous: the full report (the deadly-signal finding symbolised, text on stderr),
 * which allocates and takes locks, is written then, on a stack of its own, under a watchdog
 * (alarm) that ends the process with the original signal should that hang, after printing the
 * snapshot's text.
 */
#ifndef EXTSAN_SIGNALS_H
#define EXTSAN_SIGNALS_H

#include <signal.h>
#include <stdbool.h>

/* "SIGSEGV" for SIGSEGV; "SIG?" for a signal extsan does not name. Async-signal-safe. */
const char *signal_name(int signal);

/* At start: stands in for the default action of every signal above still at SIG_DFL. */
void signals_install(void);

/* The runtime's sigaction, as the program must see it (the shim's hook calls it). */
int signals_sigaction(int signal, const struct sigaction *action, struct sigaction *old);

/*
 * The heap analysis can take seconds on a big heap; a user who presses Ctrl-C then wants the
 * process to stop. While it runs, a SIGINT that would raise KeyboardInterrupt (the program left
 * Python's default handler in place) is caught by extsan: signals_interrupted() turns true and
 * the analysis stops at its next check. signals_interruptible_begin returns false when it did
 * not take SIGINT over (the program handles or ignores it itself).
 */
bool signals_interruptible_begin(void);
bool signals_interrupted(void);

/*
 * Ends the analysis's hold on SIGINT. An interrupt that arrived is passed on: during the exit
 * analysis (at_exit) the process ends, once its report is written, as Python ends one that a
 * KeyboardInterrupt stopped (killed by SIGINT: signals_finish_exit); otherwise SIGINT is raised
 * again for Python's own handler, which raises KeyboardInterrupt in the program.
 */
void signals_interruptible_end(bool at_exit);

/* The process's last step (after its report): ends it by SIGINT if an interrupt asked so. */
void signals_finish_exit(void);

#endif
