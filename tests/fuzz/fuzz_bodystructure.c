/*
 * fuzz_bodystructure.c — libFuzzer target: an untagged FETCH response with BODYSTRUCTURE, through
 * libetpan's IMAP parser, then mime_find_calendar_parts(). The entry point and its checks are in
 * fuzz_entry.h (shared with the regression replay in tests/unit/test_regressions.c).
 */
#include "fuzz_entry.h"

#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
const char *__lsan_default_suppressions(void);

/*
 * Leaks inside libetpan are its own (see FZ_LSAN_LIBETPAN_IMAP). Fuzzing
 * runs with ASan's fast unwinder, which stops at libetpan's first frame
 * (it is built without frame pointers), so the suppression has to name the
 * library; full unwinding would cost 15x the executions. The code under
 * test here, mime.c's BODYSTRUCTURE walker, allocates with malloc itself,
 * so its leaks are still reported; the exact suppression is checked by
 * tests/unit/test_regressions.c.
 */
const char *__lsan_default_suppressions(void)
{
    return "leak:libetpan.so\n";
}
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cal_global_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fz_bodystructure(data, size) != 0)
        abort(); /* a broken promise: libFuzzer saves the input as a crash */
    return 0;
}
