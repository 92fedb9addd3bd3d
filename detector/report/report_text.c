/* The text report: sanitizer style, one block per finding, then one summary line. */
#define _GNU_SOURCE
#include "report.h"

#include "fix_hints.h"
#include "heap_analysis.h"
#include "options.h"
#include "report_frames.h"
#include "signals.h"
#include "suppressions.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

struct text_context {
    FILE *out;
    int pid;
    bool keep_marks; /* print blocks not printed yet, leaving them marked as not printed */
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

/* The test that made the call or allocated the example holder (context.h), when known. */
static void write_context(const struct finding *finding, struct text_context *text)
{
    if (finding->context)
        fprintf(text->out, "==%d==extsan:   in test %s\n", text->pid, finding->context);
}

static void write_python_frames(struct text_context *text, const char *title,
                                const struct allocation_site *where);

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
    write_context(finding, text);
    report_for_each_frame(finding->stack, write_frame, text);
    write_python_frames(text, "called from Python code", allocation_site_get(finding->python_site));
    fprintf(out, "  HINT: capsule calls need the GIL; from 3.12 on they crash without it. Hold it"
                 " (end the Py_BEGIN_ALLOW_THREADS / gil_scoped_release scope first, or"
                 " PyGILState_Ensure in a foreign thread).\n\n");
}

static void write_stack(struct text_context *text, const char *title, stack_id stack)
{
    if (!stack)
        return;
    fprintf(text->out, "  %s:\n", title);
    report_for_each_frame(stack, write_frame, text);
}

/* The Python frames of a site under `title`, innermost first, as a traceback lists them. */
static void write_python_frames(struct text_context *text, const char *title,
                                const struct allocation_site *where)
{
    if (!where || !where->python_depth)
        return;
    fprintf(text->out, "  %s:\n", title);
    for (unsigned i = 0; i < where->python_depth; i++)
        fprintf(text->out, "    File \"%s\", line %d, in %s\n", where->python[i].file,
                where->python[i].line, where->python[i].function);
}

static void write_allocation_site(struct text_context *text, site_id site)
{
    const struct allocation_site *where = allocation_site_get(site);
    if (!where)
        return;
    write_python_frames(text, "allocated by Python code", where);
    write_stack(text, "allocated at", where->native);
}

/*
 * "function in HolderObject.callback (PyObject *) at +16, gc_defects.c:114 (1, in the instance
 * of 32 bytes)": the member that holds it when debug info names it (debug_members.h).
 */
static void write_referent(FILE *out, unsigned index, const struct heap_referent *referent)
{
    fprintf(out, "%s %s", index ? "," : "", referent->type_name);
    const struct member_name *member = &referent->member;
    if (referent->naming == MEMBER_NAMED)
        fprintf(out, " in %s (%s)%s", member->path, member->type, member->beyond ? " → …" : "");
    fprintf(out, " at %s", referent->path);
    if (referent->naming == MEMBER_NAMED && member->file[0])
        fprintf(out, ", %s:%d", member->file, member->line);
    fprintf(out, " (%u, in %s %s of %u bytes%s)", referent->count,
            strcmp(referent->evidence, "instance") ? "a" : "the", referent->evidence,
            referent->evidence_bytes,
            referent->naming == MEMBER_NO_DEBUG_INFO
                ? "; its module has no debug info: built with -g, the member would be named"
                : "");
}

/* "  HINT: in tp_traverse: Py_VISIT(self->callback);" for the members debug info named. */
static void write_member_visits(FILE *out, const struct finding *finding)
{
    const struct heap_details *heap = finding->heap;
    bool any = false;
    for (unsigned i = 0; i < heap->referent_count; i++) {
        char visit[320];
        if (heap->referents[i].naming != MEMBER_NAMED || heap->referents[i].own_type ||
            !fix_hint_visit_member(finding->type->binding, &heap->referents[i].member, visit,
                                   sizeof visit))
            continue;
        fprintf(out, "%s %s;", any ? "" : "  HINT: in tp_traverse:", visit);
        any = true;
    }
    if (any)
        fputc('\n', out);
}

