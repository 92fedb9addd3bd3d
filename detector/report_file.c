/* Report files replaced atomically; shared by the core's reports and the loader's. */
#define _GNU_SOURCE
#include "report_file.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

void report_file_replace(const char *path, const char *option,
                         void (*write_content)(FILE *out, const void *context), const void *context)
{
    char temporary[PATH_MAX];
    snprintf(temporary, sizeof temporary, "%s.%d.tmp", path, (int)getpid());
    unlink(temporary); /* a leftover of an earlier write by this pid that was cut short */
    int fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        extsan_log(0, "cannot write %s: %s (option %s)", path, strerror(errno), option);
        if (fd >= 0)
            close(fd);
        return;
    }
    write_content(out, context);
    bool failed = fflush(out) != 0 || ferror(out);
    failed |= fclose(out) != 0;
    if (failed || rename(temporary, path) != 0) {
        extsan_log(0, "cannot write %s: %s (option %s)", path, strerror(errno), option);
        unlink(temporary);
    }
}
