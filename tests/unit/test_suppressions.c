/*
 * Unit test of the suppressions module: glob matching, parsing, the choice of rule and the use
 * counts. Build (the suite does it with Meson as build/test-suppressions):
 *   gcc -std=c11 -Idetector/threads -Idetector/runtime -Idetector/heap -Idetector/report \
 *       detector/report/suppressions.c tests/unit/test_suppressions.c
 */
#define _GNU_SOURCE

#include "suppressions.h"

#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

/* Writes text to a fresh temporary file and loads it; error receives the message. */
static bool load_text(const char *text, char *error, size_t error_size)
{
    strcpy(path, "/tmp/extsan-suppressions-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        perror("temporary file");
        exit(2);
    }
    close(fd);
    error[0] = '\0';
    bool loaded = suppressions_load(path, error, error_size);
    unlink(path);
    return loaded;
}

static void test_glob(void)
{
    static const struct {
        const char *pattern, *name;
        bool matches;
    } cases[] = {
        {"abc", "abc", true},
        {"abc", "abcd", false}, /* whole names only */
        {"abc", "xabc", false},
        {"a*", "a", true},
        {"a*", "abc/def", true}, /* '*' crosses '/' */
        {"*", "", true},
        {"*.so", "libfoo.so", true},
        {"*.so", "libfoo.so.1", false},
        {"*.so*", "libfoo.so.1", true},
        {"nb_gc.*", "nb_gc.Container", true},
        {"nb_gc.*", "pb_gc.Container", false},
        {"a?c", "abc", true},
        {"a?c", "ac", false},
        {"*a*b*c*", "xxaxxbxxcxx", true},
        {"*a*b*c*", "xxaxxcxxbxx", false},
        {"*aab", "aaaab", true}, /* backtracking after a partial match */
        {"**x", "ax", true},
        {"ns::f*()", "ns::func()", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(suppression_glob_match(cases[i].pattern, cases[i].name) == cases[i].matches,
              "'%s' against '%s'", cases[i].pattern, cases[i].name);
}

static void test_parse(void)
{
    char error[512];
    CHECK(load_text("# only comments\n\n   \t\n  # indented\n", error, sizeof error), "%s", error);
    CHECK(suppressions_in_force() && suppressions_rule_count() == 0, "%u rules",
          suppressions_rule_count());

    CHECK(load_text("hidden-reference:nb_gc.*\n"
                    "  capsule-without-gil :  *worker*   # a trailing comment\n"
                    "*:lib#hash.so\n"
                    "leaked-cycle:ns::Type<int>\n",
                    error, sizeof error),
          "%s", error);
    CHECK(suppressions_rule_count() == 4, "%u rules", suppressions_rule_count());
    const struct suppression_rule *rule = suppressions_rule(1);
    CHECK(rule && !strcmp(rule->text, "capsule-without-gil:*worker*") && rule->line == 2 &&
              rule->kind == FINDING_CAPSULE_WITHOUT_GIL && !strcmp(rule->pattern, "*worker*"),
          "rule 2 is '%s' at line %u", rule ? rule->text : "?", rule ? rule->line : 0);
    rule = suppressions_rule(2);
    CHECK(rule && !strcmp(rule->text, "*:lib#hash.so") && rule->kind == SUPPRESSION_ANY_KIND,
          "a '#' inside a word is not a comment: '%s'", rule ? rule->text : "?");
    rule = suppressions_rule(3);
    CHECK(rule && !strcmp(rule->pattern, "ns::Type<int>"), "only the first ':' splits: '%s'",
          rule ? rule->pattern : "?");

    static const struct {
        const char *text, *message; /* message after "PATH:" */
    } bad[] = {
        {"\n# fine\nno colon here\n", "3: 'no colon here' is not kind:pattern (no ':')"},
        {"leak:malloc\n",
         "1: unknown kind 'leak' (capsule-without-gil, call-without-gil, hidden-reference, "
         "incomplete-traverse, leaked-cycle, traverse-missing-gc, reference-leak, deadly-signal or "
         "*)"},
        {"hidden-reference:\n", "1: empty pattern after 'hidden-reference:'"},
        {"hidden-reference:   # nothing\n", "1: empty pattern after 'hidden-reference:'"},
        {"hidden-reference:a\n:b\n",
         "2: no kind before ':' (capsule-without-gil, "
         "call-without-gil, hidden-reference, incomplete-traverse, leaked-cycle, "
         "traverse-missing-gc, reference-leak, deadly-signal or *)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(!load_text(bad[i].text, error, sizeof error), "'%s' was accepted", bad[i].text);
        char expected[512];
        snprintf(expected, sizeof expected, "%s:%s", path, bad[i].message);
        CHECK(!strcmp(error, expected), "error '%s', expected '%s'", error, expected);
        CHECK(!suppressions_in_force(), "a bad file leaves no rules in force");
    }

    CHECK(!suppressions_load("/nonexistent/extsan.supp", error, sizeof error), "loaded");
    CHECK(!strcmp(error, "/nonexistent/extsan.supp: cannot read it: No such file or directory"),
          "%s", error);
    CHECK(!suppressions_load("/tmp", error, sizeof error), "a directory loaded");
    CHECK(!strcmp(error, "/tmp: cannot read it: Is a directory"), "%s", error);
}

/* The rule a finding of kind with these names is suppressed by (counting its use), or NULL. */
static const struct suppression_rule *decide(enum finding_kind kind, const char *const *names)
{
    struct suppression_match match;
    suppression_match_begin(&match, suppressions_in_force_set(), kind);
    for (; *names; names++)
        if (suppression_match_offer(&match, *names))
            break;
    return suppression_match_end(&match);
}

static void test_match(void)
{
    char error[512];
    CHECK(load_text("hidden-reference:*helper*\n"
                    "*:gc_defects.c\n"
                    "hidden-reference:gc_defects.*\n"
                    "capsule-without-gil:PyCapsule_New\n",
                    error, sizeof error),
          "%s", error);
    const char *const holder[] = {"gc_defects.Holder", "alloc_instance", "gc_defects.c", NULL};
    const char *const helper[] = {"gc_defects.Holder", "call_helper", NULL};
    const char *const capsule[] = {"PyCapsule_GetPointer", "new_without_gil", NULL};
    const char *const capsule_new[] = {"PyCapsule_New", "gc_defects.c", NULL};
    const char *const none[] = {"other.Type", "main", NULL};

    const struct suppression_rule *rule = decide(FINDING_HIDDEN_REFERENCE, holder);
    CHECK(rule && rule->line == 2, "the first rule in file order that matches any name wins: %s",
          rule ? rule->text : "none");
    rule = decide(FINDING_HIDDEN_REFERENCE, helper);
    CHECK(rule && rule->line == 1, "%s", rule ? rule->text : "none");
    rule = decide(FINDING_CAPSULE_WITHOUT_GIL, capsule);
    CHECK(!rule, "a rule of another kind does not apply: %s", rule ? rule->text : "none");
    rule = decide(FINDING_CAPSULE_WITHOUT_GIL, capsule_new);
    CHECK(rule && rule->line == 2, "'*' applies to every kind: %s", rule ? rule->text : "none");
    rule = decide(FINDING_LEAKED_CYCLE, none);
    CHECK(!rule, "%s", rule ? rule->text : "none");

    unsigned long used[] = {1, 2, 0, 0};
    for (unsigned i = 0; i < 4; i++)
        CHECK(suppressions_rule(i)->used == used[i], "rule %u used %lu times, expected %lu", i + 1,
              suppressions_rule(i)->used, used[i]);
    CHECK(suppressions_used_total() == 3, "%lu", suppressions_used_total());
    suppressions_reset_after_fork();
    CHECK(suppressions_used_total() == 0, "%lu", suppressions_used_total());

    CHECK(load_text("hidden-reference:x\n", error, sizeof error), "%s", error);
    struct suppression_match match;
    CHECK(
        !suppression_match_begin(&match, suppressions_in_force_set(), FINDING_CAPSULE_WITHOUT_GIL),
        "no rule is about capsule-without-gil");
    CHECK(suppression_match_begin(&match, suppressions_in_force_set(), FINDING_HIDDEN_REFERENCE),
          "one rule is");
    CHECK(!suppression_match_offer(&match, "y") && suppression_match_offer(&match, "x"),
          "offer is done once the first candidate matched");
    CHECK(suppression_match_end(&match) == suppressions_rule(0), "the rule");
}

int main(void)
{
    test_glob();
    test_parse();
    test_match();
    return checks_summary();
}
