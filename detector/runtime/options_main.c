/*
 * extsan-options: the options table for the `extsan` command and the README, so that the C
 * table is the only definition, and the runtime's own validation of options and suppressions
 * files, so that the command can refuse them before CMD starts.
 *
 *   extsan-options list|markdown|help
 *   extsan-options check TEXT                  EXTSAN_OPTIONS text, and the suppressions file
 *                                              it names, if any
 *   extsan-options check-suppressions FILE     a suppressions file
 *
 * check and check-suppressions exit 0, or EXTSAN_EXIT_BAD_OPTIONS (125) with one line on stderr
 * naming what is wrong: the status a process started with those options would stop with, and
 * that of every failure of extsan itself (README). Usage errors exit 2.
 */
#include "lifecycle.h"
#include "options.h"
#include "suppressions.h"

#include <string.h>

static int check_suppressions(const char *path)
{
    char error[1024];
    if (suppressions_load(path, error, sizeof error))
        return 0;
    fprintf(stderr, "extsan: %s\n", error);
    return EXTSAN_EXIT_BAD_OPTIONS;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "list"))
        return options_print(stdout, OPTIONS_FORMAT_TSV), 0;
    if (argc == 2 && !strcmp(argv[1], "markdown"))
        return options_print(stdout, OPTIONS_FORMAT_MARKDOWN), 0;
    if (argc == 2 && !strcmp(argv[1], "help"))
        return options_print(stdout, OPTIONS_FORMAT_HELP), 0;
    if (argc == 3 && !strcmp(argv[1], "check")) {
        struct extsan_options opts;
        char error[512];
        options_set_defaults(&opts);
        if (!options_parse(&opts, argv[2], error, sizeof error)) {
            fprintf(stderr, "extsan: EXTSAN_OPTIONS: %s\n", error);
            return EXTSAN_EXIT_BAD_OPTIONS;
        }
        return opts.suppressions && *opts.suppressions ? check_suppressions(opts.suppressions) : 0;
    }
    if (argc == 3 && !strcmp(argv[1], "check-suppressions"))
        return check_suppressions(argv[2]);
    fprintf(stderr,
            "usage: extsan-options list|markdown|help|check TEXT|check-suppressions FILE\n");
    return 2;
}