static void write_heap_finding(const struct finding *finding, struct text_context *text)
{
    FILE *out = text->out;
    const struct heap_details *heap = finding->heap;
    const char *binding = binding_library_name(finding->type->binding);
    switch (finding->kind) {
    case FINDING_HIDDEN_REFERENCE:
        fprintf(
            out,
            "==%d==extsan: hidden-reference: %s (%s) holds references the cyclic GC cannot see%s\n",
            text->pid, finding->type_name, binding,
            heap->inherited_traverse ? ": its tp_traverse is inherited and does not know its fields"
                                     : ": it has no tp_traverse");
        break;
    case FINDING_INCOMPLETE_TRAVERSE:
        fprintf(out, "==%d==extsan: incomplete-traverse: the tp_traverse of %s (%s) misses %s\n",
                text->pid, finding->type_name, binding,
                heap->referent_count ? "references its instances hold" : "the instance's own type");
        break;
    case FINDING_LEAKED_CYCLE:
        fprintf(out,
                "==%d==extsan: leaked-cycle: %u objects kept alive only by a hidden reference of "
                "%s (%s)",
                text->pid, heap->objects, finding->type_name, binding);
        if (finding->count > 1)
            fprintf(out, "; %lu such cycles", finding->count);
        fputc('\n', out);
        break;
    default:
        return;
    }
    write_context(finding, text);
    if (heap->referent_count) {
        fprintf(out, "==%d==extsan:   %u instance%s; referents:", text->pid, heap->instances,
                heap->instances == 1 ? "" : "s");
        for (unsigned i = 0; i < heap->referent_count; i++)
            write_referent(out, i, &heap->referents[i]);
        fputc('\n', out);
    }
    if (heap->type_count) {
        fprintf(out, "==%d==extsan:   leaked:", text->pid);
        for (unsigned i = 0; i < heap->type_count; i++)
            fprintf(out, "%s %u %s", i ? "," : "", heap->types[i].count, heap->types[i].name);
        fputc('\n', out);
    }
    if (heap->chain)
        fprintf(out, "==%d==extsan:   cycle: %s\n", text->pid, heap->chain);
    if (heap->never_collectable)
        fprintf(out,
                "==%d==extsan:   this cycle is reachable today and can never be collected, even "
                "once its outside references go\n",
                text->pid);
    write_allocation_site(text, heap->example_site);
    write_stack(text, "type created at", finding->type->created_at);
    fprintf(out, "  HINT: %s\n", fix_hint(finding->kind, finding->type->binding));
    write_member_visits(out, finding);
    if (heap->missed_type_visit)
        fprintf(out, "  HINT: %s\n", fix_hint_missing_type_visit());
    fputc('\n', out);
}

static void write_deadly_signal(const struct finding *finding, struct text_context *text)
{
    FILE *out = text->out;
    fprintf(out, "==%d==extsan: deadly-signal: %s", text->pid, signal_name(finding->signal));
    if (finding->signal == SIGSEGV || finding->signal == SIGBUS)
        fprintf(out, " on address 0x%lx", (unsigned long)finding->fault_address);
    fprintf(out, " in thread %d \"%s\"\n", (int)finding->thread.tid, finding->thread.name);
    write_context(finding, text);
    report_for_each_frame(finding->stack, write_frame, text);
    write_python_frames(text, "in Python code", allocation_site_get(finding->python_site));
    fprintf(out, "  HINT: the process dies of this signal, as it would without extsan; the "
                 "findings above were made before it.\n\n");
}

static void write_type_finding(const struct finding *finding, struct text_context *text)
{
    fprintf(text->out,
            "==%d==extsan: traverse-missing-gc: %s has Py_TPFLAGS_HAVE_GC but no tp_traverse\n",
            text->pid, finding->type_name);
    write_context(finding, text);
    write_stack(text, "type created at", finding->type->created_at);
    fprintf(text->out, "  HINT: %s\n\n", fix_hint(finding->kind, finding->type->binding));
}

