/*
 * fuzz_entry.h — the fuzz entry points: one function per target, taking
 * the raw input bytes, driving the modules the way the daemon does and
 * checking what they promise (fuzz_check.h). Returns 0, or -1 when a
 * promise is broken (one line on stderr says which). Memory errors, leaks
 * and undefined behaviour are the sanitizers' to report. The MIME targets
 * are in fuzz_mime.h; calendars, names and the config file here.
 *
 * Shared by the libFuzzer targets (tests/fuzz/fuzz_*.c) and by
 * tests/unit/test_regressions.c, which replays the seed corpora and every
 * crash ever found (tests/corpus/regressions/) through these same calls.
 * Input formats are described in tests/fuzz/README.
 */
#ifndef FUZZ_ENTRY_H
#define FUZZ_ENTRY_H

#include "cal.h"
#include "config.h"
#include "fuzz_check.h"
#include "fuzz_mime.h"
#include "names.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ===== (3) iCalendar: parse several parts, merge, render ===== */

/* Three messages in two mailboxes; the fourth part goes to the third message. */
static const struct {
    const char *mailbox;
    uint32_t uid;
    int64_t date;
} fz_msgs[3] = {
    {"INBOX", 10, 1767225600},
    {"Calendars/Work", 3, 1767225600},
    {"INBOX", 11, 1767229200},
};

/* The filters a mount may run with: default; everything + privacy; window + match. */
static inline const struct cal_filter *fz_filter(unsigned which)
{
    static struct cal_filter all, window;
    static int built;
    if (!built) {
        char err[256];
        all.kinds = CAL_VEVENT | CAL_VTODO | CAL_VJOURNAL;
        all.privacy_busy = 1;
        window.kinds = CAL_VEVENT | CAL_VTODO;
        if (cal_parse_date("2026-01-01", &window.after) != 0 ||
            cal_parse_date("2027-01-01T00:00:00Z", &window.before) != 0 ||
            cal_filter_add_match(&window, "SUMMARY~[a-m]", err, sizeof err) != 0) {
            fprintf(stderr, "fuzz: ical: cannot build the filters\n");
            abort(); /* a harness bug, not a finding */
        }
        window.has_after = window.has_before = 1;
        built = 1;
    }
    return which == 0 ? NULL : which == 1 ? &all : &window;
}

/* Same bytes, however the two ropes are cut. */
static inline int fz_same_rope(const struct cal_rope *a, const struct cal_rope *b)
{
    char *x = cal_rope_flatten(a), *y = cal_rope_flatten(b);
    int same = x && y && a->len == b->len && memcmp(x, y, a->len) == 0;
    if (!x || !y) {
        fprintf(stderr, "fuzz: ical: out of memory\n");
        abort();
    }
    free(x);
    free(y);
    return same;
}

static inline int fz_same_result(const struct cal_result *a, const struct cal_result *b)
{
    if (a->nevents != b->nevents || a->merged_mtime != b->merged_mtime ||
        !fz_same_rope(&a->merged, &b->merged))
        return 0;
    for (size_t i = 0; i < a->nevents; i++) {
        const struct cal_event_file *x = &a->events[i], *y = &b->events[i];
        if (strcmp(x->uid, y->uid) != 0 || x->mtime != y->mtime ||
            !fz_same_rope(&x->bytes, &y->bytes))
            return 0;
    }
    return 1;
}

/* The rope's segments (none empty, adding up to its length) flattened. */
static inline int fz_check_rope(const char *what, const struct cal_rope *r)
{
    size_t sum = 0;
    for (size_t i = 0; i < r->nseg; i++) {
        if (r->seg[i].iov_len == 0)
            return fz_fail("ical", "%s has an empty segment", what);
        sum += r->seg[i].iov_len;
    }
    if (sum != r->len)
        return fz_fail("ical", "%s: segments of %zu bytes, length %zu", what, sum, r->len);
    char *flat = cal_rope_flatten(r);
    if (!flat) {
        fprintf(stderr, "fuzz: ical: out of memory\n");
        abort();
    }
    int rc = fz_check_vcalendar("ical", what, flat, r->len);
    free(flat);
    return rc;
}

