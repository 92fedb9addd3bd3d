/*
 * The unit tests' harness: CHECK(condition, message format, ...) counts a check and prints the
 * failing ones; checks_summary() prints the "N passed, N failed" line the test runners read and
 * returns the exit status.
 */
#ifndef EXTSAN_UNIT_CHECK_H
#define EXTSAN_UNIT_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(condition, ...)                                                                      \
    do {                                                                                           \
        if (condition) {                                                                           \
            passed++;                                                                              \
        } else {                                                                                   \
            failed++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #condition);                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static inline int checks_summary(void)
{
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

#endif
