/* Writing a report file into a directory other processes share (log_dir, dot_dir). */
#ifndef EXTSAN_REPORT_FILE_H
#define EXTSAN_REPORT_FILE_H

#include <stdio.h>

/*
 * Replaces `path` atomically: a reader sees the old file or the new one, never a torn file.
 * The temporary file is created exclusively and without following links, so a link planted in
 * a shared directory is never written through. `option` names the option that chose the path,
 * for the one line printed when the file cannot be written.
 */
void report_file_replace(const char *path, const char *option,
                         void (*write_content)(FILE *out, const void *context),
                         const void *context);

#endif