static inline int fz_check_result(const struct cal_result *res)
{
    char what[64];
    if (fz_check_rope("merged.ics", &res->merged) < 0)
        return -1;
    for (size_t i = 0; i < res->nevents; i++) {
        const struct cal_event_file *e = &res->events[i];
        snprintf(what, sizeof what, "event file %zu", i);
        if (e->uid == NULL)
            return fz_fail("ical", "%s has no UID", what);
        if (i > 0 && strcmp(res->events[i - 1].uid, e->uid) >= 0)
            return fz_fail("ical", "event files not sorted by UID at %zu", i);
        if (fz_check_rope(what, &e->bytes) < 0)
            return -1;
        if (e->mtime > res->merged_mtime)
            return fz_fail("ical", "%s is newer than merged.ics", what);
        char *name = name_for_uid(e->uid, strlen(e->uid));
        int bad = fz_check_component("ical", "event file name", name);
        free(name);
        if (bad)
            return -1;
    }
    return 0;
}

/*
 * Input: up to four calendar parts separated by NUL bytes (decoded parts
 * never hold NUL, so the separator cannot clash; a fourth part keeps any
 * further NULs). The input length mod 3 picks the filter. Besides the
 * format of every file: the result does not depend on the order of the
 * messages, and merged.ics parses again.
 */
static inline int fz_ical(const uint8_t *data, size_t size)
{
    const struct cal_filter *f = fz_filter((unsigned)(size % 3));
    struct cal_versions *msgs[3] = {0}, *rev[3], *back = NULL;
    struct cal_result r1 = {0}, r2 = {0};
    struct cal_stats st = {0};
    char err[256], url[160], *flat = NULL;
    int rc = -1, r;

    for (size_t i = 0; i < 3; i++) {
        snprintf(url, sizeof url, "imap://alice@imap.example.org/%s;UIDVALIDITY=7/;UID=%u",
                 fz_msgs[i].mailbox, (unsigned)fz_msgs[i].uid);
        struct cal_origin o = {fz_msgs[i].mailbox, fz_msgs[i].uid, fz_msgs[i].date, url};
        if ((msgs[i] = cal_versions_new(&o)) == NULL) {
            fz_fail("ical", "out of memory");
            goto out;
        }
    }
    const char *p = (const char *)data, *end = p + size;
    for (int part = 0; part < 4 && p <= end; part++) {
        const char *nul = part < 3 ? memchr(p, '\0', (size_t)(end - p)) : NULL;
        size_t len = (size_t)((nul ? nul : end) - p);
        err[0] = '\0';
        r = cal_versions_add_part(msgs[part < 3 ? part : 2], p, len, f, &st, err, sizeof err);
        if (r < 0 && r != -EINVAL) {
            fz_fail("ical", "cal_versions_add_part returned %d", r);
            goto out;
        }
        if (r == -EINVAL && err[0] == '\0') {
            fz_fail("ical", "-EINVAL without a reason");
            goto out;
        }
        if (nul == NULL)
            break;
        p = nul + 1;
    }

    if ((r = cal_resolve(msgs, 3, f, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r1)) != 0) {
        fz_fail("ical", "cal_resolve returned %d", r);
        goto out;
    }
    rev[0] = msgs[2], rev[1] = msgs[1], rev[2] = msgs[0];
    if ((r = cal_resolve(rev, 3, f, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r2)) != 0) {
        fz_fail("ical", "cal_resolve (reversed) returned %d", r);
        goto out;
    }
    /* The ropes point into the versions and hold them: they outlive the
     * caller's references (ASan sees a rope that does not). */
    for (size_t i = 0; i < 3; i++) {
        cal_versions_free(msgs[i]);
        msgs[i] = NULL;
    }
    if (fz_check_result(&r1) < 0)
        goto out;
    if (!fz_same_result(&r1, &r2)) {
        fz_fail("ical", "the result depends on the order of the messages");
        goto out;
    }

    /* What a reader of merged.ics gets must parse again (SPEC §3, issue 7). */
    struct cal_origin o = {"Other", 1, 0,
                           "imap://alice@imap.example.org/Other;UIDVALIDITY=1/;UID=1"};
    if ((back = cal_versions_new(&o)) == NULL) {
        fz_fail("ical", "out of memory");
        goto out;
    }
    err[0] = '\0';
    if ((flat = cal_rope_flatten(&r1.merged)) == NULL) {
        fz_fail("ical", "out of memory");
        goto out;
    }
    r = cal_versions_add_part(back, flat, r1.merged.len, f, &st, err, sizeof err);
    if (r < 0) {
        fz_fail("ical", "merged.ics does not parse again: %d %s", r, err);
        goto out;
    }
    rc = 0;
out:
    free(flat);
    cal_result_free(&r1);
    cal_result_free(&r2);
    cal_versions_free(back);
    for (size_t i = 0; i < 3; i++)
        cal_versions_free(msgs[i]);
    return rc;
}

