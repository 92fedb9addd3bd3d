#define _GNU_SOURCE
#include "signals.h"

#include "allocation_sites.h"
#include "findings.h"
#include "gil.h"
#include "log.h"
#include "options.h"
#include "python_api.h"
#include "report.h"
#include "stacks.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

static const struct {
    int number;
    const char *name;
    bool crash; /* a crash is a finding; a termination only flushes the report */
} deadly_signals[] = {
    {SIGSEGV, "SIGSEGV", true}, {SIGBUS, "SIGBUS", true},   {SIGILL, "SIGILL", true},
    {SIGFPE, "SIGFPE", true},   {SIGABRT, "SIGABRT", true}, {SIGTERM, "SIGTERM", false},
    {SIGINT, "SIGINT", false},  {SIGHUP, "SIGHUP", false},
};
#define DEADLY_SIGNAL_COUNT (sizeof deadly_signals / sizeof deadly_signals[0])

/* Seconds the full report may take in the handler before the watchdog ends the process. */
#define WATCHDOG_SECONDS 5

/* Alternate stack for the handler on the main thread: a stack overflow still gets reported. */
#define ALTERNATE_STACK_BYTES (256 * 1024)

/*
 * The stack the full report runs on. The handler may start on a small stack: faulthandler's
 * alternate stack (16 KiB) when faulthandler raised the signal again from its own handler, or
 * what is left of an overflowed one. Symbolising needs far more, and an overflow there would
 * write into whatever lies below that stack. A guard page at its bottom turns an overflow of
 * this one into a fault.
 */
#define REPORT_STACK_BYTES (2 * 1024 * 1024)

static int deadly_index(int signal)
{
    for (unsigned i = 0; i < DEADLY_SIGNAL_COUNT; i++)
        if (deadly_signals[i].number == signal)
            return (int)i;
    return -1;
}

const char *signal_name(int signal)
{
    int index = deadly_index(signal);
    return index >= 0 ? deadly_signals[index].name : "SIG?";
}

/* ---- dying ---------------------------------------------------------------------------------- */

/* The thread writing the report of the process's death (0: none), and its signal. */
static _Atomic pid_t dying_thread;
static volatile sig_atomic_t dying_signal;

/* Ends the process by `signal`'s default action. Async-signal-safe. */
static void die_by(int signal)
{
    struct sigaction default_action = {.sa_handler = SIG_DFL};
    sigemptyset(&default_action.sa_mask);
    sigaction(signal, &default_action, NULL);
    sigset_t unblocked;
    sigemptyset(&unblocked);
    sigaddset(&unblocked, signal);
    pthread_sigmask(SIG_UNBLOCK, &unblocked, NULL);
    raise(signal);
    _exit(128 + signal); /* not reached: every signal handled here terminates by default */
}

/*
 * The full report cannot be finished: it faulted (a heap already corrupt), or it took too long
 * (it waits for a lock, or for malloc's, that its holder will never release). The snapshot's
 * text goes out instead, unless the full text did.
 */
static void give_up_full_report(void)
{
    int index = deadly_index(dying_signal);
    report_snapshot_text_safely(dying_signal, index >= 0 && deadly_signals[index].crash);
    die_by(dying_signal);
}

static void on_watchdog(int signal)
{
    (void)signal;
    give_up_full_report();
}

static void arm_watchdog(void)
{
    struct sigaction watchdog = {.sa_handler = on_watchdog};
    sigemptyset(&watchdog.sa_mask);
    sigaction(SIGALRM, &watchdog, NULL);
    alarm(WATCHDOG_SECONDS);
}

static void *report_stack; /* REPORT_STACK_BYTES, its lowest page a guard; NULL: none */
static ucontext_t handler_context, report_context;
static const struct crash *death_crash;

/* The full report of a crash: the deadly-signal finding with its Python stack, then written. */
static void report_death(void)
{
    const struct crash *crash = death_crash;
    struct finding *finding = findings_record_deadly(crash->signal, crash->code, crash->address,
                                                     crash->pcs, crash->depth, &crash->thread);
    PyThreadState *thread = python_api.is_initialized() ? gil_attached_thread_state() : NULL;
    if (finding && thread) {
        struct site_key key = {.context = finding->context};
        finding->python_site = site_create(&key, thread);
    }
    report_at_death(dying_signal);
}

static void on_deadly_signal(int signal, siginfo_t *info, void *ucontext)
{
    int saved_errno = errno;
    pid_t self = gettid();
    pid_t expected = 0;
    if (!atomic_compare_exchange_strong(&dying_thread, &expected, self)) {
        if (expected == self) /* a fault inside the full report: end as first asked */
            give_up_full_report();
        for (;;) /* another thread is reporting; it ends the process */
            pause();
    }
    dying_signal = signal;
    bool crash = deadly_signals[deadly_index(signal)].crash;
    uintptr_t pcs[STACK_MAX_DEPTH];
    struct crash described = {.signal = signal, .code = info ? info->si_code : 0, .pcs = pcs};
    if (crash) {
        described.depth =
            stack_capture_interrupted(ucontext, pcs, (unsigned)extsan_options.stack_depth);
        if (info && (signal == SIGSEGV || signal == SIGBUS))
            described.address = (uintptr_t)info->si_addr;
        thread_describe(&described.thread);
    }
    report_snapshot_write_safely(signal, crash ? &described : NULL);
    /*
     * A termination signal arrives at any instruction of any thread, inside malloc as well: a
     * full report would allocate on top of the interrupted allocation and corrupt the heap (seen
     * with processes terminated while they start). The snapshot holds every finding already,
     * symbolised when it was made: its text goes out as it is.
     */
    if (!crash) {
        report_snapshot_text_safely(signal, false);
        errno = saved_errno;
        die_by(signal);
    }
    arm_watchdog();
    death_crash = &described;
    if (report_stack && getcontext(&report_context) == 0) {
        report_context.uc_stack.ss_sp = report_stack;
        report_context.uc_stack.ss_size = REPORT_STACK_BYTES;
        report_context.uc_link = &handler_context;
        makecontext(&report_context, report_death, 0);
        swapcontext(&handler_context, &report_context);
    } else {
        report_death();
    }
    alarm(0);
    errno = saved_errno;
    die_by(signal);
}

