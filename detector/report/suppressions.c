/* Suppressions: the rule format, the rules in force, glob matching and use counts. */
#define _GNU_SOURCE
#include "suppressions.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNKNOWN_KIND (-2)

/* The rules in force: set once at start-up (lifecycle_start), before any finding exists. */
static struct suppression_set in_force;

/* ---------------------------------------------------------------------------------------------
 * Parsing
 */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* text[0..*length) without leading and trailing white space. */
static const char *trim(const char *text, size_t *length)
{
    while (*length && is_blank(*text))
        text++, (*length)--;
    while (*length && is_blank(text[*length - 1]))
        (*length)--;
    return text;
}

static int kind_by_name(const char *name, size_t length)
{
    if (length == 1 && *name == '*')
        return SUPPRESSION_ANY_KIND;
    for (int kind = 0; kind < FINDING_KIND_COUNT; kind++)
        if (strlen(finding_kind_name(kind)) == length &&
            !memcmp(finding_kind_name(kind), name, length))
            return kind;
    return UNKNOWN_KIND;
}

/* "capsule-without-gil, ..., deadly-signal or *": what a rule may name, for the errors. */
static const char *kind_list(void)
{
    static char list[256];
    if (!list[0]) {
        size_t used = 0;
        for (int kind = 0; kind < FINDING_KIND_COUNT; kind++)
            used += snprintf(list + used, sizeof list - used, "%s%s", kind ? ", " : "",
                             finding_kind_name(kind));
        snprintf(list + used, sizeof list - used, " or *");
    }
    return list;
}

/*
 * Parses one line into *rule. Returns false with the error for a malformed line; a blank or
 * comment line gives true and rule->text == NULL.
 */
static bool parse_line(const char *path, unsigned number, char *line, struct suppression_rule *rule,
                       char *error, size_t error_size)
{
    /* A comment runs from a '#' that starts the line or follows white space. */
    for (char *c = line; *c; c++)
        if (*c == '#' && (c == line || is_blank(c[-1]))) {
            *c = '\0';
            break;
        }
    size_t length = strlen(line);
    const char *text = trim(line, &length);
    rule->text = NULL;
    if (!length)
        return true;
    const char *colon = memchr(text, ':', length);
    if (!colon) {
        snprintf(error, error_size, "%s:%u: '%.*s' is not kind:pattern (no ':')", path, number,
                 length > 80 ? 80 : (int)length, text);
        return false;
    }
    size_t kind_length = colon - text, pattern_length = length - kind_length - 1;
    const char *kind = trim(text, &kind_length);
    const char *pattern = trim(colon + 1, &pattern_length);
    if (!kind_length) {
        snprintf(error, error_size, "%s:%u: no kind before ':' (%s)", path, number, kind_list());
        return false;
    }
    rule->kind = kind_by_name(kind, kind_length);
    if (rule->kind == UNKNOWN_KIND) {
        snprintf(error, error_size, "%s:%u: unknown kind '%.*s' (%s)", path, number,
                 kind_length > 80 ? 80 : (int)kind_length, kind, kind_list());
        return false;
    }
    if (!pattern_length) {
        snprintf(error, error_size, "%s:%u: empty pattern after '%.*s:'", path, number,
                 (int)kind_length, kind);
        return false;
    }
    char *stored = malloc(kind_length + 1 + pattern_length + 1);
    if (!stored) {
        snprintf(error, error_size, "%s:%u: out of memory", path, number);
        return false;
    }
    memcpy(stored, kind, kind_length);
    stored[kind_length] = ':';
    memcpy(stored + kind_length + 1, pattern, pattern_length);
    stored[kind_length + 1 + pattern_length] = '\0';
    rule->text = stored;
    rule->pattern = stored + kind_length + 1;
    rule->line = number;
    rule->used = 0;
    return true;
}

void suppression_set_free(struct suppression_set *set)
{
    for (unsigned i = 0; i < set->count; i++)
        free((char *)set->rules[i].text);
    free(set->rules);
    free(set->source);
    set->rules = NULL, set->count = 0, set->source = NULL;
}

