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

/* ---- trimmed stacks ---------------------------------------------------------------------------
 * A native stack shows its innermost frame (where the call or the crash was), an extension's
 * frames and each frame next to one (the runtime function it called, the runtime frame that
 * called it); every other run of frames is folded into one line naming their modules. Option
 * full_stacks shows every frame. The JSON report keeps them all, each marked in_extension;
 * scripts/python/extsan/findings.py trims the same way.
 */

#define MODULE_NAME_MAX 64

/* Frames folded into one line: how many, and their modules in order of first appearance. */
struct fold {
    FILE *out;
    unsigned frames;
    char modules[512];
};

static void add_fold_module(struct fold *fold, const char *module)
{
    size_t used = strlen(fold->modules), length = strlen(module);
    fold->frames++;
    for (const char *at = fold->modules; (at = strstr(at, module)); at++)
        if ((at == fold->modules || at[-1] == ' ') && (at[length] == ',' || !at[length]))
            return;
    snprintf(fold->modules + used, sizeof fold->modules - used, "%s%s", used ? ", " : "", module);
}

static void write_fold(struct fold *fold)
{
    if (fold->frames)
        fprintf(fold->out, "    ... %u frame%s in %s\n", fold->frames, fold->frames == 1 ? "" : "s",
                fold->modules);
    fold->frames = 0;
    fold->modules[0] = '\0';
}

struct trimmed_stack {
    struct text_context *text;
    unsigned depth;
    bool any_extension;
    bool in_extension[STACK_MAX_DEPTH];
    bool shown[STACK_MAX_DEPTH];
    char module[STACK_MAX_DEPTH][MODULE_NAME_MAX]; /* base names, "??" when unknown */
    struct fold fold;
};

static void note_frame(const struct frame_info *frame, unsigned index, void *context)
{
    struct trimmed_stack *trim = context;
    if (index >= STACK_MAX_DEPTH)
        return;
    trim->depth = index + 1;
    trim->in_extension[index] = frame->in_extension;
    trim->any_extension |= frame->in_extension;
    snprintf(trim->module[index], MODULE_NAME_MAX, "%.*s", MODULE_NAME_MAX - 1,
             frame->module[0] ? base_name(frame->module) : "??");
}

/* Folding a single frame would not shorten the stack: it is shown instead. */
static void decide_shown_frames(struct trimmed_stack *trim)
{
    bool *in = trim->in_extension;
    for (unsigned i = 0; i < trim->depth; i++)
        trim->shown[i] = extsan_options.full_stacks || i == 0 || in[i] || (i > 0 && in[i - 1]) ||
                         (i + 1 < trim->depth && in[i + 1]);
    for (unsigned i = 0; i < trim->depth; i++)
        if (!trim->shown[i] && (i == 0 || trim->shown[i - 1]) &&
            (i + 1 == trim->depth || trim->shown[i + 1]))
            trim->shown[i] = true;
}

static void write_frame(const struct frame_info *frame, unsigned index, void *context);

static void write_shown_frame(const struct frame_info *frame, unsigned index, void *context)
{
    struct trimmed_stack *trim = context;
    if (index < trim->depth && !trim->shown[index]) {
        add_fold_module(&trim->fold, trim->module[index]);
        return;
    }
    write_fold(&trim->fold);
    write_frame(frame, index, trim->text);
}

/* Reads which of the stack's frames are an extension's. LOCK_REPORT held (the buffer). */
static struct trimmed_stack *trim_stack(struct text_context *text, stack_id stack)
{
    static struct trimmed_stack trim; /* large; used only under LOCK_REPORT */
    memset(&trim, 0, sizeof trim);
    trim.text = text;
    trim.fold.out = text->out;
    report_for_each_frame_module(stack, note_frame, &trim);
    decide_shown_frames(&trim);
    return &trim;
}

static void write_trimmed_frames(struct trimmed_stack *trim, stack_id stack)
{
    report_for_each_frame(stack, write_shown_frame, trim);
    write_fold(&trim->fold);
}

/* 'function file:line' (file's base name), or 'function module+0xoffset' without debug info. */
static void write_function_place(FILE *out, const struct frame_info *frame)
{
    fputs(frame->function[0] ? frame->function : "??", out);
    if (frame->file[0])
        fprintf(out, " %s:%d", base_name(frame->file), frame->line);
    else
        fprintf(out, " %s+0x%lx", frame->module[0] ? base_name(frame->module) : "??",
                (unsigned long)frame->module_offset);
}

