/*
 * JSON output shared by every per-process report: the checked process's (report_json.c) and the
 * unchecked process's (report_unchecked.c), so that both write strings and the process's identity
 * alike.
 */
#ifndef EXTSAN_JSON_WRITE_H
#define EXTSAN_JSON_WRITE_H

#include <stdio.h>

/*
 * text as a JSON string. Valid UTF-8 passes through; each byte that does not start a valid UTF-8
 * sequence is written as the escape Python's surrogateescape decodes it to (byte 0xXY: \udcXY),
 * so the file stays valid JSON whatever the bytes (argv, paths) and no byte is lost:
 * os.fsencode() on the decoded string gives the bytes back.
 */
void json_write_string(FILE *out, const char *text);

/*
 * The opening of a per-process report: {"extsan": 1, "pid", "ppid", "python" (python_version as
 * given), "argv" (from /proc/self/cmdline); the caller adds its own fields and the closing brace.
 */
void json_write_process_head(FILE *out, const char *python_version);

#endif
