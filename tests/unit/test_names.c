/*
 * test_names.c — event file names, modified UTF-7 mailbox names and safe
 * path components (names.h; SPEC §2 and §5).
 */
#include "names.h"
#include "unit.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* What every event file name must be, whatever the UID (names.h contract). */
static int name_is_safe(const char *n)
{
    size_t len = strlen(n);
    return len >= 5 && len <= 255 && memchr(n, '/', len) == NULL && n[0] != '.' &&
           strcmp(n + len - 4, ".ics") == 0 && strcmp(n, NAME_MERGED) != 0 &&
           strcmp(n, NAME_STATUS) != 0 && strcmp(n, NAME_REFRESH) != 0 &&
           strcmp(n, NAME_DISPLAYNAME) != 0 && strcmp(n, ".") != 0 && strcmp(n, "..") != 0;
}

/* name_for_uid() on a C string; the result is freed by the caller. */
static char *uid_name(const char *uid)
{
    return name_for_uid(uid, strlen(uid));
}

static void test_plain_uid_kept(void)
{
    const char *uids[] = {"040000008200E00074C5B7101A82E008", "abc-123_x.y@example.org", "a+b",
                          "-starts-with-dash", "M"};
    for (size_t i = 0; i < sizeof uids / sizeof uids[0]; i++) {
        char want[256];
        snprintf(want, sizeof want, "%s.ics", uids[i]);
        char *n = uid_name(uids[i]);
        CHECK_STR(n, want);
        free(n);
    }
    /* Exactly 200 bytes is still kept (SPEC §2). */
    char uid[201];
    memset(uid, 'x', 200);
    uid[200] = '\0';
    char *n = uid_name(uid);
    CHECK(n != NULL && strlen(n) == 204 && strncmp(n, uid, 200) == 0);
    free(n);
}

static void test_uid_with_slash_encoded(void)
{
    char *n = uid_name("a/b");
    CHECK_STR(n, "a%2Fb.ics");
    free(n);
    n = uid_name("../../etc/passwd");
    CHECK_STR(n, "%2E.%2F..%2Fetc%2Fpasswd.ics");
    CHECK(n && name_is_safe(n));
    free(n);
    n = uid_name("Meeting {1} äö");
    CHECK_STR(n, "Meeting%20%7B1%7D%20%C3%A4%C3%B6.ics");
    free(n);
    /* '%' itself is encoded, so "a%2Fb" and "a/b" stay apart. */
    n = uid_name("a%2Fb");
    CHECK_STR(n, "a%252Fb.ics");
    free(n);
    /* NUL inside a UID (length-delimited). */
    n = name_for_uid("a\0b", 3);
    CHECK_STR(n, "a%00b.ics");
    free(n);
}

static void test_long_uid_hashed_stable(void)
{
    char uid[600];
    memset(uid, 'u', sizeof uid);
    char *a = name_for_uid(uid, sizeof uid);
    char *b = name_for_uid(uid, sizeof uid);
    CHECK(a && b && strcmp(a, b) == 0);
    CHECK(a && name_is_safe(a) && strlen(a) <= 200);
    CHECK(a && strncmp(a, uid, 150) == 0 && strstr(a, "%%") == a + 150);
    /* One byte more or one byte different: another name. */
    char *c = name_for_uid(uid, sizeof uid - 1);
    uid[599] = 'v';
    char *d = name_for_uid(uid, sizeof uid);
    CHECK(a && c && d && strcmp(a, c) != 0 && strcmp(a, d) != 0 && strcmp(c, d) != 0);
    free(a);
    free(b);
    free(c);
    free(d);

    /* 201 plain bytes: just over the limit, hashed. */
    memset(uid, 'k', 201);
    a = name_for_uid(uid, 201);
    CHECK(a && strstr(a, "%%") != NULL && name_is_safe(a));
    free(a);

    /* A long UID of bytes that all need %XX: the prefix never cuts a %XX. */
    memset(uid, '/', 100);
    a = name_for_uid(uid, 100);
    CHECK(a && name_is_safe(a));
    const char *h = a ? strstr(a, "%%") : NULL;
    CHECK(h != NULL && (h - a) % 3 == 0 && h - a <= 150);
    free(a);

    /* The empty UID has a name too. */
    a = name_for_uid("", 0);
    CHECK(a && name_is_safe(a) && strncmp(a, "%%", 2) == 0);
    free(a);
}

