/* test_config.c — the config file parser (config.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "unit.h"

static const char sample[] = "# accounts\n"
                             "\n"
                             "[work]\n"
                             "source = imaps://alice@imap.example.org\n"
                             "passcmd = pass show mail/alice\n"
                             "mailboxes = Calendars.*:INBOX\n"
                             "components = VEVENT,VTODO\n"
                             "vdir = yes\n"
                             "idle = no\n"
                             "match = SUMMARY~standup\n"
                             "match = ORGANIZER~@example\\.org$\n"
                             "\n"
                             "[home]\n"
                             "source = imap://bob@mail.example.net\n"
                             "password = \"s3cret with spaces\"\n";

static int parse(const char *text, const char *want, struct config_account *a, char *err)
{
    return config_parse(text, strlen(text), "cfg", want, a, err, 256);
}

static void test_section_by_name_becomes_options(void)
{
    struct config_account a;
    char err[256] = "";

    CHECK(parse(sample, "work", &a, err) == 0);
    CHECK_STR(a.name, "work");
    CHECK_STR(a.source, "imaps://alice@imap.example.org");
    CHECK(a.password == NULL);
    CHECK_STR(a.options, "passcmd=pass show mail/alice,mailboxes=Calendars.*:INBOX,"
                         "components=VEVENT\\,VTODO,vdir,match=SUMMARY~standup,"
                         "match=ORGANIZER~@example\\\\.org$");
    config_account_free(&a);
}

static void test_section_found_by_source_and_quoted_password(void)
{
    struct config_account a;
    char err[256] = "";

    CHECK(parse(sample, "imap://bob@mail.example.net", &a, err) == 0);
    CHECK_STR(a.name, "home");
    CHECK_STR(a.password, "s3cret with spaces");
    CHECK_STR(a.options, "");
    config_account_free(&a);
}

static void test_name_beats_source(void)
{
    struct config_account a;
    char err[256] = "";
    const char text[] = "[x]\nsource = y\nttl = 1\n[y]\nttl = 2\n";

    CHECK(parse(text, "y", &a, err) == 0);
    CHECK_STR(a.name, "y");
    CHECK_STR(a.options, "ttl=2");
    config_account_free(&a);
}

static void test_missing_account_is_enoent(void)
{
    struct config_account a;
    char err[256] = "";

    CHECK(parse(sample, "nobody", &a, err) == -ENOENT);
    CHECK(a.name == NULL);
}

static void test_errors_name_file_and_line(void)
{
    struct config_account a;
    char err[256] = "";

    CHECK(parse("[a]\nttl = 5\nbogus = 1\n", "a", &a, err) == -EINVAL);
    CHECK_STR(err, "cfg:3: unknown setting 'bogus'");
    CHECK(parse("ttl = 5\n", "a", &a, err) == -EINVAL);
    CHECK_STR(err, "cfg:1: setting outside of any [account] section");
    CHECK(parse("[a]\nvdir = maybe\n", "a", &a, err) == -EINVAL);
    CHECK_STR(err, "cfg:2: vdir takes yes or no, not 'maybe'");
    CHECK(parse("[a\n", "a", &a, err) == -EINVAL);
    CHECK(parse("[a]\njust words\n", "a", &a, err) == -EINVAL);
    CHECK_STR(err, "cfg:2: expected key = value");
}

static void test_binary_garbage_is_an_error_not_a_crash(void)
{
    struct config_account a;
    char err[256] = "";
    const char junk[] = "[a]\n\x01\x02=\xff\xfe\n\0[b]\nttl=1\n";

    CHECK(config_parse(junk, sizeof junk - 1, "cfg", "b", &a, err, sizeof err) != 0);
}

static void test_world_readable_file_refused(void)
{
    char path[] = "/tmp/imapcalfs-cfg-XXXXXX", err[512] = "";
    struct config_account a;
    int fd = mkstemp(path);

    CHECK(fd >= 0);
    CHECK(write(fd, sample, strlen(sample)) == (ssize_t)strlen(sample));
    close(fd);
    chmod(path, 0644);
    CHECK(config_load(path, "work", &a, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "chmod 600") != NULL);
    chmod(path, 0600);
    CHECK(config_load(path, "work", &a, err, sizeof err) == 0);
    config_account_free(&a);
    unlink(path);
}

int main(void)
{
    RUN(test_section_by_name_becomes_options);
    RUN(test_section_found_by_source_and_quoted_password);
    RUN(test_name_beats_source);
    RUN(test_missing_account_is_enoent);
    RUN(test_errors_name_file_and_line);
    RUN(test_binary_garbage_is_an_error_not_a_crash);
    RUN(test_world_readable_file_refused);
    return UNIT_DONE();
}
