#define _GNU_SOURCE
#include "report.h"
#include "locks.h"

#include "log.h"
#include "options.h"
#include "heap_analysis.h"
#include "json_text.h"
#include "loaded_objects.h"
#include "report_file.h"
#include "python_api.h"
#include "report_frames.h"
#include "signals.h"
#include "suppressions.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void for_each_frame(stack_id stack, bool full,
                           void (*emit)(const struct frame_info *frame, unsigned index,
                                        void *context),
                           void *context)
{
    unsigned depth;
    const uintptr_t *pcs = stack_depot_get(stack, &depth);
    static struct frame_info frame; /* large; used only under LOCK_REPORT */
    for (unsigned i = 0; pcs && i < depth; i++) {
        if (!symbolize_pc(pcs[i], full, &frame)) {
            memset(&frame, 0, sizeof frame);
            frame.pc = pcs[i];
        }
        emit(&frame, i, context);
    }
}

void report_for_each_frame(stack_id stack,
                           void (*emit)(const struct frame_info *frame, unsigned index,
                                        void *context),
                           void *context)
{
    for_each_frame(stack, extsan_options.symbolize, emit, context);
}

void report_for_each_frame_module(stack_id stack,
                                  void (*emit)(const struct frame_info *frame, unsigned index,
                                               void *context),
                                  void *context)
{
    for_each_frame(stack, false, emit, context);
}