bool suppression_set_parse(struct suppression_set *set, const char *source, FILE *in, char *error,
                           size_t error_size)
{
    set->rules = NULL, set->count = 0, set->source = NULL;
    unsigned capacity = 0, number = 0;
    char *line = NULL;
    size_t line_size = 0;
    bool ok = true;
    errno = 0;
    while (ok && getline(&line, &line_size, in) >= 0) {
        struct suppression_rule rule;
        if (!(ok = parse_line(source, ++number, line, &rule, error, error_size)) || !rule.text)
            continue;
        if (set->count == capacity) {
            unsigned grown = capacity ? 2 * capacity : 16;
            struct suppression_rule *bigger = realloc(set->rules, grown * sizeof *bigger);
            if (!bigger) {
                free((char *)rule.text);
                snprintf(error, error_size, "%s:%u: out of memory", source, number);
                ok = false;
                continue;
            }
            set->rules = bigger, capacity = grown;
        }
        set->rules[set->count++] = rule;
    }
    if (ok && ferror(in)) { /* a directory, an I/O error */
        snprintf(error, error_size, "%s: cannot read it: %s", source,
                 strerror(errno ? errno : EIO));
        ok = false;
    }
    free(line);
    if (ok && !(set->source = strdup(source))) {
        snprintf(error, error_size, "%s: out of memory", source);
        ok = false;
    }
    if (!ok)
        suppression_set_free(set);
    return ok;
}

bool suppressions_load(const char *path, char *error, size_t error_size)
{
    suppression_set_free(&in_force);
    FILE *file = fopen(path, "re");
    if (!file) {
        snprintf(error, error_size, "%s: cannot read it: %s", path, strerror(errno));
        return false;
    }
    bool ok = suppression_set_parse(&in_force, path, file, error, error_size);
    fclose(file);
    return ok;
}

bool suppressions_in_force(void)
{
    return in_force.source != NULL;
}

struct suppression_set *suppressions_in_force_set(void)
{
    return suppressions_in_force() ? &in_force : NULL;
}

const char *suppressions_path(void)
{
    return in_force.source;
}

unsigned suppressions_rule_count(void)
{
    return in_force.count;
}

const struct suppression_rule *suppressions_rule(unsigned index)
{
    return index < in_force.count ? &in_force.rules[index] : NULL;
}

unsigned long suppressions_used_total(void)
{
    unsigned long total = 0;
    for (unsigned i = 0; i < in_force.count; i++)
        total += in_force.rules[i].used;
    return total;
}

void suppressions_reset_after_fork(void)
{
    for (unsigned i = 0; i < in_force.count; i++)
        in_force.rules[i].used = 0;
}

/* ---------------------------------------------------------------------------------------------
 * Matching
 */

bool suppression_glob_match(const char *pattern, const char *name)
{
    /* Greedy, with one backtrack point (the last '*'): never exponential. */
    const char *star = NULL, *resume = NULL;
    while (*name) {
        if (*pattern == '*') {
            star = pattern++;
            resume = name;
        } else if (*pattern == '?' || *pattern == *name) {
            pattern++, name++;
        } else if (star) {
            pattern = star + 1;
            name = ++resume;
        } else {
            return false;
        }
    }
    while (*pattern == '*')
        pattern++;
    return !*pattern;
}

static bool fits(const struct suppression_rule *rule, int kind)
{
    return rule->kind == SUPPRESSION_ANY_KIND || rule->kind == kind;
}

bool suppression_match_begin(struct suppression_match *match, struct suppression_set *set,
                             enum finding_kind kind)
{
    match->set = set;
    match->kind = kind;
    match->found = 0;
    match->first_candidate = 0;
    while (match->first_candidate < set->count && !fits(&set->rules[match->first_candidate], kind))
        match->first_candidate++;
    return match->first_candidate < set->count;
}

bool suppression_match_offer(struct suppression_match *match, const char *name)
{
    const struct suppression_set *set = match->set;
    /* Only a rule before the one found so far can improve on it. */
    unsigned end = match->found ? match->found - 1 : set->count;
    for (unsigned i = match->first_candidate; *name && i < end; i++)
        if (fits(&set->rules[i], match->kind) &&
            suppression_glob_match(set->rules[i].pattern, name)) {
            match->found = i + 1;
            break;
        }
    return match->first_candidate == set->count ||
           (match->found && match->found - 1 == match->first_candidate);
}

const struct suppression_rule *suppression_match_end(struct suppression_match *match)
{
    if (!match->found)
        return NULL;
    struct suppression_rule *rule = &match->set->rules[match->found - 1];
    rule->used++;
    return rule;
}
