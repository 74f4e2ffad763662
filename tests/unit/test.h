/* test.h - a tiny unit-test harness: CHECK macros and a runner.
 *
 *   static void test_something(void) { CHECK(1 + 1 == 2); CHECK_STR(s, "abc"); }
 *   int main(void) { RUN_TEST(test_something); return TEST_SUMMARY(); }
 *
 * Each RUN_TEST prints "ok   name" or "FAIL name" (failed checks are reported on stderr with
 * file:line); TEST_SUMMARY prints "N passed, N failed" and yields the exit status (1 on failure).
 */
#ifndef LH_TEST_H
#define LH_TEST_H

#include <stdio.h>
#include <string.h>

static struct {
    int passed;
    int failed;
    int cur_failed; /* checks failed in the running test */
} test_state;

#define TEST_FAILED_(...)                                                                          \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        test_state.cur_failed++;                                                                   \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            TEST_FAILED_("CHECK(%s) failed", #cond);                                               \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a);                                                             \
        long long b_ = (long long)(b);                                                             \
        if (a_ != b_)                                                                              \
            TEST_FAILED_("CHECK_EQ_INT(%s, %s): %lld != %lld", #a, #b, a_, b_);                    \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a);                                                                      \
        const char *b_ = (b);                                                                      \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            TEST_FAILED_("CHECK_STR(%s, %s): \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",        \
                         b_ ? b_ : "(null)");                                                      \
    } while (0)

#define RUN_TEST(fn)                                                                               \
    do {                                                                                           \
        test_state.cur_failed = 0;                                                                 \
        fn();                                                                                      \
        if (test_state.cur_failed)                                                                 \
            test_state.failed++;                                                                   \
        else                                                                                       \
            test_state.passed++;                                                                   \
        printf("%s %s\n", test_state.cur_failed ? "FAIL" : "ok  ", #fn);                           \
        fflush(stdout);                                                                            \
    } while (0)

#define TEST_SUMMARY()                                                                             \
    (printf("%d passed, %d failed\n", test_state.passed, test_state.failed),                       \
     test_state.failed ? 1 : 0)

#endif