bool report_describe_function(uintptr_t address, struct frame_info *out)
{
    /* symbolize_pc looks up the call before a return address: one past the entry names it. */
    if (!address || !symbolize_pc(address + 1, extsan_options.symbolize, out))
        return false;
    out->pc = address;
    out->module_offset--;
    return true;
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

/* The first rule of set that matches one of the finding's names, NULL when none does. */
static const struct suppression_rule *first_matching_rule(const struct finding *finding,
                                                          struct suppression_set *set)
{
    struct suppression_offer offer;
    offer.done = !suppression_match_begin(&offer.match, set, finding->kind);
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
    return suppression_match_end(&offer.match);
}

static void decide_suppression(struct finding *finding, void *context)
{
    (void)context;
    if (finding->suppression_decided)
        return;
    finding->suppression_decided = true;
    finding->suppressed_by = first_matching_rule(finding, suppressions_in_force_set());
}

struct rules_query {
    struct suppression_set *set;
    const struct suppression_rule *found;
    bool visited;
};

static void match_first_visited(struct finding *finding, void *context)
{
    struct rules_query *query = context;
    if (!query->visited) {
        query->visited = true;
        query->found = first_matching_rule(finding, query->set);
    }
}

int report_match_rules(unsigned index, struct suppression_set *set)
{
    struct rules_query query = {set, NULL, false};
    lock_acquire(LOCK_REPORT);
    findings_for_each_since(index, match_first_visited, &query);
    lock_release(LOCK_REPORT);
    return query.found ? (int)(query.found - set->rules) : -1;
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

/* A writer's output in memory; NULL (with *length 0) when nothing could be rendered. */
static char *render(const struct report_writer *writer, const struct report_request *request,
                    size_t *length)
{
    char *buffer = NULL;
    *length = 0;
    FILE *out = open_memstream(&buffer, length);
    if (!out)
        return NULL;
    /* The text starts with a newline: the program's last output may not have ended its line
       (nanobind's leak message does not), and every report line must start with ==PID==. */
    if (writer == &text_report_writer)
        fputc('\n', out);
    writer->write(out, request);
    fclose(out);
    return buffer;
}

/* The text report goes out in one write(2), so it is never interleaved with other output. */
static void write_text(const struct report_request *request)
{
    if (!extsan_options.text_report)
        return;
    size_t length;
    char *text = render(&text_report_writer, request, &length);
    if (length > 1) /* only the newline: a clean process prints nothing at all */
        report_file_write_all(STDERR_FILENO, text, length);
    free(text);
}

/* log_dir/extsan.<pid>.json, replaced whole each time it is written. */
static void write_json(const struct report_request *request)
{
    char path[PATH_MAX];
    if (!report_file_json_path(path, sizeof path))
        return;
    size_t length;
    char *json = render(&json_report_writer, request, &length);
    if (json)
        report_file_replace(path, "log_dir", json, length);
    free(json);
}

/* Each leaked cycle as its own Graphviz file in dot_dir (written once, at exit). */
static void write_dot_file(struct finding *finding, void *context)
{
    unsigned *written = context;
    if (finding->kind != FINDING_LEAKED_CYCLE || !finding->heap || !finding->heap->dot)
        return;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/extsan.%d.cycle%u.dot", extsan_options.dot_dir, (int)getpid(),
             ++*written);
    report_file_replace(path, "dot_dir", finding->heap->dot, strlen(finding->heap->dot));
}

/* ---------------------------------------------------------------------------------------------
 * The snapshot a signal handler writes. Each time a finding is made, the JSON report is rendered
 * to memory with every field that may change before the process dies (report_field_kind) at a
 * fixed width, padded with blanks, and their places noted; the text blocks not printed yet are
 * rendered too. Both are published for the signal handler, which writes them with the fields
 * filled in using nothing but write(2): no allocation, no lock, no stdio.
 */

struct report_field {
    size_t offset;
    enum report_field_kind kind;
    const struct finding *finding;
};

struct report_fields {
    struct report_field *items;
    unsigned count, capacity;
};

struct snapshot {
    pid_t pid;
    char *json;
    size_t json_length;
    struct report_fields fields;
    char *text;
    size_t text_length;
    char path[PATH_MAX], temporary[PATH_MAX]; /* empty without log_dir */
};

/* Published with a release store; a replaced snapshot is never freed (a handler may read it). */
static struct snapshot *_Atomic published;

static const unsigned field_width[] = {
    [FIELD_COUNT] = 20, [FIELD_SIGNAL] = 12, [FIELD_ANALYSIS] = 72, [FIELD_MORE_FINDINGS] = 0};

/* Decimal digits of `value` into out; returns their number. Async-signal-safe. */
static size_t format_decimal(unsigned long value, char *out)
{
    char digits[24];
    size_t count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (size_t i = 0; i < count; i++)
        out[i] = digits[count - 1 - i];
    return count;
}

static size_t copy_text(char *out, size_t size, const char *text)
{
    size_t length = 0;
    while (text[length] && length < size)
        out[length] = text[length], length++;
    return length;
}

/*
 * The JSON value of a field now, into out (at least 80 bytes); returns its length. The
 * analysis' state is plain ASCII (heap_analysis.c). Async-signal-safe.
 */
static size_t field_value(enum report_field_kind kind, const struct finding *finding, int signal,
                          char *out)
{
    size_t length = 0;
    switch (kind) {
    case FIELD_COUNT:
        return format_decimal(finding->count, out);
    case FIELD_SIGNAL:
        if (!signal)
            return copy_text(out, 8, "null");
        out[length++] = '"';
        length += copy_text(out + length, 10, signal_name(signal));
        out[length++] = '"';
        return length;
    case FIELD_ANALYSIS:
        out[length++] = '"';
        length += copy_text(out + length, field_width[FIELD_ANALYSIS] - 2, heap_analysis_state());
        out[length++] = '"';
        return length;
    case FIELD_MORE_FINDINGS:
        break;
    }
    return 0;
}

void report_put_field(FILE *out, const struct report_request *request, enum report_field_kind kind,
                      const struct finding *finding)
{
    char value[80];
    size_t length = field_value(kind, finding, request->signal, value);
    fwrite(value, 1, length, out);
    struct report_fields *fields = request->fields;
    if (!fields)
        return;
    for (size_t pad = length; pad < field_width[kind]; pad++)
        fputc(' ', out);
    if (fields->count == fields->capacity) {
        unsigned capacity = fields->capacity ? 2 * fields->capacity : 16;
        struct report_field *grown = realloc(fields->items, capacity * sizeof *grown);
        if (!grown)
            return;
        fields->items = grown;
        fields->capacity = capacity;
    }
    /* The value's offset: where it started, before the padding. */
    fields->items[fields->count++] =
        (struct report_field){(size_t)ftell(out) - field_width[kind], kind, finding};
}

/* Renders and publishes a new snapshot; LOCK_REPORT held, suppressions decided. */
static struct snapshot *take_snapshot(void)
{
    struct snapshot *snapshot = calloc(1, sizeof *snapshot);
    if (!snapshot)
        return NULL;
    snapshot->pid = getpid();
    struct report_request json = {.fields = &snapshot->fields};
    snapshot->json = render(&json_report_writer, &json, &snapshot->json_length);
    struct report_request text = {.keep_marks = true};
    snapshot->text = render(&text_report_writer, &text, &snapshot->text_length);
    if (!snapshot->json || !snapshot->text || snapshot->fields.count == 0) {
        free(snapshot->json);
        free(snapshot->text);
        free(snapshot->fields.items);
        free(snapshot);
        return NULL;
    }
    if (!report_file_json_path(snapshot->path, sizeof snapshot->path) ||
        !report_file_temporary_path(snapshot->path, snapshot->temporary,
                                    sizeof snapshot->temporary))
        snapshot->path[0] = '\0';
    atomic_store_explicit(&published, snapshot, memory_order_release);
    return snapshot;
}

void report_snapshot(void)
{
    lock_acquire(LOCK_REPORT);
    decide_suppressions();
    struct snapshot *snapshot = take_snapshot();
    if (snapshot && snapshot->path[0])
        report_file_replace(snapshot->path, "log_dir", snapshot->json, snapshot->json_length);
    lock_release(LOCK_REPORT);
}

void report_reset_after_fork(void)
{
    atomic_store_explicit(&published, NULL, memory_order_relaxed);
}

/* ---- writing in a signal handler --------------------------------------------------------------
 * A small buffered writer on a file descriptor, and the JSON pieces the handler adds.
 */

struct safe_output {
    int fd;
    size_t used;
    bool failed;
    char buffer[2048];
};

static void safe_flush(struct safe_output *out)
{
    if (out->used && !report_file_write_all(out->fd, out->buffer, out->used))
        out->failed = true;
    out->used = 0;
}

static void safe_put(struct safe_output *out, const char *bytes, size_t length)
{
    if (length > sizeof out->buffer - out->used) {
        safe_flush(out);
        if (length > sizeof out->buffer) {
            out->failed |= !report_file_write_all(out->fd, bytes, length);
            return;
        }
    }
    for (size_t i = 0; i < length; i++)
        out->buffer[out->used++] = bytes[i];
}

static void safe_text(struct safe_output *out, const char *text)
{
    size_t length = 0;
    while (text[length])
        length++;
    safe_put(out, text, length);
}

static void safe_decimal(struct safe_output *out, unsigned long value)
{
    char digits[24];
    safe_put(out, digits, format_decimal(value, digits));
}

static void safe_hex(struct safe_output *out, uintptr_t value)
{
    char digits[2 + 2 * sizeof value];
    size_t count = 0;
    do {
        digits[sizeof digits - 1 - count++] = "0123456789abcdef"[value & 15];
        value >>= 4;
    } while (value);
    digits[sizeof digits - 1 - count++] = 'x';
    digits[sizeof digits - 1 - count++] = '0';
    safe_put(out, digits + sizeof digits - count, count);
}

static void put_safely(void *out, const char *bytes, size_t length)
{
    safe_put(out, bytes, length);
}

static void safe_json_string(struct safe_output *out, const char *text)
{
    safe_put(out, "\"", 1);
    json_escape_each(text, put_safely, out);
    safe_put(out, "\"", 1);
}

/* The deadly-signal finding of a crash, its frames named by loaded object and offset only. */
static void safe_crash_finding(struct safe_output *out, const struct crash *crash, bool first)
{
    safe_text(out, first ? "\n    {\"kind\": \"deadly-signal\", \"count\": 1, \"signal\": \""
                         : ",\n    {\"kind\": \"deadly-signal\", \"count\": 1, \"signal\": \"");
    safe_text(out, signal_name(crash->signal));
    safe_text(out, "\", \"code\": ");
    safe_decimal(out, (unsigned long)(unsigned)crash->code);
    safe_text(out, ", \"address\": \"");
    safe_hex(out, crash->address);
    safe_text(out, "\", \"thread\": {\"tid\": ");
    safe_decimal(out, (unsigned long)crash->thread.tid);
    safe_text(out, ", \"name\": ");
    safe_json_string(out, crash->thread.name);
    safe_text(out, crash->thread.has_python_state ? ", \"python_thread_state\": true}"
                                                  : ", \"python_thread_state\": false}");
    safe_text(out, ",\n     \"stack\": [");
    for (unsigned i = 0; i < crash->depth; i++) {
        const char *module;
        uintptr_t base;
        bool known = loaded_objects_find(crash->pcs[i], &module, &base);
        safe_text(out, i ? ",\n        {\"function\": null, \"module\": "
                         : "\n        {\"function\": null, \"module\": ");
        if (known)
            safe_json_string(out, module);
        else
            safe_text(out, "null");
        safe_text(out, ", \"offset\": \"");
        safe_hex(out, known ? crash->pcs[i] - base : 0);
        safe_text(out, "\", \"pc\": \"");
        safe_hex(out, crash->pcs[i]);
        safe_text(out, known && loaded_object_is_extension(module)
                           ? "\", \"in_extension\": true}"
                           : "\", \"in_extension\": false}");
    }
    safe_text(out, "], \"python_stack\": []}");
}

void report_snapshot_write_safely(int signal, const struct crash *crash)
{
    struct snapshot *snapshot = atomic_load_explicit(&published, memory_order_acquire);
    if (!snapshot || snapshot->pid != getpid() || !snapshot->path[0])
        return;
    struct safe_output out = {
        .fd =
            open(snapshot->temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644)};
    if (out.fd < 0)
        return;
    size_t done = 0;
    for (unsigned i = 0; i < snapshot->fields.count; i++) {
        const struct report_field *field = &snapshot->fields.items[i];
        safe_put(&out, snapshot->json + done, field->offset - done);
        done = field->offset + field_width[field->kind];
        char value[80];
        size_t length = field_value(field->kind, field->finding, signal, value);
        safe_put(&out, value, length);
        for (size_t pad = length; pad < field_width[field->kind]; pad++)
            safe_put(&out, " ", 1);
        if (field->kind == FIELD_MORE_FINDINGS && crash)
            safe_crash_finding(&out, crash, field->finding == NULL);
    }
    safe_put(&out, snapshot->json + done, snapshot->json_length - done);
    safe_flush(&out);
    bool written = !out.failed;
    written &= close(out.fd) == 0;
    if (!written || rename(snapshot->temporary, snapshot->path) != 0)
        unlink(snapshot->temporary);
}

/* report_at_death wrote its text: the snapshot's must not follow it. */
static volatile sig_atomic_t death_text_written;

void report_snapshot_text_safely(int signal, bool crash)
{
    struct snapshot *snapshot = atomic_load_explicit(&published, memory_order_acquire);
    if (!extsan_options.text_report || death_text_written)
        return;
    if (snapshot && snapshot->pid == getpid() && snapshot->text_length > 1)
        report_file_write_all(STDERR_FILENO, snapshot->text, snapshot->text_length);
    if (!crash)
        return;
    struct safe_output out = {.fd = STDERR_FILENO};
    safe_text(&out, "==");
    safe_decimal(&out, (unsigned long)getpid());
    safe_text(&out, "==extsan: deadly-signal: ");
    safe_text(&out, signal_name(signal));
    safe_text(&out,
              snapshot && snapshot->path[0]
                  ? "; the full report could not be written: its stack is in the JSON report\n"
                  : "; the full report could not be written\n");
    safe_flush(&out);
}

/* ---- the reports ------------------------------------------------------------------------------
 */

void report_now(void)
{
    struct report_request request = {0};
    lock_acquire(LOCK_REPORT);
    decide_suppressions();
    write_text(&request);
    write_json(&request);
    take_snapshot();
    lock_release(LOCK_REPORT);
}

static void count_unsuppressed(struct finding *finding, void *context)
{
    if (!finding->suppressed_by)
        ++*(unsigned *)context;
}

unsigned report_at_exit(void)
{
    struct report_request request = {.final = true};
    unsigned unsuppressed = 0;
    lock_acquire(LOCK_REPORT);
    decide_suppressions();
    findings_for_each(count_unsuppressed, &unsuppressed);
    write_text(&request);
    write_json(&request);
    if (extsan_options.dot_dir && *extsan_options.dot_dir) {
        unsigned written = 0;
        findings_for_each(write_dot_file, &written);
    }
    lock_release(LOCK_REPORT);
    return unsuppressed;
}

void report_at_death(int signal)
{
    lock_acquire(LOCK_REPORT);
    decide_suppressions();
    /* JSON first ("complete": false: the process did not end), then the text, its last step. */
    write_json(&(struct report_request){.signal = signal});
    write_text(&(struct report_request){.final = true, .signal = signal});
    death_text_written = true;
    lock_release(LOCK_REPORT);
}

void report_text_since(FILE *out, unsigned first)
{
    lock_acquire(LOCK_REPORT);
    decide_suppressions();
    text_report_write_since(out, first);
    lock_release(LOCK_REPORT);
}

void report_json_since(FILE *out, unsigned first)
{
    lock_acquire(LOCK_REPORT);
    decide_suppressions();
    json_report_write_since(out, first);
    lock_release(LOCK_REPORT);
}
