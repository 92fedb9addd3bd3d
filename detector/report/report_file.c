/* Report files replaced atomically; shared by the core's reports and the loader's. */
#define _GNU_SOURCE
#include "report_file.h"

#include "log.h"
#include "options.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

bool report_file_json_path(char *path, size_t size)
{
    const char *dir = extsan_options.log_dir;
    if (!dir || !*dir)
        return false;
    snprintf(path, size, "%s/extsan.%d.json", dir, (int)getpid());
    return true;
}

bool report_file_temporary_path(const char *path, char *temporary, size_t size)
{
    int length = snprintf(temporary, size, "%s.%d.tmp", path, (int)getpid());
    return length >= 0 && (size_t)length < size;
}

bool report_file_write_all(int fd, const char *bytes, size_t length)
{
    for (size_t done = 0; done < length;) {
        ssize_t n = write(fd, bytes + done, length - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        done += n;
    }
    return true;
}

void report_file_replace(const char *path, const char *option, const char *content, size_t length)
{
    char temporary[PATH_MAX];
    if (!report_file_temporary_path(path, temporary, sizeof temporary)) {
        extsan_log(0, "cannot write %s: the path is too long (option %s)", path, option);
        return;
    }
    unlink(temporary); /* a leftover of an earlier write by this pid that was cut short */
    int fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    bool written = fd >= 0 && report_file_write_all(fd, content, length);
    if (fd >= 0 && close(fd) != 0)
        written = false;
    if (!written || rename(temporary, path) != 0) {
        extsan_log(0, "cannot write %s: %s (option %s)", path, strerror(errno), option);
        if (fd >= 0)
            unlink(temporary);
    }
}
