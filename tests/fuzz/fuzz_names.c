/*
 * fuzz_names.c — libFuzzer target: UIDs through name_for_uid() and mailbox names through
 * name_mailbox_decode() and name_safe_component(). The entry point and its checks are in
 * fuzz_entry.h (shared with the regression replay in tests/unit/test_regressions.c).
 */
#include "fuzz_entry.h"

#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
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
    if (fz_names(data, size) != 0)
        abort(); /* a broken promise: libFuzzer saves the input as a crash */
    return 0;
}
