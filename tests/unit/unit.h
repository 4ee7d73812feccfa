/*
 * unit.h — a minimal unit-test harness for the pure modules.
 * Each test is a function registered in main() with RUN(); CHECK() records a
 * failure with file:line and the expression, and the test goes on.
 * The closing line is "N passed, N failed" (counted per test function).
 */
#ifndef UNIT_H
#define UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_failures_in_test;
static int unit_passed, unit_failed;

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #expr);                      \
            unit_failures_in_test++;                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        const char *g_ = (got), *w_ = (want);                                                      \
        if (g_ == NULL || w_ == NULL || strcmp(g_, w_) != 0) {                                     \
            fprintf(stderr, "  FAIL %s:%d: %s is \"%s\", want \"%s\"\n", __FILE__, __LINE__, #got, \
                    g_ ? g_ : "(null)", w_ ? w_ : "(null)");                                       \
            unit_failures_in_test++;                                                               \
        }                                                                                          \
    } while (0)

#define RUN(test)                                                                                  \
    do {                                                                                           \
        unit_failures_in_test = 0;                                                                 \
        test();                                                                                    \
        if (unit_failures_in_test) {                                                               \
            unit_failed++;                                                                         \
            fprintf(stderr, "not ok %s\n", #test);                                                 \
        } else {                                                                                   \
            unit_passed++;                                                                         \
            printf("ok %s\n", #test);                                                              \
        }                                                                                          \
    } while (0)

#define UNIT_DONE()                                                                                \
    (printf("%d passed, %d failed\n", unit_passed, unit_failed), unit_failed ? 1 : 0)

#endif