/* ===== (4) names from mail: event file names, mailbox directories ===== */

static inline int fz_uid_plain(const uint8_t *u, size_t n)
{
    if (n == 0 || n > 200 || u[0] == '.' || (n == 6 && memcmp(u, "merged", 6) == 0))
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = u[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '@' || c == '+'))
            return 0;
    }
    return 1;
}

/* One event file name: safe, ".ics", stable, and different from its neighbour's. */
static inline int fz_check_uid_name(const uint8_t *uid, size_t n)
{
    char *a = name_for_uid((const char *)uid, n), *b = name_for_uid((const char *)uid, n);
    char *shorter = n ? name_for_uid((const char *)uid, n - 1) : NULL;
    int rc = -1;
    if (fz_check_component("names", "event file name", a) < 0)
        goto out;
    size_t len = strlen(a);
    if (len < 5 || strcmp(a + len - 4, ".ics") != 0) {
        fz_fail("names", "event file name \"%s\" does not end in .ics", a);
        goto out;
    }
    if (b == NULL || strcmp(a, b) != 0) {
        fz_fail("names", "the name of one UID changes between calls");
        goto out;
    }
    if (fz_uid_plain(uid, n) ? len != n + 4 || memcmp(a, uid, n) != 0 : strchr(a, '%') == NULL) {
        fz_fail("names", "\"%s\" breaks the kept-or-encoded rule of SPEC §2", a);
        goto out;
    }
    if (n && (shorter == NULL || strcmp(a, shorter) == 0)) {
        fz_fail("names", "two UIDs share the file name \"%s\"", a);
        goto out;
    }
    rc = 0;
out:
    free(a);
    free(b);
    free(shorter);
    return rc;
}

/* One directory name from a piece of a mailbox name: safe and injective. */
static inline int fz_check_piece(const char *piece)
{
    char *a = name_safe_component(piece);
    int rc = fz_check_component("names", "directory name", a);
    size_t n = strlen(piece);
    if (rc == 0 && n > 0) {
        char *cut = strndup(piece, n - 1), *b = cut ? name_safe_component(cut) : NULL;
        if (b == NULL || strcmp(a, b) == 0)
            rc = fz_fail("names", "two mailbox names share the directory \"%s\"", a);
        free(b);
        free(cut);
    }
    free(a);
    return rc;
}

/*
 * Input: the bytes are a UID (any byte, NUL included) and, up to the first
 * NUL, a mailbox name in modified UTF-7, split at '/' and '.' (the usual
 * hierarchy delimiters) into directory names.
 */
static inline int fz_names(const uint8_t *data, size_t size)
{
    int rc = fz_check_uid_name(data, size);
    if (rc < 0)
        return rc;

    char *raw = strndup((const char *)data, size);
    if (raw == NULL)
        return fz_fail("names", "out of memory in the harness");
    char *dec = name_mailbox_decode(raw);
    if (dec != NULL) {
        if (!fz_utf8_valid(dec, strlen(dec)))
            rc = fz_fail("names", "decoded mailbox name is not UTF-8");
        int plain = 1;
        for (const char *q = raw; *q; q++)
            plain &= *q >= 0x20 && *q < 0x7F && *q != '&';
        if (rc == 0 && plain && strcmp(dec, raw) != 0)
            rc = fz_fail("names", "a plain ASCII mailbox name changed in decoding");
    }
    for (int d = 0; d < 2 && rc == 0; d++) {
        const char *delim = d ? "." : "/";
        char *copy = strdup(dec ? dec : raw);
        if (copy == NULL) {
            rc = fz_fail("names", "out of memory in the harness");
            break;
        }
        /* Pieces between delimiters, empty ones included. */
        char *piece = copy;
        for (;;) {
            char *next = strpbrk(piece, delim);
            if (next)
                *next = '\0';
            if ((rc = fz_check_piece(piece)) < 0 || next == NULL)
                break;
            piece = next + 1;
        }
        free(copy);
    }
    if (rc == 0)
        rc = fz_check_piece(raw);
    free(dec);
    free(raw);
    return rc;
}

