/* The per-process JSON report; its format is documented in the README and kept stable. */
#define _GNU_SOURCE
#include "report.h"

#include "fix_hints.h"
#include "heap_analysis.h"
#include "json_write.h"
#include "report_frames.h"
#include "signals.h"
#include "suppressions.h"

#include <string.h>

/* Unknown names are null, not "": a consumer can tell "no symbol" from a symbol. */
static void write_json_string_or_null(FILE *out, const char *text)
{
    if (*text)
        json_write_string(out, text);
    else
        fputs("null", out);
}

struct json_context {
    FILE *out;
    const struct report_request *request;
    const struct finding *last; /* the last finding written, NULL before the first */
};

static void write_thread(FILE *out, const struct thread_description *thread)
{
    fprintf(out, ", \"thread\": {\"tid\": %d, \"name\": ", (int)thread->tid);
    json_write_string(out, thread->name);
    fprintf(out, ", \"python_thread_state\": %s}", thread->has_python_state ? "true" : "false");
}

static void write_frame(const struct frame_info *frame, unsigned index, void *context)
{
    FILE *out = ((struct json_context *)context)->out;
    fputs(index ? ",\n        {" : "\n        {", out);
    fputs("\"function\": ", out);
    write_json_string_or_null(out, frame->function);
    fputs(", \"module\": ", out);
    write_json_string_or_null(out, frame->module);
    fprintf(out, ", \"offset\": \"0x%lx\", \"pc\": \"0x%lx\"", (unsigned long)frame->module_offset,
            (unsigned long)frame->pc);
    if (frame->file[0]) {
        fputs(", \"file\": ", out);
        json_write_string(out, frame->file);
        fprintf(out, ", \"line\": %d", frame->line);
    }
    fprintf(out, ", \"in_extension\": %s}", frame->in_extension ? "true" : "false");
}

static void write_stack(struct json_context *json, const char *key, stack_id stack)
{
    fprintf(json->out, ",\n     \"%s\": [", key);
    report_for_each_frame(stack, write_frame, json);
    fputc(']', json->out);
}

/* A construction slot of the type as a frame at its function's entry; null when unknown. */
static void write_slot(struct json_context *json, const char *key, uintptr_t address)
{
    static struct frame_info function; /* large; used only under LOCK_REPORT */
    fprintf(json->out, ", \"%s\": ", key);
    if (report_describe_function(address, &function))
        write_frame(&function, 0, json);
    else
        fputs("null", json->out);
}

static void write_type_fields(struct json_context *json, const struct finding *finding)
{
    FILE *out = json->out;
    fputs(", \"type\": ", out);
    json_write_string(out, finding->type_name);
    fputs(", \"binding\": ", out);
    json_write_string(out, binding_library_name(finding->type->binding));
    fputs(", \"fix\": ", out);
    json_write_string(out, fix_hint(finding->kind, finding->type->binding));
    write_stack(json, "type_stack", finding->type->created_at);
    write_slot(json, "tp_new", finding->type->tp_new);
    write_slot(json, "tp_init", finding->type->tp_init);
}

/* "python_stack": the Python frames of a site, innermost first ([] when unknown). */
static void write_python_stack(FILE *out, site_id site)
{
    const struct allocation_site *where = allocation_site_get(site);
    fputs(",\n     \"python_stack\": [", out);
    for (unsigned i = 0; where && i < where->python_depth; i++) {
        fputs(i ? ", {\"file\": " : "{\"file\": ", out);
        json_write_string(out, where->python[i].file);
        fputs(", \"function\": ", out);
        json_write_string(out, where->python[i].function);
        fprintf(out, ", \"line\": %d}", where->python[i].line);
    }
    fputc(']', out);
}

/*
 * "member": what debug info says holds the referent ({"path", "type", "file", "line",
 * "beyond", "by_name", "visit": the tp_traverse statement for it or null}), or null;
 * "member_unknown": why it is null ("no debug info" when building the module with -g would name it,
 * else "not found").
 */
