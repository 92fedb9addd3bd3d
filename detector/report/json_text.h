/*
 * Text inside a JSON string, whatever its bytes. Valid UTF-8 passes through; quotes,
 * backslashes and control characters are escaped; each byte that is not part of a valid UTF-8
 * sequence becomes the escape of the lone surrogate U+DC80 + byte (\udcff for 0xff), as Python's
 * "surrogateescape" error handler decodes it: the document stays valid JSON and nothing is lost
 * (json.loads gives back the str that os.fsdecode gives for the same bytes).
 */
#ifndef EXTSAN_JSON_TEXT_H
#define EXTSAN_JSON_TEXT_H

#include <stddef.h>

/* Hands the escaped form of `text` (without quotes) to `put`, piece by piece. Async-signal-safe. */
void json_escape_each(const char *text,
                      void (*put)(void *context, const char *bytes, size_t length), void *context);

#endif
