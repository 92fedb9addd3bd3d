/* JSON strings and the process's identity, as every per-process report writes them. */
#define _GNU_SOURCE
#include "json_write.h"

#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

/*
 * The length of the well-formed UTF-8 sequence at text (Unicode's table 3-7), or 0 when none
 * starts there: overlong forms, surrogates (ED A0..BF), code points above U+10FFFF and truncated
 * sequences are not well-formed. Escaping each byte that starts none is what Python's decoder
 * with surrogateescape does: an ill-formed run only ever holds bytes that start nothing.
 */
static int utf8_sequence_length(const unsigned char *text)
{
    unsigned char lead = text[0];
    unsigned char low = 0x80, high = 0xbf; /* the second byte's range */
    int length;
    if (lead < 0x80)
        return 1;
    if (lead >= 0xc2 && lead <= 0xdf)
        length = 2;
    else if (lead >= 0xe0 && lead <= 0xef)
        length = 3, low = lead == 0xe0 ? 0xa0 : 0x80, high = lead == 0xed ? 0x9f : 0xbf;
    else if (lead >= 0xf0 && lead <= 0xf4)
        length = 4, low = lead == 0xf0 ? 0x90 : 0x80, high = lead == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (text[1] < low || text[1] > high)
        return 0;
    for (int i = 2; i < length; i++)
        if (text[i] < 0x80 || text[i] > 0xbf) /* the terminating NUL fails here too */
            return 0;
    return length;
}

void json_write_string(FILE *out, const char *text)
{
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)text; *c;) {
        int length = utf8_sequence_length(c);
        if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(out, "\\u%04x", *c);
        else if (length == 0)
            fprintf(out, "\\udc%02x", *c);
        else
            fwrite(c, 1, length, out);
        c += length ? length : 1;
    }
    fputc('"', out);
}

static void write_argv(FILE *out)
{
    fputc('[', out);
    FILE *cmdline = fopen("/proc/self/cmdline", "re");
    if (cmdline) {
        char *argument = NULL;
        size_t size = 0;
        bool first = true;
        while (getdelim(&argument, &size, '\0', cmdline) > 0) {
            fputs(first ? "" : ", ", out);
            json_write_string(out, argument);
            first = false;
        }
        free(argument);
        fclose(cmdline);
    }
    fputc(']', out);
}

void json_write_process_head(FILE *out, const char *python_version)
{
    fprintf(out, "{\"extsan\": 1, \"pid\": %d, \"ppid\": %d, \"python\": ", (int)getpid(),
            (int)getppid());
    json_write_string(out, python_version);
    fputs(",\n \"argv\": ", out);
    write_argv(out);
}