static void test_leading_dot_encoded(void)
{
    char *n = uid_name(".status");
    CHECK_STR(n, "%2Estatus.ics");
    free(n);
    n = uid_name(".");
    CHECK_STR(n, "%2E.ics");
    free(n);
    n = uid_name("..");
    CHECK_STR(n, "%2E..ics");
    CHECK(n && name_is_safe(n));
    free(n);
    /* Only the leading dot: inner dots are plain. */
    n = uid_name(".a.b");
    CHECK_STR(n, "%2Ea.b.ics");
    free(n);
}

static void test_merged_uid_never_merged_ics(void)
{
    char *n = uid_name("merged");
    CHECK_STR(n, "%6Derged.ics");
    free(n);
    n = uid_name("displayname");
    CHECK_STR(n, "displayname.ics");
    free(n);
    n = uid_name("merged.ics");
    CHECK_STR(n, "merged.ics.ics");
    free(n);
    n = uid_name("%6Derged");
    CHECK_STR(n, "%256Derged.ics");
    free(n);
    n = uid_name("merge");
    CHECK_STR(n, "merge.ics");
    free(n);
}

/* xorshift: reproducible "random" UIDs without touching rand()'s state. */
static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* One generated UID and its name. */
struct uid_entry {
    char *uid;
    size_t len;
    char *name;
};

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const struct uid_entry *)a)->name, ((const struct uid_entry *)b)->name);
}

static void test_encoding_injective(void)
{
    /* An alphabet that provokes every branch: plain, escaped, '%', '.', NUL. */
    static const char alphabet[] = "a.%/-@+ \x01\xff\0mergd2F0E";
    enum { N = 20000 };
    struct uid_entry *e = calloc(N, sizeof *e);
    uint32_t seed = 0x12345678;
    int n = 0, unsafe = 0, collisions = 0;
    CHECK(e != NULL);
    for (; e != NULL && n < N; n++) {
        /* Mostly short UIDs (many near-misses), some long ones (the hash path). */
        size_t len = rng_next(&seed) % 8 == 0 ? 140 + rng_next(&seed) % 200 : rng_next(&seed) % 9;
        e[n].uid = malloc(len + 1);
        if (e[n].uid == NULL)
            break;
        for (size_t i = 0; i < len; i++)
            e[n].uid[i] = alphabet[rng_next(&seed) % (sizeof alphabet - 1)];
        e[n].len = len;
        e[n].name = name_for_uid(e[n].uid, len);
        if (e[n].name == NULL || !name_is_safe(e[n].name))
            unsafe++;
    }
    CHECK(n == N && unsafe == 0);
    if (n == N && unsafe == 0) {
        /* Sorted by name, equal names are neighbours and must have equal UIDs. */
        qsort(e, N, sizeof *e, cmp_entry_name);
        for (int i = 1; i < N; i++)
            if (strcmp(e[i - 1].name, e[i].name) == 0 &&
                (e[i - 1].len != e[i].len || memcmp(e[i - 1].uid, e[i].uid, e[i].len) != 0))
                collisions++;
    }
    CHECK(collisions == 0);
    for (int i = 0; e != NULL && i < N; i++) {
        free(e[i].uid);
        free(e[i].name);
    }
    free(e);
}

