/*
 * Suppressions (option `suppressions`): a file of `kind:pattern` lines, LeakSanitizer style.
 *
 *   # a comment: a whole line, or from a '#' that follows white space
 *   hidden-reference:nb_gc.*
 *   capsule-without-gil:*legacy_worker*
 *   *:libthirdparty.so
 *
 * kind is a finding kind (finding_kind_name) or `*` for any. The pattern is a glob (`*` any run
 * of characters, `/` included; `?` one character; no escapes) that must match a whole name of
 * the finding: its type (module.Qualname), its capsule API and capsule name, and for every frame
 * of its stacks the function, the module path and its base name, the source file and its base
 * name (Python frames: file, its base name, function). A finding is suppressed by the first rule
 * of the file, in file order, whose kind fits and whose pattern matches one of its names.
 *
 * The same rules, parsed from text, are a pytest marker's `allow=` list: the plugin asks the
 * core whether one of them matches a finding (extsan_match_rules, shim/activate.h), so the file
 * format and the matching exist here only.
 *
 * This file knows names only, not findings: the report (report.c) offers a finding's names, once
 * its frames are symbolised. It needs nothing but libc, so the `extsan-options` tool validates
 * files with the runtime's own parser.
 */
#ifndef EXTSAN_SUPPRESSIONS_H
#define EXTSAN_SUPPRESSIONS_H

#include "findings.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct suppression_rule {
    int kind;         /* enum finding_kind, or SUPPRESSION_ANY_KIND */
    const char *text; /* "kind:pattern" as the file has it, trimmed */
    const char *pattern;
    unsigned line;      /* in the file, from 1 */
    unsigned long used; /* findings of this process it suppressed */
};

#define SUPPRESSION_ANY_KIND (-1)

/* Rules in file order, and where they were read from. */
struct suppression_set {
    struct suppression_rule *rules;
    unsigned count;
    char *source; /* the file's path as named, or what the text came from */
};

/*
 * Parses the rules of in (lines end at '\n') into *set, naming them after source. On error
 * leaves the set empty and writes one line into error, without the "extsan: " prefix:
 * "SOURCE: cannot read it: REASON" or "SOURCE:LINE: WHAT IS WRONG".
 */
bool suppression_set_parse(struct suppression_set *set, const char *source, FILE *in, char *error,
                           size_t error_size);
void suppression_set_free(struct suppression_set *set);

/*
 * Reads the suppressions file at path and makes its rules the ones in force (replacing any).
 * On error keeps none and writes one line into error, without the "extsan: " prefix:
 * "PATH: cannot read it: REASON" or "PATH:LINE: WHAT IS WRONG".
 */
bool suppressions_load(const char *path, char *error, size_t error_size);

/* True when a suppressions file is in force (even one without rules). */
bool suppressions_in_force(void);

/* The rules in force; NULL when no file is. */
struct suppression_set *suppressions_in_force_set(void);

/* The file in force, as it was named; NULL when none. */
const char *suppressions_path(void);

/* The rules in force, in file order. */
unsigned suppressions_rule_count(void);
const struct suppression_rule *suppressions_rule(unsigned index);

/* Findings suppressed so far in this process (the sum of the rules' `used`). */
unsigned long suppressions_used_total(void);

/*
 * Deciding one finding against a set: begin with its kind (false: no rule is about that kind,
 * so no name needs offering), offer each of its names (offer returns true once no further name
 * can change the outcome), then end, which counts the use of the rule found and returns it
 * (NULL: none matches). Not thread-safe: the report lock serialises callers.
 */
struct suppression_match {
    struct suppression_set *set;
    int kind;
    unsigned first_candidate; /* the first rule of the file that fits kind */
    unsigned found;           /* index + 1 of the best rule so far; 0 none */
};
bool suppression_match_begin(struct suppression_match *match, struct suppression_set *set,
                             enum finding_kind kind);
bool suppression_match_offer(struct suppression_match *match, const char *name);
const struct suppression_rule *suppression_match_end(struct suppression_match *match);

/* True when the glob pattern (`*`, `?`) matches the whole of name. */
bool suppression_glob_match(const char *pattern, const char *name);

/* In a forked child: the parent's uses are the parent's to report. */
void suppressions_reset_after_fork(void);

#endif
