/* JSON strings and the process's identity, as every per-process report writes them. */
#define _GNU_SOURCE
#include "json_write.h"

#include "json_text.h"

#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

static void put_to_file(void *out, const char *bytes, size_t length)
{
    fwrite(bytes, 1, length, out);
}

void json_write_string(FILE *out, const char *text)
{
    fputc('"', out);
    json_escape_each(text, put_to_file, out);
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
    /* EXTSAN_VERSION: meson.build's project() version (a define of every target); "extsan" is the
     * report format's version, this the program's. */
    fputs("{\"extsan\": 1, \"extsan_version\": ", out);
    json_write_string(out, EXTSAN_VERSION);
    fprintf(out, ", \"pid\": %d, \"ppid\": %d, \"python\": ", (int)getpid(), (int)getppid());
    json_write_string(out, python_version);
    fputs(",\n \"argv\": ", out);
    write_argv(out);
}