static void write_member(FILE *out, const struct heap_referent *referent,
                         enum binding_library binding)
{
    const struct member_name *member = &referent->member;
    if (referent->naming != MEMBER_NAMED) {
        fprintf(out, ", \"member\": null, \"member_unknown\": \"%s\"",
                referent->naming == MEMBER_NO_DEBUG_INFO ? "no debug info" : "not found");
        return;
    }
    fputs(", \"member\": {\"path\": ", out);
    json_write_string(out, member->path);
    fputs(", \"type\": ", out);
    json_write_string(out, member->type);
    fputs(", \"file\": ", out);
    write_json_string_or_null(out, member->file);
    if (member->line)
        fprintf(out, ", \"line\": %d", member->line);
    else
        fputs(", \"line\": null", out);
    fprintf(out,
            ", \"beyond\": %s, \"by_name\": %s, \"visit\": ", member->beyond ? "true" : "false",
            member->by_name ? "true" : "false");
    char visit[320];
    bool has_visit =
        !referent->own_type && fix_hint_visit_member(binding, member, visit, sizeof visit);
    write_json_string_or_null(out, has_visit ? visit : "");
    fputc('}', out);
}

static void write_heap_fields(struct json_context *json, const struct finding *finding)
{
    FILE *out = json->out;
    const struct heap_details *heap = finding->heap;
    const struct allocation_site *site = allocation_site_get(heap->example_site);
    write_stack(json, "stack", site ? site->native : 0);
    write_python_stack(out, heap->example_site);
    if (finding->kind == FINDING_LEAKED_CYCLE) {
        fprintf(out, ",\n     \"objects\": %u, \"types\": {", heap->objects);
        for (unsigned i = 0; i < heap->type_count; i++) {
            fputs(i ? ", " : "", out);
            json_write_string(out, heap->types[i].name);
            fprintf(out, ": %u", heap->types[i].count);
        }
        fputs("}, \"chain\": ", out);
        write_json_string_or_null(out, heap->chain ? heap->chain : "");
        fputs(", \"dot\": ", out);
        write_json_string_or_null(out, heap->dot ? heap->dot : "");
        return;
    }
    fprintf(out, ",\n     \"instances\": %u, \"referents\": [", heap->instances);
    for (unsigned i = 0; i < heap->referent_count; i++) {
        fputs(i ? ", {\"type\": " : "{\"type\": ", out);
        json_write_string(out, heap->referents[i].type_name);
        unsigned offset;
        char rest;
        if (sscanf(heap->referents[i].path, "+%u%c", &offset, &rest) == 1)
            fprintf(out, ", \"offset\": %u", offset);
        fputs(", \"path\": ", out);
        json_write_string(out, heap->referents[i].path);
        fputs(", \"evidence\": ", out);
        json_write_string(out, heap->referents[i].evidence);
        fprintf(out, ", \"evidence_bytes\": %u, \"count\": %u, \"own_type\": %s",
                heap->referents[i].evidence_bytes, heap->referents[i].count,
                heap->referents[i].own_type ? "true" : "false");
        write_member(out, &heap->referents[i], finding->type->binding);
        fputc('}', out);
    }
    fprintf(out, "], \"missed_type_visit\": %s, \"inherited_traverse\": %s, \"cycle\": ",
            heap->missed_type_visit ? "true" : "false",
            heap->inherited_traverse ? "true" : "false");
    if (heap->chain) {
        fputs("{\"chain\": ", out);
        json_write_string(out, heap->chain);
        fprintf(out, ", \"never_collectable\": %s}", heap->never_collectable ? "true" : "false");
    } else {
        fputs("null", out);
    }
}

/* deadly-signal: what the signal was, the thread it hit, where (the stack starts at the fault). */
static void write_deadly_signal_fields(struct json_context *json, const struct finding *finding)
{
    FILE *out = json->out;
    fprintf(out, ", \"signal\": \"%s\", \"code\": %d, \"address\": \"0x%lx\"",
            signal_name(finding->signal), finding->signal_code,
            (unsigned long)finding->fault_address);
    write_thread(out, &finding->thread);
    write_stack(json, "stack", finding->stack);
    write_python_stack(out, finding->python_site);
}

