/*
 * test_regressions.c — every input that ever made a fuzz target fail
 * (tests/corpus/regressions/TARGET/), and the seed corpora
 * (tests/corpus/TARGET/), replayed through the fuzz entry points
 * (tests/fuzz/fuzz_entry.h) with the same checks, so each finding stays a
 * test of the normal suite. Each file runs in a child process: a crash
 * fails that file and names it. Under `make check-asan` the sanitizers
 * judge memory safety as they did while fuzzing. Run from the repository
 * root.
 */
#include "../fuzz/fuzz_entry.h"
#include "unit.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Full stacks for allocations, so that the libetpan leak is ignored exactly
 * (below mailimap_parse_response) and nothing else is; speed is no concern
 * here. Read only by sanitizer builds.
 */
const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);
const char *__asan_default_options(void)
{
    return "fast_unwind_on_malloc=0";
}
const char *__lsan_default_suppressions(void)
{
    return FZ_LSAN_LIBETPAN_IMAP;
}

struct target {
    const char *name;
    int (*entry)(const uint8_t *data, size_t size);
};

static const struct target targets[] = {
    {"bodystructure", fz_bodystructure},
    {"decode", fz_decode},
    {"ical", fz_ical},
    {"names", fz_names},
    {"config", fz_config},
    {"message", fz_message},
};

/* Exactly the file's size, no spare byte: an over-read shows under ASan as it does in libFuzzer. */
static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (fp == NULL)
        return NULL;
    if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 && fseek(fp, 0, SEEK_SET) == 0 &&
        (buf = malloc(n ? (size_t)n : 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, fp) == (size_t)n) {
            *len = (size_t)n;
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(fp);
    return buf;
}

/*
 * Replays one file in a child process, so that a crash (a segfault, an
 * ASan report, a leak found at the child's exit) fails this file only and
 * the rest still run; a child still busy after REPLAY_SECONDS is a hang.
 * Returns 0 when the entry point kept its promises and the child exited
 * cleanly.
 */
#define REPLAY_SECONDS 60
static int replay_file(const char *path, int (*entry)(const uint8_t *, size_t))
{
    int status;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        size_t len = 0;
        char *data = slurp(path, &len);
        alarm(REPLAY_SECONDS);
        int r = data ? entry((const uint8_t *)data, len) : -1;
        free(data);
        exit(r == 0 ? 0 : 1); /* exit(), not _exit(): LeakSanitizer checks here */
    }
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFSIGNALED(status))
        fprintf(stderr, "  replaying %s: killed by signal %d%s\n", path, WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (hung)" : "");
    else
        fprintf(stderr, "  replaying %s: exit status %d\n", path, WEXITSTATUS(status));
    return -1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Runs every regular file of dir through entry, in name order. Returns
 * the number of files, or -1 when dir cannot be read; failures are CHECKs.
 */
static int replay_dir(const char *dir, int (*entry)(const uint8_t *, size_t))
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0;
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **p = realloc(names, cap * sizeof *names);
            CHECK(p != NULL);
            if (p == NULL)
                break;
            names = p;
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof *names, by_name);
    int count = 0;
    for (size_t i = 0; i < n; i++) {
        char path[1024];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(names[i]);
            continue;
        }
        CHECK(replay_file(path, entry) == 0);
        count++;
        free(names[i]);
    }
    free(names);
    return count;
}

/* The seed corpus must be there; the regressions may not exist yet. */
static void replay_target(const char *name)
{
    const struct target *t = NULL;
    char dir[512];
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        if (strcmp(targets[i].name, name) == 0)
            t = &targets[i];
    CHECK(t != NULL);
    if (t == NULL)
        return;
    snprintf(dir, sizeof dir, "tests/corpus/%s", name);
    int seeds = replay_dir(dir, t->entry);
    if (seeds <= 0)
        fprintf(stderr, "  no seed inputs in %s (run from the repository root)\n", dir);
    CHECK(seeds > 0);
    snprintf(dir, sizeof dir, "tests/corpus/regressions/%s", name);
    replay_dir(dir, t->entry);
}

static void test_bodystructure_inputs_keep_their_promises(void)
{
    replay_target("bodystructure");
}

static void test_decode_inputs_keep_their_promises(void)
{
    replay_target("decode");
}

static void test_ical_inputs_keep_their_promises(void)
{
    replay_target("ical");
}

static void test_names_inputs_keep_their_promises(void)
{
    replay_target("names");
}

static void test_config_inputs_keep_their_promises(void)
{
    replay_target("config");
}

static void test_message_inputs_keep_their_promises(void)
{
    replay_target("message");
}

/* A reproducer filed under a name no target has would never be replayed. */
static void test_every_regression_directory_is_a_target(void)
{
    DIR *d = opendir("tests/corpus/regressions");
    struct dirent *de;
    CHECK(d != NULL);
    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        char path[512];
        struct stat st;
        snprintf(path, sizeof path, "tests/corpus/regressions/%s", de->d_name);
        if (de->d_name[0] == '.' || stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        int known = 0;
        for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
            known |= strcmp(targets[i].name, de->d_name) == 0;
        if (!known)
            fprintf(stderr, "  %s names no fuzz target\n", path);
        CHECK(known);
    }
    closedir(d);
}

int main(void)
{
    cal_global_init();
    RUN(test_bodystructure_inputs_keep_their_promises);
    RUN(test_decode_inputs_keep_their_promises);
    RUN(test_ical_inputs_keep_their_promises);
    RUN(test_names_inputs_keep_their_promises);
    RUN(test_config_inputs_keep_their_promises);
    RUN(test_message_inputs_keep_their_promises);
    RUN(test_every_regression_directory_is_a_target);
    return UNIT_DONE();
}