static void write_finding(struct finding *finding, void *context)
{
    struct text_context *text = context;
    if (finding->suppressed_by)
        return; /* counted in the suppressions block */
    text->findings++;
    text->occurrences += finding->count;
    if (finding->text_written)
        return;
    finding->text_written = !text->keep_marks;
    text->blocks++;
    switch (finding->kind) {
    case FINDING_CAPSULE_WITHOUT_GIL:
        write_capsule_finding(finding, text);
        break;
    case FINDING_TRAVERSE_MISSING_GC:
        write_type_finding(finding, text);
        break;
    case FINDING_HIDDEN_REFERENCE:
    case FINDING_INCOMPLETE_TRAVERSE:
    case FINDING_LEAKED_CYCLE:
        write_heap_finding(finding, text);
        break;
    case FINDING_DEADLY_SIGNAL:
        write_deadly_signal(finding, text);
        break;
    }
}

/*
 * The rules of the suppressions file that matched, with the findings each suppressed, in one
 * line; at verbosity 1, a warning per rule that matched nothing in this process (it may match in
 * another process of the run: the JSON reports let a run-wide tool tell).
 */
static void write_suppressions(struct text_context *text)
{
    unsigned long total = suppressions_used_total();
    if (total) {
        fprintf(text->out, "==%d==extsan: suppressed %lu finding%s:", text->pid, total,
                total == 1 ? "" : "s");
        const char *separator = " ";
        for (unsigned i = 0; i < suppressions_rule_count(); i++) {
            const struct suppression_rule *rule = suppressions_rule(i);
            if (rule->used) {
                fprintf(text->out, "%s%s (%lu)", separator, rule->text, rule->used);
                separator = ", ";
            }
        }
        fputc('\n', text->out);
    }
    for (unsigned i = 0; extsan_options.verbosity >= 1 && i < suppressions_rule_count(); i++) {
        const struct suppression_rule *rule = suppressions_rule(i);
        if (!rule->used)
            fprintf(text->out,
                    "==%d==extsan: warning: suppression %s (%s:%u) matched nothing in this "
                    "process\n",
                    text->pid, rule->text, suppressions_path(), rule->line);
    }
}

static void write_text_report(FILE *out, const struct report_request *request)
{
    struct text_context text = {.out = out, .pid = getpid(), .keep_marks = request->keep_marks};
    findings_for_each(write_finding, &text);
    /*
     * A clean process prints nothing: extsan must not change what a passing test run shows. One
     * whose findings are all suppressed counts as clean; its suppressions block shows at
     * verbosity 1.
     */
    if (!request->final)
        return;
    if (text.findings && !heap_analysis_completed())
        fprintf(out,
                "==%d==extsan: the heap analysis did not complete (%s): references hidden "
                "from the GC may be missing from this report\n",
                text.pid, heap_analysis_state());
    if (text.findings)
        fprintf(out, "==%d==extsan: SUMMARY: %u finding%s (%u occurrence%s) in %s\n", text.pid,
                text.findings, text.findings == 1 ? "" : "s", text.occurrences,
                text.occurrences == 1 ? "" : "s", "this process");
    if (suppressions_in_force() && (text.findings || extsan_options.verbosity >= 1))
        write_suppressions(&text);
}

const struct report_writer text_report_writer = {.write = write_text_report};

/* Writes a finding whether or not its block is on stderr already, and leaves that mark as is. */
static void write_finding_again(struct finding *finding, void *context)
{
    bool written = finding->text_written;
    finding->text_written = false;
    write_finding(finding, context);
    finding->text_written = written;
}

void text_report_write_since(FILE *out, unsigned first)
{
    struct text_context text = {.out = out, .pid = getpid()};
    findings_for_each_since(first, write_finding_again, &text);
}
