/*
 * The C API a test runner reaches with ctypes (activate.h), and the late start of a core loaded
 * into a running interpreter.
 */
#define _GNU_SOURCE
#include "activate.h"

#include "../detector/runtime/context.h"
#include "../detector/report/findings.h"
#include "../detector/threads/gil.h"
#include "../detector/heap/heap_analysis.h"
#include "../detector/heap/leak_check.h"
#include "../detector/runtime/log.h"
#include "../detector/runtime/options.h"
#include "../detector/heap/registry.h"
#include "../detector/report/report.h"
#include "../detector/report/suppressions.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXTSAN_API __attribute__((visibility("default")))

static bool started;           /* lifecycle_start succeeded: not dormant */
static bool caught_up;         /* the late start ran (or was not needed) */
static bool preloaded_in_time; /* started before the interpreter was initialized */

/*
 * Loaded into a running interpreter (ctypes), extsan missed everything before this moment. The
 * GOT patching, the capsule type's dealloc wrapper and the type slots were done by the
 * constructor like at any start; what preloading does later, at the first extension's dlopen,
 * is done here: the exit analysis is armed (its Python atexit callback registered), and the
 * types created so far are found and instrumented now rather than at exit, so that the
 * instances they get from now on are registered and forgotten like any others.
 */
static void catch_up(void)
{
    if (caught_up || preloaded_in_time || !python_is_running() || !gil_held())
        return;
    caught_up = true;
    heap_analysis_arm();
    if (extsan_options.track_instances)
        registry_walk_types(NULL);
    extsan_log(1, "activated in a running interpreter: extension types made so far are found by "
                  "the type walk; objects made so far are not registered");
}

void activate_after_start(void)
{
    started = true;
    preloaded_in_time = !python_api.is_initialized();
    catch_up();
}

EXTSAN_API int extsan_activate(void)
{
    if (!started)
        return 0;
    catch_up();
    return 1;
}

EXTSAN_API void extsan_set_context(const char *test_id)
{
    if (started)
        context_set(test_id);
}

EXTSAN_API unsigned extsan_findings_count(void)
{
    return started ? findings_count() : 0;
}

EXTSAN_API unsigned extsan_check_now(void)
{
    if (!started)
        return 0;
    heap_analysis_check_now();
    return findings_count();
}

/*
 * The reference-leak check around repetitions of the same work (leak_check.h): begin before the
 * warm-up, next before each measured repetition, end after the last, which returns the findings
 * it recorded, or cancel instead when a repetition failed. The caller holds the GIL
 * (ctypes.PyDLL).
 */
EXTSAN_API int extsan_leaks_begin(void)
{
    return started && gil_held() && leak_check_begin();
}

EXTSAN_API void extsan_leaks_next(void)
{
    if (started)
        leak_check_next();
}

EXTSAN_API unsigned extsan_leaks_end(void)
{
    return started ? leak_check_end() : 0;
}

EXTSAN_API void extsan_leaks_cancel(void)
{
    if (started)
        leak_check_cancel();
}

/* Why the last check reported nothing without looking (leak_check_skipped), or NULL. */
EXTSAN_API const char *extsan_leaks_skipped(void)
{
    return started ? leak_check_skipped() : NULL;
}

/* What `render` writes from the first-th finding on, into buffer as snprintf would. */
static size_t render_since(void (*render)(FILE *out, unsigned first), unsigned first, char *buffer,
                           size_t size)
{
    if (buffer && size)
        buffer[0] = '\0';
    if (!started)
        return 0;
    char *text = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&text, &length);
    if (!out)
        return 0;
    render(out, first);
    fclose(out);
    if (buffer && size) {
        size_t copied = length < size - 1 ? length : size - 1;
        memcpy(buffer, text, copied);
        buffer[copied] = '\0';
    }
    free(text);
    return length;
}

EXTSAN_API size_t extsan_findings_text(unsigned first, char *buffer, size_t size)
{
    return render_since(report_text_since, first, buffer, size);
}

EXTSAN_API size_t extsan_findings_json(unsigned first, char *buffer, size_t size)
{
    return render_since(report_json_since, first, buffer, size);
}

/* The first line of text (numbered from 1) that holds no rule of set; 0 when each holds one. */
static unsigned first_line_without_rule(const struct suppression_set *set, const char *text)
{
    unsigned lines = 1;
    for (const char *c = text; *c; c++)
        lines += *c == '\n';
    for (unsigned line = 1, next = 0; line <= lines; line++, next++)
        if (next >= set->count || set->rules[next].line != line)
            return line;
    return 0;
}

EXTSAN_API int extsan_match_rules(unsigned index, const char *source, const char *rules,
                                  char *error, size_t error_size)
{
    if (!rules || !*rules)
        return 0;
    FILE *in = fmemopen((void *)rules, strlen(rules), "r");
    if (!in) {
        snprintf(error, error_size, "%s: cannot read it: %s", source, strerror(errno));
        return -1;
    }
    struct suppression_set set;
    bool parsed = suppression_set_parse(&set, source, in, error, error_size);
    fclose(in);
    if (!parsed)
        return -1;
    int found = 0;
    unsigned empty = first_line_without_rule(&set, rules);
    if (empty) {
        snprintf(error, error_size, "%s:%u: an empty rule", source, empty);
        found = -1;
    } else if (started) {
        int rule = report_match_rules(index, &set);
        found = rule >= 0 ? (int)set.rules[rule].line : 0;
    }
    suppression_set_free(&set);
    return found;
}
