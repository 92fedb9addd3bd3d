/*
 * extsan-options: the options table for the `extsan` command and the README, so that the C
 * table is the only definition. Usage: extsan-options list|markdown|help|check TEXT
 */
#include "options.h"

#include <string.h>

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
        if (options_parse(&opts, argv[2], error, sizeof error))
            return 0;
        fprintf(stderr, "extsan: EXTSAN_OPTIONS: %s\n", error);
        return 1;
    }
    fprintf(stderr, "usage: extsan-options list|markdown|help|check TEXT\n");
    return 2;
}
