#define _GNU_SOURCE
#include "log.h"

#include "options.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

void extsan_log(int level, const char *format, ...)
{
    if (level > extsan_options.verbosity)
        return;
    /* One write per message, so lines from several threads or processes never interleave. */
    char line[1024];
    int length = snprintf(line, sizeof line, "extsan: ");
    va_list arguments;
    va_start(arguments, format);
    length += vsnprintf(line + length, sizeof line - length - 1, format, arguments);
    va_end(arguments);
    if (length > (int)sizeof line - 2)
        length = sizeof line - 2;
    line[length++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, length);
    (void)ignored;
}