struct first_extension_frame {
    FILE *out;
    const char *before;
    bool written;
};

static void write_if_first_extension_frame(const struct frame_info *frame, unsigned index,
                                           void *context)
{
    (void)index;
    struct first_extension_frame *first = context;
    if (first->written || !frame->in_extension)
        return;
    first->written = true;
    fputs(first->before, first->out);
    write_function_place(first->out, frame);
}

/* `before` and the stack's innermost frame of an extension; nothing when it has none. */
static void write_first_extension_frame(FILE *out, const char *before, stack_id stack)
{
    struct first_extension_frame first = {out, before, false};
    report_for_each_frame(stack, write_if_first_extension_frame, &first);
}

/*
 * Ends a headline with where in the user's code the finding is: the innermost frame of an
 * extension in the stack its fingerprint is made from (findings.py), the type's creation for a
 * finding about a type.
 */
static void end_headline(FILE *out, const struct finding *finding)
{
    /* A hidden reference is where the member that holds it is declared, when debug info says. */
    for (unsigned i = 0; finding->heap && i < finding->heap->referent_count; i++) {
        const struct heap_referent *referent = &finding->heap->referents[i];
        const char *file = referent->member.file;
        if (referent->naming != MEMBER_NAMED || referent->own_type || !file[0])
            continue;
        fprintf(out, "; in %s %s:%d\n", referent->member.path, base_name(file),
                referent->member.line);
        return;
    }
    if (finding->type && finding->type->created_at) {
        write_first_extension_frame(out, "; type created at ", finding->type->created_at);
    } else {
        const struct allocation_site *site =
            finding->heap ? allocation_site_get(finding->heap->example_site) : NULL;
        write_first_extension_frame(out, "; at ", site ? site->native : finding->stack);
    }
    fputc('\n', out);
}

/* The test that made the call or allocated the example holder (context.h), when known. */
static void write_context(const struct finding *finding, struct text_context *text)
{
    if (finding->context)
        fprintf(text->out, "==%d==extsan:   in test %s\n", text->pid, finding->context);
}

static void write_stack(struct text_context *text, const char *title, stack_id stack)
{
    if (!stack)
        return;
    fprintf(text->out, "  %s:\n", title);
    write_trimmed_frames(trim_stack(text, stack), stack);
}

/* A construction slot as 'tp_new: function file:line', the runtime's marked as such. */
static void write_slot(FILE *out, const char *name, uintptr_t address)
{
    static struct frame_info function; /* large; used only under LOCK_REPORT */
    if (!report_describe_function(address, &function))
        return;
    fprintf(out, "; %s: ", name);
    write_function_place(out, &function);
    if (!function.in_extension)
        fputs(" (the runtime's)", out);
}

/*
 * An instance's native allocation stack. One without a frame of an extension (a type whose
 * tp_new is the runtime's PyType_GenericNew) says so, and where the user's code is instead: the
 * type's tp_new and tp_init and where the type was created.
 */
static void write_allocation_stack(struct text_context *text, const struct type_record *type,
                                   stack_id stack)
{
    if (!stack)
        return;
    struct trimmed_stack *trim = trim_stack(text, stack);
    if (trim->any_extension || !type) {
        fprintf(text->out, "  allocated at:\n");
    } else {
        fprintf(text->out, "  allocated at: no frame of an extension");
        write_slot(text->out, "tp_new", type->tp_new);
        write_slot(text->out, "tp_init", type->tp_init);
        write_first_extension_frame(text->out, "; the type was created at ", type->created_at);
        fputc('\n', text->out);
    }
    write_trimmed_frames(trim, stack);
}

/*
 * A frame of the test harness: pytest, pluggy, pytest-xdist and execnet, runpy. What calls the
 * test function is theirs; scripts/python/extsan/findings.py decides the same way.
 */
static const char *python_harness_package(const char *file)
{
    static const char *const packages[] = {"_pytest", "pluggy", "xdist", "execnet"};
    static const char *const names[] = {"pytest", "pluggy", "xdist", "execnet"};
    for (size_t i = 0; i < sizeof packages / sizeof packages[0]; i++) {
        size_t length = strlen(packages[i]);
        for (const char *at = file; (at = strstr(at, packages[i])); at++)
            if ((at == file || at[-1] == '/') && at[length] == '/')
                return names[i];
    }
    const char *name = base_name(file);
    if (!strcmp(name, "runpy.py") || !strcmp(name, "<frozen runpy>"))
        return "runpy";
    if (strstr(file, "/pytest/__main__.py") || strstr(file, "/pytest/__init__.py"))
        return "pytest";
    return NULL;
}