/* ===== (5) the config file ===== */

/* The keys config.h lets into the option string (SPEC §1 option names). */
static inline int fz_config_key(const char *k, size_t n, int *flag)
{
    static const char *const values[] = {
        "user",      "port",    "mailboxes",   "passfile", "passcmd", "tls",    "cafile", "capath",
        "cache_dir", "ttl",     "components",  "search",   "after",   "before", "match",  "privacy",
        "auth",      "timeout", "connections", "uid",      "gid",     "umask",
    };
    static const char *const flags[] = {
        "no_disk_cache", "idle", "vdir", "allow_other", "default_permissions",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        if (strlen(values[i]) == n && memcmp(values[i], k, n) == 0)
            return *flag = 0, 1;
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (strlen(flags[i]) == n && memcmp(flags[i], k, n) == 0)
            return *flag = 1, 1;
    return 0;
}

/*
 * The option text splits (at commas not escaped with '\', libfuse's rule)
 * into known keys only: no value can smuggle in another option, and the
 * password never travels as an option.
 */
static inline int fz_check_options(const char *opts)
{
    const char *p = opts;
    while (*p) {
        const char *start = p, *eq = NULL;
        while (*p && *p != ',') {
            if (*p == '\\') {
                if (p[1] != ',' && p[1] != '\\')
                    return fz_fail("config", "stray escape in \"%s\"", opts);
                p++;
            } else if (*p == '=' && eq == NULL) {
                eq = p;
            }
            p++;
        }
        int flag;
        size_t klen = (size_t)((eq ? eq : p) - start);
        if (!fz_config_key(start, klen, &flag))
            return fz_fail("config", "unknown option \"%.*s\" in \"%s\"", (int)klen, start, opts);
        if (flag != (eq == NULL) || (eq && eq + 1 == p))
            return fz_fail("config", "option \"%.*s\" has the wrong form", (int)(p - start), start);
        if (*p == ',') {
            p++;
            if (*p == '\0')
                return fz_fail("config", "trailing comma in \"%s\"", opts);
        }
    }
    return 0;
}

static inline int fz_config_one(const uint8_t *data, size_t size, const char *want)
{
    struct config_account a;
    char err[256];
    memset(err, 'x', sizeof err);
    int r = config_parse((const char *)data, size, "fuzz.conf", want, &a, err, sizeof err);
    int rc = 0;
    if (r == -EINVAL) {
        if (strnlen(err, sizeof err) == sizeof err || strncmp(err, "fuzz.conf:", 10) != 0)
            rc = fz_fail("config", "-EINVAL without a \"path:line: reason\" message");
    } else if (r == -ENOENT) {
        if (a.name || a.source || a.password || a.options)
            rc = fz_fail("config", "-ENOENT but an account was returned");
    } else if (r != 0) {
        rc = fz_fail("config", "config_parse returned %d", r);
    } else if (a.name == NULL || a.options == NULL) {
        rc = fz_fail("config", "an account without a name or options");
    } else if (strcmp(a.name, want) != 0 && (a.source == NULL || strcmp(a.source, want) != 0)) {
        rc = fz_fail("config", "account \"%s\" returned for \"%s\"", a.name, want);
    } else {
        rc = fz_check_options(a.options);
    }
    if (r == 0)
        config_account_free(&a);
    return rc;
}

/*
 * Input: a config file. It is read for a fixed account name, a fixed
 * source, and the name of the first section it holds.
 */
static inline int fz_config(const uint8_t *data, size_t size)
{
    char first[128] = "";
    const uint8_t *open = memchr(data, '[', size);
    if (open) {
        size_t i = 0;
        for (const uint8_t *q = open + 1;
             q < data + size && *q != ']' && *q != '\n' && *q != 0 && i < sizeof first - 1; q++)
            first[i++] = (char)*q;
        first[i] = '\0';
    }
    if (fz_config_one(data, size, "work") < 0 ||
        fz_config_one(data, size, "imaps://alice@imap.example.org") < 0 ||
        fz_config_one(data, size, first) < 0)
        return -1;
    return 0;
}

#endif
