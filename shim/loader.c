/*
 * libextsan.so, the library users preload. It only picks the core built for the running
 * Python (libextsan-py3.X.so beside it) and loads it: one preload path then serves every
 * Python of a test run, and stays inert in the non-Python processes it spawns. A Python process
 * for which no core loads runs unchecked, and says so (detector/report/report_unchecked.h).
 */
#define _GNU_SOURCE
#include "options.h"
#include "report_unchecked.h"
#include "log.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The options the unchecked report needs (log_dir); the core would have read the same. */
static void read_options(void)
{
    options_set_defaults(&extsan_options);
    char error[512];
    if (!options_parse(&extsan_options, getenv("EXTSAN_OPTIONS"), error, sizeof error)) {
        extsan_log(0, "EXTSAN_OPTIONS: %s", error);
        options_set_defaults(&extsan_options); /* no log_dir to trust: the line only */
    }
}

__attribute__((constructor)) static void extsan_load_core(void)
{
    const char *(*get_version)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "Py_GetVersion");
    int major, minor;
    if (!get_version || sscanf(get_version(), "%d.%d", &major, &minor) != 2)
        return; /* not a Python process */
    Dl_info self;
    if (!dladdr((void *)extsan_load_core, &self) || !self.dli_fname)
        return;
    char core[PATH_MAX];
    const char *slash = strrchr(self.dli_fname, '/');
    int directory_length = slash ? (int)(slash - self.dli_fname) : 1;
    snprintf(core, sizeof core, "%.*s/libextsan-py%d.%d.so", directory_length,
             slash ? self.dli_fname : ".", major, minor);
    if (dlopen(core, RTLD_NOW | RTLD_LOCAL))
        return;
    char why[PATH_MAX + 512], version[64];
    const char *error = dlerror();
    snprintf(why, sizeof why, "%s for Python %d.%d (%s)",
             access(core, F_OK) == 0 ? "the core failed to load" : "no core", major, minor,
             error ? error : "dlopen failed");
    snprintf(version, sizeof version, "%.*s", (int)strcspn(get_version(), " "), get_version());
    read_options();
    /* An installed package keeps its libraries in extsan/lib and holds the core of the Python it
     * was installed for only; a checkout's build/ can be given a core for any Python. */
    static const char installed_tail[] = "/extsan/lib";
    size_t tail_length = sizeof installed_tail - 1;
    bool installed =
        slash && (size_t)directory_length >= tail_length &&
        memcmp(self.dli_fname + directory_length - tail_length, installed_tail, tail_length) == 0;
    report_unchecked(version, why,
                     installed ? "HINT: install extsan into that interpreter's environment "
                                 "(pip install extsan) and run it with that extsan"
                               : "HINT: extsan build --python <that interpreter>");
}