/* The Python frames of a site under `title`, innermost first, as a traceback lists them; from
   the first frame of the harness on, one line naming the harness' packages (full_stacks: all). */
static void write_python_frames(struct text_context *text, const char *title,
                                const struct allocation_site *where)
{
    if (!where || !where->python_depth)
        return;
    fprintf(text->out, "  %s:\n", title);
    struct fold fold = {.out = text->out};
    for (unsigned i = 0; i < where->python_depth; i++) {
        const char *package = python_harness_package(where->python[i].file);
        if ((package || fold.frames) && !extsan_options.full_stacks) {
            add_fold_module(&fold, package ? package : base_name(where->python[i].file));
            continue;
        }
        fprintf(text->out, "    File \"%s\", line %d, in %s\n", where->python[i].file,
                where->python[i].line, where->python[i].function);
    }
    write_fold(&fold);
}

static void write_allocation_site(struct text_context *text, const struct type_record *type,
                                  site_id site)
{
    const struct allocation_site *where = allocation_site_get(site);
    if (!where)
        return;
    write_python_frames(text, "allocated by Python code", where);
    write_allocation_stack(text, type, where->native);
}

/* capsule-without-gil and call-without-gil. */
static void write_call_finding(const struct finding *finding, struct text_context *text)
{
    FILE *out = text->out;
    const char *what = strchr(finding->api, ' ') ? "happened" : "was called";
    fprintf(out, "==%d==extsan: %s: %s %s without the GIL", text->pid,
            finding_kind_name(finding->kind), finding->api, what);
    if (finding->has_capsule_name)
        fprintf(out, " (capsule \"%s\")", finding->capsule);
    end_headline(out, finding);
    write_context(finding, text);
    if (finding->kind == FINDING_CAPSULE_WITHOUT_GIL)
        fprintf(out, "  HINT: capsule calls need the GIL; from 3.12 on they crash without it. Hold"
                     " it (end the Py_BEGIN_ALLOW_THREADS / gil_scoped_release scope first, or"
                     " PyGILState_Ensure in a foreign thread).\n");
    else
        fprintf(out,
                "  HINT: %s needs the GIL (an attached thread state): make the call after the"
                " Py_BEGIN_ALLOW_THREADS / gil_scoped_release scope ends, or take the GIL around"
                " it (PyGILState_Ensure, nb::gil_scoped_acquire, py::gil_scoped_acquire).\n",
                finding->api);
    fprintf(out, "==%d==extsan:   on thread %d \"%s\", %s; seen %lu time%s\n", text->pid,
            (int)finding->thread.tid, finding->thread.name,
            finding->thread.has_python_state ? "which had released the GIL"
                                             : "which has no Python thread state",
            finding->count, finding->count == 1 ? "" : "s");
    write_stack(text, "called at", finding->stack);
    write_python_frames(text, "called from Python code", allocation_site_get(finding->python_site));
    fputc('\n', out);
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
            "==%d==extsan: hidden-reference: %s (%s) holds references the cyclic GC cannot see%s",
            text->pid, finding->type_name, binding,
            heap->inherited_traverse ? ": its tp_traverse is inherited and does not know its fields"
                                     : ": it has no tp_traverse");
        break;
    case FINDING_INCOMPLETE_TRAVERSE:
        fprintf(out, "==%d==extsan: incomplete-traverse: the tp_traverse of %s (%s) misses %s",
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
        break;
    default:
        return;
    }
    end_headline(out, finding);
    write_context(finding, text);
    fprintf(out, "  HINT: %s\n", fix_hint(finding->kind, finding->type->binding));
    write_member_visits(out, finding);
    if (heap->missed_type_visit)
        fprintf(out, "  HINT: %s\n", fix_hint_missing_type_visit());
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
    write_allocation_site(text, finding->type, heap->example_site);
    write_stack(text, "type created at", finding->type->created_at);
    fputc('\n', out);
}

static void write_deadly_signal(const struct finding *finding, struct text_context *text)
{
    FILE *out = text->out;
    fprintf(out, "==%d==extsan: deadly-signal: %s", text->pid, signal_name(finding->signal));
    if (finding->signal == SIGSEGV || finding->signal == SIGBUS)
        fprintf(out, " on address 0x%lx", (unsigned long)finding->fault_address);
    fprintf(out, " in thread %d \"%s\"", (int)finding->thread.tid, finding->thread.name);
    end_headline(out, finding);
    write_context(finding, text);
    fprintf(out, "  HINT: the process dies of this signal, as it would without extsan; the "
                 "findings above were made before it.\n");
    write_stack(text, "crashed at", finding->stack);
    write_python_frames(text, "in Python code", allocation_site_get(finding->python_site));
    fputc('\n', out);
}

