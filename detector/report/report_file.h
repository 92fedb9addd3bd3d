/* Writing a report file into a directory other processes share (log_dir, dot_dir). */
#ifndef EXTSAN_REPORT_FILE_H
#define EXTSAN_REPORT_FILE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The path of this process's JSON report, log_dir/extsan.<pid>.json (the name `extsan merge`
 * looks for); false when the option log_dir is empty.
 */
bool report_file_json_path(char *path, size_t size);

/*
 * The temporary file report_file_replace writes `path` through, <path>.<pid>.tmp (a signal
 * handler writes the same one); false when it does not fit in size.
 */
bool report_file_temporary_path(const char *path, char *temporary, size_t size);

/* Writes all of bytes to fd, going on after EINTR and short writes. Async-signal-safe. */
bool report_file_write_all(int fd, const char *bytes, size_t length);

/*
 * Replaces `path` with content atomically: a reader sees the old file or the new one, never a
 * torn file. The temporary file is created exclusively and without following links, so a link
 * planted in a shared directory is never written through. `option` names the option that chose
 * the path, for the one line printed when the file cannot be written.
 */
void report_file_replace(const char *path, const char *option, const char *content, size_t length);

#endif
