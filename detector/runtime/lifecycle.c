#define _GNU_SOURCE
#include "lifecycle.h"

#include "capsule_check.h"
#include "findings.h"
#include "gil.h"
#include "heap_analysis.h"
#include "locks.h"
#include "log.h"
#include "options.h"
#include "python_api.h"
#include "registry.h"
#include "report.h"
#include "report_frames.h"
#include "report_unchecked.h"
#include "signals.h"
#include "suppressions.h"
#include "symbol_cache.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

/* The process whose report has been written: a forked child inherits this and differs. */
static pid_t reported_pid;

/*
 * The process that owns this memory: set at start and in a forked child. A process that shares
 * the memory without having passed through fork's handlers is a vfork or posix_spawn child
 * (CLONE_VM), which may only exec or _exit: it has no report of its own, and writing one would
 * change the parent's state under its feet (the static Python's _posixsubprocess calls _exit(255)
 * from its vfork child when exec fails).
 */
static pid_t owner_pid;

static bool in_shared_memory_child(void)
{
    return getpid() != owner_pid;
}

static void forget_parent_records(void)
{
    owner_pid = getpid();
    findings_reset_after_fork();
    stack_depot_reset_after_fork();
    suppressions_reset_after_fork();
    report_reset_after_fork();
}

int lifecycle_process_exit(int status)
{
    pid_t pid = getpid();
    if (reported_pid == pid || in_shared_memory_child())
        return status;
    reported_pid = pid;
    unsigned unsuppressed = report_at_exit();
    symbol_cache_log_counts();
    signals_finish_exit();
    /* A failure of the program's own is never hidden, nor replaced by ours. */
    if (status != 0 || !unsuppressed || !extsan_options.exitcode)
        return status;
    extsan_log(1,
               "exiting with status %d instead of 0: %u finding%s no rule suppressed (option "
               "exitcode)",
               extsan_options.exitcode, unsuppressed, unsuppressed == 1 ? "" : "s");
    return extsan_options.exitcode;
}

int lifecycle_immediate_exit(int status)
{
    if (in_shared_memory_child())
        return status;
    registry_log_statistics("at os._exit");
    if (python_api.is_initialized() && gil_held() && python_is_running())
        heap_analysis_run();
    return lifecycle_process_exit(status);
}

void lifecycle_object_loaded(void)
{
    heap_analysis_arm();
}

/*
 * Registered with on_exit rather than atexit: it is given the status the process ends with,
 * whether main returned it (Python's own end) or exit() was called (Py_Exit, sys.exit on 3.9).
 * To end with another status it calls exit() again, which glibc supports from an exit handler
 * (stdlib/exit.c: the handlers not run yet still run, stdio is flushed, and the last exit's
 * status is the process's), so nothing registered before extsan is skipped, as _exit would.
 */
static void exit_handler(int status, void *unused)
{
    (void)unused;
    int wanted = lifecycle_process_exit(status);
    if (wanted != status)
        exit(wanted);
}

/* Bytes a report's file name adds to its directory: "/extsan.<pid>.json.<pid>.tmp" at most. */
#define REPORT_NAME_MAX 40

/*
 * The directory an option names for extsan's files (empty: none) exists when this returns true:
 * made if it did not exist (with its parents). A path too long for the files to be named in it,
 * or one that cannot be made, is a bad option, named in `error`.
 */
static bool prepare_output_dir(const char *option, const char *dir, char *error, size_t size)
{
    if (!*dir)
        return true;
    if (strlen(dir) + REPORT_NAME_MAX >= PATH_MAX) {
        snprintf(error, size, "%s: the path is too long (%zu bytes; at most %d)", option,
                 strlen(dir), PATH_MAX - REPORT_NAME_MAX - 1);
        return false;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", dir);
    for (char *slash = path + 1;; slash++) {
        bool last = !*slash;
        if (*slash != '/' && !last)
            continue;
        *slash = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            snprintf(error, size, "%s=%.200s: cannot create %.200s: %s", option, dir, path,
                     strerror(errno));
            return false;
        }
        if (last)
            break;
        *slash = '/';
    }
    struct stat status;
    if (stat(dir, &status) != 0 || !S_ISDIR(status.st_mode)) {
        snprintf(error, size, "%s=%s: not a directory", option, dir);
        return false;
    }
    return true;
}

bool lifecycle_start(void)
{
    options_set_defaults(&extsan_options);
    char error[512];
    if (!options_parse(&extsan_options, getenv("EXTSAN_OPTIONS"), error, sizeof error)) {
        extsan_log(0, "EXTSAN_OPTIONS: %s", error);
        _exit(EXTSAN_EXIT_BAD_OPTIONS);
    }
    /* A suppressions file that cannot be used is a bad option too: the run would report wrong. */
    if (*extsan_options.suppressions &&
        !suppressions_load(extsan_options.suppressions, error, sizeof error)) {
        extsan_log(0, "%s", error);
        _exit(EXTSAN_EXIT_BAD_OPTIONS);
    }
    if (!prepare_output_dir("log_dir", extsan_options.log_dir, error, sizeof error) ||
        !prepare_output_dir("dot_dir", extsan_options.dot_dir, error, sizeof error)) {
        extsan_log(0, "EXTSAN_OPTIONS: %s", error);
        _exit(EXTSAN_EXIT_BAD_OPTIONS);
    }
    if (extsan_options.help)
        options_print(stderr, OPTIONS_FORMAT_HELP);
    const char *why_not;
    if (!python_api_init(&why_not)) {
        if (python_api.version) /* a Python process: it must not pass for checked */
            report_unchecked(report_python_version(), why_not, NULL);
        else
            extsan_log(1, "dormant: %s", why_not);
        return false;
    }
    owner_pid = getpid();
    locks_hold_across_fork(); /* first: the child handlers below take locks */
    pthread_atfork(NULL, NULL, forget_parent_records);
    /*
     * C exit handlers run after Py_FinalizeEx, so capsules destroyed while modules are torn down
     * are in the report. os._exit skips them; the _exit hook covers that.
     */
    on_exit(exit_handler, NULL);
    signals_install();
    report_snapshot(); /* the report exists from the start: the run knows this process */
    extsan_log(1, "active in pid %d, Python %s", (int)getpid(), report_python_version());
    return true;
}
