/*
 * JSON output shared by every per-process report: the checked process's (report_json.c) and the
 * unchecked process's (report_unchecked.c), so that both write strings and the process's identity
 * alike.
 */
#ifndef EXTSAN_JSON_WRITE_H
#define EXTSAN_JSON_WRITE_H

#include <stdio.h>

/*
 * text as a JSON string, quoted, escaped by json_escape_each (json_text.h): valid whatever the
 * bytes (argv, paths), each byte that is not UTF-8 written as Python's surrogateescape decodes
 * it (byte 0xXY: \udcXY), so os.fsencode() on the decoded string gives the bytes back.
 */
void json_write_string(FILE *out, const char *text);

/*
 * The opening of a per-process report: {"extsan": 1, "pid", "ppid", "python" (python_version as
 * given), "argv" (from /proc/self/cmdline); the caller adds its own fields and the closing brace.
 */
void json_write_process_head(FILE *out, const char *python_version);

#endif
