/*
 * libextsan.so, the library users preload. It only picks the core built for the running
 * Python (libextsan-py3.X.so beside it) and loads it: one preload path then serves every
 * Python of a test run, and stays inert in the non-Python processes it spawns.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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
    if (!dlopen(core, RTLD_NOW | RTLD_LOCAL)) {
        char message[PATH_MAX + 256];
        int length = snprintf(message, sizeof message,
                              "extsan: no core for Python %d.%d (%s); this process runs unchecked. "
                              "HINT: extsan build --python <that interpreter>\n",
                              major, minor, dlerror());
        ssize_t ignored = write(STDERR_FILENO, message, length > 0 ? (size_t)length : 0);
        (void)ignored;
    }
}
