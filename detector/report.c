#define _GNU_SOURCE
#include "report.h"
#include "locks.h"

#include "log.h"
#include "options.h"
#include "heap_analysis.h"
#include "python_api.h"
#include "report_frames.h"
#include "suppressions.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reports of one process are written one at a time (several threads may find at once). */

void report_for_each_frame(stack_id stack,
                           void (*emit)(const struct frame_info *frame, unsigned index,
                                        void *context),
                           void *context)
{
    unsigned depth;
    const uintptr_t *pcs = stack_depot_get(stack, &depth);
    static struct frame_info frame; /* large; used only under LOCK_REPORT */
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

/* ---------------------------------------------------------------------------------------------
 * Suppressions: each finding is decided once, when it is first reported, because matching needs
 * its frames symbolised. LOCK_REPORT held.
 */

struct suppression_offer {
    struct suppression_match match;
    bool done; /* no further name can change the outcome */
};

static void offer_name(struct suppression_offer *offer, const char *name)
{
    if (!offer->done && name && *name)
        offer->done = suppression_match_offer(&offer->match, name);
}

/* A path, then its base name. */
static void offer_path(struct suppression_offer *offer, const char *path)
{
    offer_name(offer, path);
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (slash)
        offer_name(offer, slash + 1);
}

/* Every frame's function, module and source file, symbolised whatever the symbolize option. */
static void offer_stack(struct suppression_offer *offer, stack_id stack)
{
    unsigned depth;
    const uintptr_t *pcs = stack_depot_get(stack, &depth);
    static struct frame_info frame; /* large; used only under LOCK_REPORT */
    for (unsigned i = 0; pcs && i < depth && !offer->done; i++) {
        if (!symbolize_pc(pcs[i], true, &frame))
            continue;
        offer_name(offer, frame.function);
        offer_path(offer, frame.module);
        offer_path(offer, frame.file);
    }
}

static void decide_suppression(struct finding *finding, void *context)
{
    (void)context;
    if (finding->suppression_decided)
        return;
    finding->suppression_decided = true;
    struct suppression_offer offer;
    offer.done = !suppression_match_begin(&offer.match, finding->kind);
    offer_name(&offer, finding->type_name);
    offer_name(&offer, finding->api);
    if (finding->has_capsule_name)
        offer_name(&offer, finding->capsule);
    offer_stack(&offer, finding->stack);
    if (finding->type && finding->type->created_at != finding->stack)
        offer_stack(&offer, finding->type->created_at);
    const struct allocation_site *site =
        finding->heap ? allocation_site_get(finding->heap->example_site) : NULL;
    if (site) {
        offer_stack(&offer, site->native);
        for (unsigned i = 0; i < site->python_depth; i++) {
            offer_path(&offer, site->python[i].file);
            offer_name(&offer, site->python[i].function);
        }
    }
    finding->suppressed_by = suppression_match_end(&offer.match);
}

static void decide_suppressions(void)
{
    if (suppressions_in_force())
        findings_for_each(decide_suppression, NULL);
}

bool report_is_suppressed(struct finding *finding)
{
    if (!suppressions_in_force())
        return false;
    lock_acquire(LOCK_REPORT);
    decide_suppression(finding, NULL);
    bool suppressed = finding->suppressed_by != NULL;
    lock_release(LOCK_REPORT);
    return suppressed;
}

/* The text report goes out in one write(2), so it is never interleaved with other output. */
static void write_text(bool final)
{
    char *buffer = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buffer, &size);
    if (!out)
        return;
    /* A newline first: the program's last output may not have ended its line (nanobind's
       leak message does not), and every report line must start with ==PID==. */
    fputc('\n', out);
    text_report_writer.write(out, final);
    fclose(out);
    if (size <= 1) { /* nothing to say: a clean process prints nothing at all */
        free(buffer);
        return;
    }
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
 * Replaces `path` atomically: a reader sees the old file or the new one, never a torn file.
 * The temporary file is created exclusively and without following links, so a link planted in
 * a shared directory is never written through. `option` names the option that chose the path.
 */
static void write_file_atomically(const char *path, const char *option,
                                  void (*write_content)(FILE *out, const void *context),
                                  const void *context)
{
    char temporary[PATH_MAX];
    snprintf(temporary, sizeof temporary, "%s.%d.tmp", path, (int)getpid());
    unlink(temporary); /* a leftover of an earlier write by this pid that was cut short */
    int fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        extsan_log(0, "cannot write %s: %s (option %s)", path, strerror(errno), option);
        if (fd >= 0)
            close(fd);
        return;
    }
    write_content(out, context);
    bool failed = fflush(out) != 0 || ferror(out);
    failed |= fclose(out) != 0;
    if (failed || rename(temporary, path) != 0) {
        extsan_log(0, "cannot write %s: %s (option %s)", path, strerror(errno), option);
        unlink(temporary);
    }
}

static void write_json_content(FILE *out, const void *final)
{
    json_report_writer.write(out, *(const bool *) final);
}

/* log_dir/extsan.<pid>.json, replaced whole each time it is written. */
static void write_json(bool final)
{
    const char *dir = extsan_options.log_dir;
    if (!dir || !*dir)
        return;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/extsan.%d.json", dir, (int)getpid());
    write_file_atomically(path, "log_dir", write_json_content, &final);
}

static void write_text_content(FILE *out, const void *text)
{
    fputs(text, out);
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
    write_file_atomically(path, "dot_dir", write_text_content, finding->heap->dot);
}

void report_now(void)
{
    lock_acquire(LOCK_REPORT);
    decide_suppressions();
    if (extsan_options.text_report)
        write_text(false);
    write_json(false);
    lock_release(LOCK_REPORT);
}

void report_at_exit(void)
{
    lock_acquire(LOCK_REPORT);
    decide_suppressions();
    if (extsan_options.text_report)
        write_text(true);
    write_json(true);
    if (extsan_options.dot_dir && *extsan_options.dot_dir) {
        struct dot_context dot = {0};
        findings_for_each(write_dot_file, &dot);
    }
    lock_release(LOCK_REPORT);
}

void report_text_since(FILE *out, unsigned first)
{
    lock_acquire(LOCK_REPORT);
    decide_suppressions();
    text_report_write_since(out, first);
    lock_release(LOCK_REPORT);
}
