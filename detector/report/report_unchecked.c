/* The report of a Python process that runs unchecked (report_unchecked.h). */
#define _GNU_SOURCE
#include "report_unchecked.h"

#include "json_write.h"
#include "log.h"
#include "options.h"
#include "report_file.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Kept for the children this process forks: each writes a report of its own. */
static char unchecked_python[64];
static char unchecked_why[1024];

static void write_unchecked_file(void)
{
    char path[PATH_MAX];
    if (!report_file_json_path(path, sizeof path))
        return;
    char *json = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&json, &length);
    if (!out)
        return;
    json_write_process_head(out, unchecked_python);
    fputs(", \"checked\": false, \"why\": ", out);
    json_write_string(out, unchecked_why);
    fputs(", \"complete\": true,\n \"findings\": []}\n", out);
    if (fclose(out) == 0)
        report_file_replace(path, "log_dir", json, length);
    free(json);
}

static void forked_child(void)
{
    int saved = errno; /* fork's caller sees the errno fork left */
    write_unchecked_file();
    errno = saved;
}

void report_unchecked(const char *python_version, const char *why, const char *hint)
{
    snprintf(unchecked_python, sizeof unchecked_python, "%s", python_version);
    snprintf(unchecked_why, sizeof unchecked_why, "%s", why);
    extsan_log(0, "%s (pid %d) runs unchecked: %s%s%s", program_invocation_short_name,
               (int)getpid(), why, hint ? ". " : "", hint ? hint : "");
    write_unchecked_file();
    pthread_atfork(NULL, NULL, forked_child);
}
