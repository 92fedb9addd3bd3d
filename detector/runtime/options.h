/* Runtime options: the struct generated from options.def, and its parser. */
#ifndef EXTSAN_OPTIONS_H
#define EXTSAN_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct extsan_options {
#define OPTION_BOOL(name, default_value, help)                  bool name;
#define OPTION_INT(name, default_value, minimum, maximum, help) int name;
#define OPTION_STRING(name, default_value, help)                const char *name;
#include "options.def"
#undef OPTION_BOOL
#undef OPTION_INT
#undef OPTION_STRING
};

/* The options in force in this process; set once by options_init() before any hook is live. */
extern struct extsan_options extsan_options;

enum options_format { OPTIONS_FORMAT_HELP, OPTIONS_FORMAT_TSV, OPTIONS_FORMAT_MARKDOWN };

void options_set_defaults(struct extsan_options *opts);

/*
 * Parses "name=value" items separated by ':' or white space (a value may be quoted with ' or ")
 * on top of what *opts holds. String values point into storage owned by the parser for the life
 * of the process. On error returns false and writes one line naming the item at fault into
 * error (without the "extsan: " prefix).
 */
bool options_parse(struct extsan_options *opts, const char *text, char *error, size_t error_size);

void options_print(FILE *out, enum options_format format);

#endif
