#define _GNU_SOURCE
#include "report.h"

#include "log.h"
#include "options.h"
#include "heap_analysis.h"
#include "python_api.h"
#include "report_frames.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reports of one process are written one at a time (several threads may find at once). */
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

void report_for_each_frame(stack_id stack,
                           void (*emit)(const struct frame_info *frame, unsigned index,
                                        void *context),
                           void *context)
{
    unsigned depth;
    const uintptr_t *pcs = stack_depot_get(stack, &depth);
    static struct frame_info frame; /* large; used only under report_lock */
    for (unsigned i = 0; pcs && i < depth; i++) {
        if (!symbolize_pc(pcs[i], extsan_options.symbolize, &frame)) {
            memset(&frame, 0, sizeof frame);
            frame.pc = pcs[i];
        }
        emit(&frame, i, context);
    }
}

const char *report_python_version(void)
{
    static char version[32];
    snprintf(version, sizeof version, "%.*s", (int)strcspn(python_api.version, " "),
             python_api.version);
    return version;
}

/* The text report goes out in one write(2), so it is never interleaved with other output. */
static void write_text(bool final)
{
    char *buffer = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buffer, &size);
    if (!out)
        return;
    text_report_writer.write(out, final);
    fclose(out);
    for (size_t done = 0; done < size;) {
        ssize_t n = write(STDERR_FILENO, buffer + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += n;
    }
    free(buffer);
}

/*
 * Replaces log_dir/extsan.<pid>.json atomically: a reader sees the old report or the new one,
 * never a torn file. The temporary file is created exclusively and without following links,
 * so a link planted in a shared directory is never written through.
 */
static void write_json(bool final)
{
    const char *dir = extsan_options.log_dir;
    if (!dir || !*dir)
        return;
    char path[PATH_MAX], temporary[PATH_MAX];
    snprintf(path, sizeof path, "%s/extsan.%d.json", dir, (int)getpid());
    snprintf(temporary, sizeof temporary, "%s/.extsan.%d.json.tmp", dir, (int)getpid());
    unlink(temporary); /* a leftover of an earlier write by this pid that was cut short */
    int fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        extsan_log(0, "cannot write report %s: %s (option log_dir)", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    json_report_writer.write(out, final);
    bool failed = fflush(out) != 0 || ferror(out);
    failed |= fclose(out) != 0;
    if (failed || rename(temporary, path) != 0) {
        extsan_log(0, "cannot write report %s: %s (option log_dir)", path, strerror(errno));
        unlink(temporary);
    }
}

struct dot_context {
    unsigned written;
};

/* Each leaked cycle as its own Graphviz file in dot_dir (written once, at exit). */
static void write_dot_file(struct finding *finding, void *context)
{
    struct dot_context *dot = context;
    if (finding->kind != FINDING_LEAKED_CYCLE || !finding->heap || !finding->heap->dot)
        return;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/extsan.%d.cycle%u.dot", extsan_options.dot_dir, (int)getpid(),
             ++dot->written);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        extsan_log(0, "cannot write %s: %s (option dot_dir)", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    fputs(finding->heap->dot, out);
    fclose(out);
}

void report_now(void)
{
    pthread_mutex_lock(&report_lock);
    if (extsan_options.text_report)
        write_text(false);
    write_json(false);
    pthread_mutex_unlock(&report_lock);
}

void report_at_exit(void)
{
    pthread_mutex_lock(&report_lock);
    if (extsan_options.text_report)
        write_text(true);
    write_json(true);
    if (extsan_options.dot_dir && *extsan_options.dot_dir) {
        struct dot_context dot = {0};
        findings_for_each(write_dot_file, &dot);
    }
    pthread_mutex_unlock(&report_lock);
}