static void write_reference_leak(const struct finding *finding, struct text_context *text)
{
    FILE *out = text->out;
    fprintf(out,
            "==%d==extsan: reference-leak: %u %s object%s leaked per repetition, kept by "
            "references nothing explains",
            text->pid, finding->leaked_per_repetition, finding->type_name,
            finding->leaked_per_repetition == 1 ? "" : "s");
    end_headline(out, finding);
    write_context(finding, text);
    fprintf(out, "  HINT: %s\n", fix_hint(finding->kind, BINDING_C_API));
    fprintf(out,
            "==%d==extsan:   in each of %u repetitions after a warm-up; an example has %ld "
            "reference%s no visible or hidden referrer explains, and nothing made before the "
            "repetitions refers to it\n",
            text->pid, finding->repetitions, finding->unexplained_references,
            finding->unexplained_references == 1 ? "" : "s");
    write_allocation_site(text, NULL, finding->python_site);
    fputc('\n', out);
}

static void write_type_finding(const struct finding *finding, struct text_context *text)
{
    fprintf(text->out,
            "==%d==extsan: traverse-missing-gc: %s has Py_TPFLAGS_HAVE_GC but no tp_traverse",
            text->pid, finding->type_name);
    end_headline(text->out, finding);
    write_context(finding, text);
    fprintf(text->out, "  HINT: %s\n", fix_hint(finding->kind, finding->type->binding));
    write_stack(text, "type created at", finding->type->created_at);
    fputc('\n', text->out);
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
    case FINDING_CALL_WITHOUT_GIL:
        write_call_finding(finding, text);
        break;
    case FINDING_TRAVERSE_MISSING_GC:
        write_type_finding(finding, text);
        break;
    case FINDING_HIDDEN_REFERENCE:
    case FINDING_INCOMPLETE_TRAVERSE:
    case FINDING_LEAKED_CYCLE:
        write_heap_finding(finding, text);
        break;
    case FINDING_REFERENCE_LEAK:
        write_reference_leak(finding, text);
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

/* ---- the summary table ------------------------------------------------------------------------
 * One row per finding not suppressed, in order of first occurrence: kind, subject, count, test.
 */

struct summary_table {
    struct text_context *text;
    int kind_width, subject_width;
    bool measure; /* the first pass sizes the columns, the second writes the rows */
};

/* What a finding is about: the type, the capsule API and name, or the signal (findings.py). */
static void finding_subject(const struct finding *finding, char *out, size_t size)
{
    if (finding->type || finding->kind == FINDING_REFERENCE_LEAK)
        snprintf(out, size, "%s", finding->type_name);
    else if (finding->kind == FINDING_CAPSULE_WITHOUT_GIL)
        snprintf(out, size, "%s %s", finding->api,
                 finding->has_capsule_name ? finding->capsule : "(unnamed capsule)");
    else
        snprintf(out, size, "%s",
                 finding->kind == FINDING_DEADLY_SIGNAL ? signal_name(finding->signal) : "");
}

static void write_summary_row(struct finding *finding, void *context)
{
    struct summary_table *table = context;
    if (finding->suppressed_by)
        return;
    char subject[512];
    finding_subject(finding, subject, sizeof subject);
    const char *kind = finding_kind_name(finding->kind);
    if (table->measure) {
        table->kind_width =
            table->kind_width > (int)strlen(kind) ? table->kind_width : (int)strlen(kind);
        table->subject_width = table->subject_width > (int)strlen(subject) ? table->subject_width
                                                                           : (int)strlen(subject);
        return;
    }
    fprintf(table->text->out, "==%d==extsan:   %-*s  %-*s  %5lu  %s\n", table->text->pid,
            table->kind_width, kind, table->subject_width, subject, finding->count,
            finding->context ? finding->context : "-");
}

static void write_summary_table(struct text_context *text)
{
    struct summary_table table = {text, (int)strlen("kind"), (int)strlen("subject"), true};
    findings_for_each(write_summary_row, &table);
    fprintf(text->out, "==%d==extsan:   %-*s  %-*s  %5s  %s\n", text->pid, table.kind_width, "kind",
            table.subject_width, "subject", "count", "test");
    table.measure = false;
    findings_for_each(write_summary_row, &table);
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
        write_summary_table(&text);
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