static void write_finding(struct finding *finding, void *context)
{
    struct json_context *json = context;
    FILE *out = json->out;
    fputs(json->last ? ",\n    {" : "\n    {", out);
    json->last = finding;
    fputs("\"kind\": ", out);
    json_write_string(out, finding_kind_name(finding->kind));
    fputs(", \"count\": ", out);
    report_put_field(out, json->request, FIELD_COUNT, finding);
    if (finding->context) {
        fputs(", \"test\": ", out);
        json_write_string(out, finding->context);
    }
    if (finding->suppressed_by) {
        fputs(", \"suppressed\": ", out);
        json_write_string(out, finding->suppressed_by->text);
    }
    switch (finding->kind) {
    case FINDING_CAPSULE_WITHOUT_GIL:
    case FINDING_CALL_WITHOUT_GIL:
        fputs(", \"api\": ", out);
        json_write_string(out, finding->api);
        if (finding->kind == FINDING_CAPSULE_WITHOUT_GIL) {
            fputs(", \"capsule\": ", out);
            if (finding->has_capsule_name)
                json_write_string(out, finding->capsule);
            else
                fputs("null", out);
        }
        write_thread(out, &finding->thread);
        write_stack(json, "stack", finding->stack);
        write_python_stack(out, finding->python_site);
        break;
    case FINDING_TRAVERSE_MISSING_GC:
        write_type_fields(json, finding);
        write_stack(json, "stack", finding->stack);
        break;
    case FINDING_HIDDEN_REFERENCE:
    case FINDING_INCOMPLETE_TRAVERSE:
    case FINDING_LEAKED_CYCLE:
        write_type_fields(json, finding);
        write_heap_fields(json, finding);
        break;
    case FINDING_REFERENCE_LEAK:
        fputs(", \"type\": ", out);
        json_write_string(out, finding->type_name);
        fprintf(
            out, ", \"per_repetition\": %u, \"repetitions\": %u, \"unexplained_references\": %ld",
            finding->leaked_per_repetition, finding->repetitions, finding->unexplained_references);
        write_stack(json, "stack", finding->stack);
        write_python_stack(out, finding->python_site);
        break;
    case FINDING_DEADLY_SIGNAL:
        write_deadly_signal_fields(json, finding);
        break;
    }
    fputc('}', out);
}

/* With a suppressions file in force: its rules and how many findings each suppressed. */
static void write_suppressions(FILE *out)
{
    if (!suppressions_in_force())
        return;
    fputs(",\n \"suppressions\": [", out);
    for (unsigned i = 0; i < suppressions_rule_count(); i++) {
        const struct suppression_rule *rule = suppressions_rule(i);
        fputs(i ? ",\n    {\"rule\": " : "\n    {\"rule\": ", out);
        json_write_string(out, rule->text);
        fputs(", \"file\": ", out);
        json_write_string(out, suppressions_path());
        fprintf(out, ", \"line\": %u, \"used\": %lu}", rule->line, rule->used);
    }
    fputc(']', out);
}

static void write_json_report(FILE *out, const struct report_request *request)
{
    json_write_process_head(out, report_python_version());
    fprintf(out, ", \"checked\": true, \"complete\": %s", request->final ? "true" : "false");
    fputs(",\n \"signal\": ", out);
    report_put_field(out, request, FIELD_SIGNAL, NULL);
    fputs(", \"analysis\": ", out);
    report_put_field(out, request, FIELD_ANALYSIS, NULL);
    fputs(",\n \"findings\": [", out);
    struct json_context json = {.out = out, .request = request};
    findings_for_each(write_finding, &json);
    report_put_field(out, request, FIELD_MORE_FINDINGS, json.last);
    fputc(']', out);
    write_suppressions(out);
    fputs("}\n", out);
}

const struct report_writer json_report_writer = {.write = write_json_report};

void json_report_write_since(FILE *out, unsigned first)
{
    struct report_request request = {0};
    struct json_context json = {.out = out, .request = &request};
    fputc('[', out);
    findings_for_each_since(first, write_finding, &json);
    fputs("]\n", out);
}
