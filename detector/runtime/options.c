/* EXTSAN_OPTIONS parsing and printing, driven by options.def. */
#define _GNU_SOURCE
#include "options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct extsan_options extsan_options;

enum option_type { OPTION_TYPE_BOOL, OPTION_TYPE_INT, OPTION_TYPE_STRING };

struct option_spec {
    const char *name;
    enum option_type type;
    const char *default_text; /* as a user would write it */
    int minimum, maximum;     /* OPTION_TYPE_INT only */
    const char *help;
    size_t offset; /* of the field in struct extsan_options */
};

#define STRINGIFY(x) #x
static const struct option_spec option_specs[] = {
#define OPTION_BOOL(name, default_value, help)                                                     \
    {#name,                                                                                        \
     OPTION_TYPE_BOOL,                                                                             \
     STRINGIFY(default_value),                                                                     \
     0,                                                                                            \
     0,                                                                                            \
     help,                                                                                         \
     offsetof(struct extsan_options, name)},
#define OPTION_INT(name, default_value, minimum, maximum, help)                                    \
    {#name,                                                                                        \
     OPTION_TYPE_INT,                                                                              \
     STRINGIFY(default_value),                                                                     \
     minimum,                                                                                      \
     maximum,                                                                                      \
     help,                                                                                         \
     offsetof(struct extsan_options, name)},
#define OPTION_STRING(name, default_value, help)                                                   \
    {#name, OPTION_TYPE_STRING, default_value, 0, 0, help, offsetof(struct extsan_options, name)},
#include "options.def"
#undef OPTION_BOOL
#undef OPTION_INT
#undef OPTION_STRING
};
#define OPTION_COUNT (sizeof option_specs / sizeof option_specs[0])

void options_set_defaults(struct extsan_options *opts)
{
#define OPTION_BOOL(name, default_value, help)                  opts->name = default_value;
#define OPTION_INT(name, default_value, minimum, maximum, help) opts->name = default_value;
#define OPTION_STRING(name, default_value, help)                opts->name = default_value;
#include "options.def"
#undef OPTION_BOOL
#undef OPTION_INT
#undef OPTION_STRING
}

static const struct option_spec *find_option(const char *name, size_t length)
{
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (strlen(option_specs[i].name) == length && !memcmp(option_specs[i].name, name, length))
            return &option_specs[i];
    return NULL;
}

static bool parse_bool(const char *text, bool *out)
{
    static const char *const truths[] = {"1", "true", "yes", "on"};
    static const char *const falsities[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcmp(text, truths[i]))
            return *out = true, true;
        if (!strcmp(text, falsities[i]))
            return *out = false, true;
    }
    return false;
}

static bool set_option(struct extsan_options *opts, const struct option_spec *spec, char *value,
                       char *error, size_t error_size)
{
    char *field = (char *)opts + spec->offset;
    switch (spec->type) {
    case OPTION_TYPE_BOOL:
        if (!parse_bool(value, (bool *)field)) {
            snprintf(error, error_size, "option %s: '%s' is not a boolean (use 0 or 1)", spec->name,
                     value);
            return false;
        }
        return true;
    case OPTION_TYPE_INT: {
        char *end;
        errno = 0;
        long number = strtol(value, &end, 10);
        if (errno || end == value || *end || number < spec->minimum || number > spec->maximum) {
            snprintf(error, error_size, "option %s: '%s' is not a whole number from %d to %d",
                     spec->name, value, spec->minimum, spec->maximum);
            return false;
        }
        *(int *)field = (int)number;
        return true;
    }
    case OPTION_TYPE_STRING:
        *(const char **)field = value; /* value lives in the parser's copy, never freed */
        return true;
    }
    return false;
}

bool options_parse(struct extsan_options *opts, const char *text, char *error, size_t error_size)
{
    /* One copy of the text holds every string value for the life of the process. */
    char *copy = strdup(text ? text : "");
    if (!copy) {
        snprintf(error, error_size, "out of memory reading options");
        return false;
    }
    char *cursor = copy;
    for (;;) {
        while (*cursor == ':' || *cursor == ' ' || *cursor == '\t' || *cursor == '\n')
            cursor++;
        if (!*cursor)
            return true;
        char *name = cursor;
        size_t name_length = strcspn(name, "=: \t\n");
        if (name[name_length] != '=') {
            snprintf(error, error_size,
                     "'%.*s' has no '=value' (items are name=value, separated by ':')",
                     (int)name_length, name);
            return false;
        }
        const struct option_spec *spec = find_option(name, name_length);
        if (!spec) {
            snprintf(error, error_size, "unknown option '%.*s' (help=1 lists them)",
                     (int)name_length, name);
            return false;
        }
        /* The value ends at the next unquoted separator; quotes are removed in place. */
        char *value = name + name_length + 1, *in = value, *out = value;
        char quote = 0;
        while (*in && (quote || !strchr(": \t\n", *in))) {
            if (!quote && (*in == '\'' || *in == '"'))
                quote = *in++;
            else if (quote && *in == quote)
                quote = 0, in++;
            else
                *out++ = *in++;
        }
        if (quote) {
            snprintf(error, error_size, "option %s: unterminated %c quote", spec->name, quote);
            return false;
        }
        cursor = *in ? in + 1 : in;
        *out = '\0';
        if (!set_option(opts, spec, value, error, error_size))
            return false;
    }
}

static const char *type_name(enum option_type type)
{
    return type == OPTION_TYPE_BOOL ? "bool" : type == OPTION_TYPE_INT ? "int" : "string";
}

void options_print(FILE *out, enum options_format format)
{
    if (format == OPTIONS_FORMAT_MARKDOWN)
        fprintf(out, "| option | type | default | meaning |\n| --- | --- | --- | --- |\n");
    if (format == OPTIONS_FORMAT_HELP)
        fprintf(out, "extsan options (EXTSAN_OPTIONS=name=value:name=value):\n");
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const struct option_spec *spec = &option_specs[i];
        switch (format) {
        case OPTIONS_FORMAT_TSV:
            if (spec->type == OPTION_TYPE_INT)
                fprintf(out, "%s\t%s\t%s\t%d\t%d\t%s\n", spec->name, type_name(spec->type),
                        spec->default_text, spec->minimum, spec->maximum, spec->help);
            else
                fprintf(out, "%s\t%s\t%s\t\t\t%s\n", spec->name, type_name(spec->type),
                        spec->default_text, spec->help);
            break;
        case OPTIONS_FORMAT_MARKDOWN:
            fprintf(out, "| `%s` | %s | `%s` | %s", spec->name, type_name(spec->type),
                    *spec->default_text ? spec->default_text : "\"\"", spec->help);
            if (spec->type == OPTION_TYPE_INT)
                fprintf(out, " (%d to %d)", spec->minimum, spec->maximum);
            fprintf(out, " |\n");
            break;
        case OPTIONS_FORMAT_HELP:
            fprintf(out, "  %-16s %-6s default %-6s %s\n", spec->name, type_name(spec->type),
                    *spec->default_text ? spec->default_text : "\"\"", spec->help);
            break;
        }
    }
}