static void test_mutf7_umlaut(void)
{
    char *s = name_mailbox_decode("Kalender/&ANw-bersicht");
    CHECK_STR(s, "Kalender/Übersicht");
    free(s);
    /* Several characters in one run, and a non-BMP character (surrogate pair). */
    s = name_mailbox_decode("&ZeVnLIqe-");
    CHECK_STR(s, "日本語");
    free(s);
    s = name_mailbox_decode("Party &2DzfgA-");
    CHECK_STR(s, "Party 🎀");
    free(s);
    s = name_mailbox_decode("INBOX");
    CHECK_STR(s, "INBOX");
    free(s);
    s = name_mailbox_decode("");
    CHECK_STR(s, "");
    free(s);
}

static void test_mutf7_ampersand(void)
{
    char *s = name_mailbox_decode("Arbeit &- Privat");
    CHECK_STR(s, "Arbeit & Privat");
    free(s);
    s = name_mailbox_decode("&-&-&ANw-&-");
    CHECK_STR(s, "&&Ü&");
    free(s);
}

static void test_mutf7_invalid_rejected(void)
{
    const char *bad[] = {
        "Kalender/&ANw", /* unterminated shift */
        "&",             /* unterminated, empty */
        "&ANw_-",        /* '_' is not modified BASE64 */
        "&AN/-",         /* '/' is ',' in modified BASE64 */
        "&ANx-",         /* non-zero padding bits */
        "&ANwA-",        /* a whole useless extra character */
        "&A-",           /* fewer than 16 bits */
        "&AGE-",         /* 'a' must appear as itself */
        "&ACY-",         /* '&' must be "&-" */
        "&AC8-",         /* '/' encoded would smuggle a delimiter */
        "&AAA-",         /* NUL */
        "&2D0-",         /* lone high surrogate */
        "&3gA-",         /* lone low surrogate */
        "&3gDYPQ-",      /* reversed pair */
        "Caf\xc3\xa9",   /* raw 8-bit: not modified UTF-7 */
        "tab\there",     /* control byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *s = name_mailbox_decode(bad[i]);
        if (s != NULL)
            fprintf(stderr, "  accepted \"%s\" as \"%s\"\n", bad[i], s);
        CHECK(s == NULL);
        free(s);
    }
    CHECK(name_mailbox_decode(NULL) == NULL);
}

static void test_safe_component_dots(void)
{
    struct {
        const char *in, *want;
    } cases[] = {
        {"", "%00"},
        {".", "%2E"},
        {"..", "%2E."},
        {"...", "%2E.."},
        {".status", "%2Estatus"},
        {".refresh", "%2Erefresh"},
        {"a/b", "a%2Fb"},
        {"100%", "100%25"},
        {"tab\there", "tab%09here"},
        {"del\x7f", "del%7F"},
        {"merged.ics", "%6Derged.ics"},
        {"displayname", "%64isplayname"},
        {"Übersicht", "Übersicht"},
        {"v1.2", "v1.2"},
        {"Calendars", "Calendars"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = name_safe_component(cases[i].in);
        CHECK_STR(s, cases[i].want);
        free(s);
    }
    /* Too long for one directory entry: shortened, still unique. */
    char in[400];
    memset(in, '/', sizeof in - 1);
    in[sizeof in - 1] = '\0';
    char *a = name_safe_component(in);
    in[0] = '-';
    char *b = name_safe_component(in);
    CHECK(a && b && strlen(a) <= 255 && strlen(b) <= 255 && strcmp(a, b) != 0);
    CHECK(a && strchr(a, '/') == NULL && strstr(a, "%%") != NULL);
    free(a);
    free(b);
}

int main(void)
{
    RUN(test_plain_uid_kept);
    RUN(test_uid_with_slash_encoded);
    RUN(test_long_uid_hashed_stable);
    RUN(test_leading_dot_encoded);
    RUN(test_merged_uid_never_merged_ics);
    RUN(test_encoding_injective);
    RUN(test_mutf7_umlaut);
    RUN(test_mutf7_ampersand);
    RUN(test_mutf7_invalid_rejected);
    RUN(test_safe_component_dots);
    return UNIT_DONE();
}
