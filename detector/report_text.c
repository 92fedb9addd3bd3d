/* The text report: sanitizer style, one block per finding, then one summary line. */
#define _GNU_SOURCE
#include "report.h"

#include "report_frames.h"

#include <string.h>
#include <unistd.h>

struct text_context {
    FILE *out;
    int pid;
    unsigned findings, occurrences, blocks;
};

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void write_frame(const struct frame_info *frame, unsigned index, void *context)
{
    FILE *out = ((struct text_context *)context)->out;
    fprintf(out, "    #%u 0x%lx in %s", index, (unsigned long)frame->pc,
            frame->function[0] ? frame->function : "??");
    if (frame->file[0])
        fprintf(out, " %s:%d", frame->file, frame->line);
    if (frame->module[0])
        fprintf(out, " (%s+0x%lx)", base_name(frame->module), (unsigned long)frame->module_offset);
    fputc('\n', out);
}

static void write_capsule_finding(const struct finding *finding, struct text_context *text)
{
    FILE *out = text->out;
    const char *what = strchr(finding->api, ' ') ? "happened" : "was called";
    fprintf(out, "==%d==extsan: capsule-without-gil: %s %s without the GIL", text->pid,
            finding->api, what);
    if (finding->has_capsule_name)
        fprintf(out, " (capsule \"%s\")", finding->capsule);
    fprintf(out, "\n==%d==extsan:   on thread %d \"%s\", %s; seen %lu time%s\n", text->pid,
            (int)finding->thread.tid, finding->thread.name,
            finding->thread.has_python_state ? "which had released the GIL"
                                             : "which has no Python thread state",
            finding->count, finding->count == 1 ? "" : "s");
    report_for_each_frame(finding->stack, write_frame, text);
    fprintf(out, "  HINT: capsule calls need the GIL; from 3.12 on they crash without it. Hold it"
                 " (end the Py_BEGIN_ALLOW_THREADS / gil_scoped_release scope first, or"
                 " PyGILState_Ensure in a foreign thread).\n\n");
}

static void write_finding(struct finding *finding, void *context)
{
    struct text_context *text = context;
    text->findings++;
    text->occurrences += finding->count;
    if (finding->text_written)
        return;
    finding->text_written = true;
    text->blocks++;
    switch (finding->kind) {
    case FINDING_CAPSULE_WITHOUT_GIL:
        write_capsule_finding(finding, text);
        break;
    }
}

static void write_text_report(FILE *out, bool final)
{
    struct text_context text = {.out = out, .pid = getpid()};
    findings_for_each(write_finding, &text);
    /* A clean process prints nothing: extsan must not change what a passing test run shows. */
    if (final && text.findings)
        fprintf(out, "==%d==extsan: SUMMARY: %u finding%s (%u occurrence%s) in %s\n", text.pid,
                text.findings, text.findings == 1 ? "" : "s", text.occurrences,
                text.occurrences == 1 ? "" : "s", "this process");
}

const struct report_writer text_report_writer = {.write = write_text_report};