static bool is_stand_in(const struct sigaction *action)
{
    return (action->sa_flags & SA_SIGINFO) && action->sa_sigaction == on_deadly_signal;
}

static struct sigaction stand_in_action(void)
{
    struct sigaction action = {.sa_sigaction = on_deadly_signal,
                               .sa_flags = SA_SIGINFO | SA_ONSTACK};
    /* Termination signals wait while the report is written; a fault in it re-enters. */
    sigemptyset(&action.sa_mask);
    for (unsigned i = 0; i < DEADLY_SIGNAL_COUNT; i++)
        if (!deadly_signals[i].crash)
            sigaddset(&action.sa_mask, deadly_signals[i].number);
    return action;
}

static void give_main_thread_an_alternate_stack(void)
{
    stack_t current;
    if (sigaltstack(NULL, &current) != 0 || !(current.ss_flags & SS_DISABLE))
        return; /* the program has one */
    void *memory = mmap(NULL, ALTERNATE_STACK_BYTES, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        return;
    stack_t alternate = {.ss_sp = memory, .ss_size = ALTERNATE_STACK_BYTES};
    if (sigaltstack(&alternate, NULL) != 0)
        munmap(memory, ALTERNATE_STACK_BYTES);
}

void signals_install(void)
{
    if (!extsan_options.handle_signals)
        return;
    struct sigaction stand_in = stand_in_action();
    for (unsigned i = 0; i < DEADLY_SIGNAL_COUNT; i++) {
        struct sigaction current;
        if (sigaction(deadly_signals[i].number, NULL, &current) == 0 &&
            !(current.sa_flags & SA_SIGINFO) && current.sa_handler == SIG_DFL)
            sigaction(deadly_signals[i].number, &stand_in, NULL);
    }
    give_main_thread_an_alternate_stack();
    void *stack = mmap(NULL, REPORT_STACK_BYTES, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (stack != MAP_FAILED && mprotect(stack, (size_t)getpagesize(), PROT_NONE) == 0)
        report_stack = stack;
}

int signals_sigaction(int signal, const struct sigaction *action, struct sigaction *old)
{
    if (!extsan_options.handle_signals || deadly_index(signal) < 0)
        return sigaction(signal, action, old);
    struct sigaction stand_in;
    if (action && !(action->sa_flags & SA_SIGINFO) && action->sa_handler == SIG_DFL) {
        stand_in = stand_in_action();
        action = &stand_in;
    }
    int status = sigaction(signal, action, old);
    if (status == 0 && old && is_stand_in(old)) {
        memset(old, 0, sizeof *old);
        old->sa_handler = SIG_DFL;
        sigemptyset(&old->sa_mask);
    }
    return status;
}

/* ---- interrupts during the heap analysis -------------------------------------------------- */

static atomic_bool interrupt_received;
static struct sigaction python_interrupt_action; /* put back after the analysis */
static bool exit_by_interrupt;

static void on_interrupt(int signal)
{
    (void)signal;
    atomic_store(&interrupt_received, true);
}

/* True when Python's own SIGINT handler would raise KeyboardInterrupt (GIL held). */
static bool interrupt_raises_keyboard_interrupt(void)
{
    PyObject *module = python_api.PyImport_ImportModule("_signal");
    PyObject *handler =
        module ? python_api.PyObject_CallMethod(module, "getsignal", "i", SIGINT) : NULL;
    PyObject *default_handler =
        module ? python_api.PyObject_GetAttrString(module, "default_int_handler") : NULL;
    bool raises = handler && handler == default_handler;
    PyObject *owned[] = {module, handler, default_handler};
    for (unsigned i = 0; i < sizeof owned / sizeof owned[0]; i++)
        if (owned[i])
            python_api.Py_DecRef(owned[i]);
    python_api.PyErr_Clear();
    return raises;
}

bool signals_interruptible_begin(void)
{
    atomic_store(&interrupt_received, false);
    if (!python_is_running() || !interrupt_raises_keyboard_interrupt())
        return false;
    struct sigaction catch_it = {.sa_handler = on_interrupt};
    sigemptyset(&catch_it.sa_mask);
    return sigaction(SIGINT, &catch_it, &python_interrupt_action) == 0;
}

bool signals_interrupted(void)
{
    return atomic_load_explicit(&interrupt_received, memory_order_relaxed);
}

void signals_interruptible_end(bool at_exit)
{
    sigaction(SIGINT, &python_interrupt_action, NULL);
    if (!signals_interrupted())
        return;
    if (at_exit)
        exit_by_interrupt = true;
    else
        raise(SIGINT);
}

void signals_finish_exit(void)
{
    if (!exit_by_interrupt)
        return;
    fflush(NULL);
    extsan_log(0, "interrupted (SIGINT) during the heap analysis at exit; ending by SIGINT");
    die_by(SIGINT);
}
