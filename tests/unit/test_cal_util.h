/*
 * test_cal_util.h — helpers shared by the calendar unit tests: build a
 * message's versions from inline text or a corpus file, find an event,
 * and check the output format (CRLF, 75-octet folds, valid UTF-8).
 */
#ifndef TEST_CAL_UTIL_H
#define TEST_CAL_UTIL_H

#include "cal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads tests/corpus/ical/NAME (run from the repository root). */
static inline char *tc_slurp(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "tests/corpus/ical/%s", name);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "  cannot open %s (run from the repository root)\n", path);
        return NULL;
    }
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    if (buf) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

/* A message of mailbox/uid/date holding one calendar part. */
static inline struct cal_versions *tc_msg(const char *mbox, uint32_t uid, int64_t date,
                                          const char *ics, const struct cal_filter *f,
                                          struct cal_stats *st)
{
    char url[256];
    snprintf(url, sizeof url, "imap://alice@imap.example.org/%s;UIDVALIDITY=7/;UID=%u", mbox,
             (unsigned)uid);
    struct cal_origin o = {.mailbox = mbox, .uid = uid, .internaldate = date, .source_url = url};
    struct cal_versions *v = cal_versions_new(&o);
    struct cal_stats local = {0};
    char err[256] = "";
    if (v && ics &&
        cal_versions_add_part(v, ics, strlen(ics), f, st ? st : &local, err, sizeof err) < 0)
        fprintf(stderr, "  add_part: %s\n", err);
    return v;
}

static inline struct cal_versions *tc_file(const char *mbox, uint32_t uid, int64_t date,
                                           const char *name, const struct cal_filter *f,
                                           struct cal_stats *st)
{
    size_t len;
    char *text = tc_slurp(name, &len);
    struct cal_versions *v = tc_msg(mbox, uid, date, NULL, f, st);
    if (v && text) {
        char err[256] = "";
        struct cal_stats local = {0};
        if (cal_versions_add_part(v, text, len, f, st ? st : &local, err, sizeof err) < 0)
            fprintf(stderr, "  add_part %s: %s\n", name, err);
    }
    free(text);
    return v;
}

static inline void tc_free_all(struct cal_versions **m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cal_versions_free(m[i]);
}

/* An event file of a tc_result: its rope's bytes flattened. */
struct tc_event {
    char *uid;
    char *data; /* NUL-terminated */
    size_t len;
    int64_t mtime;
};

/* A cal_result with every rope flattened, for reading in tests. */
struct tc_result {
    struct tc_event *events;
    size_t nevents;
    char *merged; /* NULL unless CAL_WANT_MERGED */
    size_t merged_len;
    int64_t merged_mtime;
};

static inline void tc_result_free(struct tc_result *r)
{
    for (size_t i = 0; i < r->nevents; i++) {
        free(r->events[i].uid);
        free(r->events[i].data);
    }
    free(r->events);
    free(r->merged);
    memset(r, 0, sizeof *r);
}

/* A rope's bytes, checked: no empty segment, len the sum of them. */
static inline char *tc_flatten(const struct cal_rope *r)
{
    size_t sum = 0;
    for (size_t i = 0; i < r->nseg; i++) {
        if (r->seg[i].iov_len == 0)
            return NULL;
        sum += r->seg[i].iov_len;
    }
    return sum == r->len ? cal_rope_flatten(r) : NULL;
}

/* cal_resolve(), then the ropes checked (tc_flatten) and flattened. */
static inline int tc_resolve(struct cal_versions *const *msgs, size_t n, const struct cal_filter *f,
                             unsigned want, struct tc_result *out)
{
    struct cal_result r;
    int rc = cal_resolve(msgs, n, f, want, &r);
    memset(out, 0, sizeof *out);
    if (rc != 0)
        return rc;
    out->merged_mtime = r.merged_mtime;
    if (r.nevents && !(out->events = calloc(r.nevents, sizeof *out->events)))
        rc = -1;
    for (size_t i = 0; rc == 0 && i < r.nevents; i++) {
        struct tc_event *e = &out->events[out->nevents++];
        e->uid = strdup(r.events[i].uid);
        e->data = tc_flatten(&r.events[i].bytes);
        e->len = r.events[i].bytes.len;
        e->mtime = r.events[i].mtime;
        if (!e->uid || !e->data)
            rc = -1;
    }
    if (rc == 0 && (want & CAL_WANT_MERGED)) {
        out->merged = tc_flatten(&r.merged);
        out->merged_len = r.merged.len;
        if (!out->merged)
            rc = -1;
    }
    cal_result_free(&r);
    if (rc != 0)
        tc_result_free(out);
    return rc;
}

static inline const struct tc_event *tc_event(const struct tc_result *r, const char *uid)
{
    for (size_t i = 0; i < r->nevents; i++)
        if (strcmp(r->events[i].uid, uid) == 0)
            return &r->events[i];
    return NULL;
}

/* The data with folds undone, NUL-terminated; caller frees. */
static inline char *tc_unfold(const char *data, size_t len)
{
    char *out = malloc(len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\r' && i + 2 < len && data[i + 1] == '\n' &&
            (data[i + 2] == ' ' || data[i + 2] == '\t')) {
            i += 2;
            continue;
        }
        out[k++] = data[i];
    }
    out[k] = '\0';
    return out;
}

/* Occurrences of needle in the unfolded data. */
static inline int tc_count(const char *data, size_t len, const char *needle)
{
    char *u = tc_unfold(data, len);
    int n = 0;
    for (const char *p = u; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    free(u);
    return n;
}

static inline int tc_has(const char *data, size_t len, const char *needle)
{
    return tc_count(data, len, needle) > 0;
}

/* Position of needle in the unfolded data, or -1. */
static inline long tc_pos(const char *data, size_t len, const char *needle)
{
    char *u = tc_unfold(data, len);
    const char *p = strstr(u, needle);
    long r = p ? (long)(p - u) : -1;
    free(u);
    return r;
}

static inline int tc_valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!l || i + l > n || (l == 2 && c < 0xC2))
            return 0;
        for (size_t j = 1; j < l; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
        i += l;
    }
    return 1;
}

/*
 * SPEC §2 output format: header lines, no METHOD, every line ends CRLF,
 * no physical line over 75 octets, no fold inside a UTF-8 sequence, valid
 * UTF-8. Returns 1 when all hold (and says which failed otherwise).
 */
static inline int tc_format_ok(const char *data, size_t len)
{
    static const char head[] =
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:" CAL_PRODID "\r\nCALSCALE:GREGORIAN\r\n";
    static const char tail[] = "END:VCALENDAR\r\n";
    if (len < sizeof head || memcmp(data, head, sizeof head - 1) != 0) {
        fprintf(stderr, "  bad header\n");
        return 0;
    }
    if (len < sizeof tail || memcmp(data + len - (sizeof tail - 1), tail, sizeof tail - 1) != 0) {
        fprintf(stderr, "  bad trailer\n");
        return 0;
    }
    if (!tc_valid_utf8((const unsigned char *)data, len)) {
        fprintf(stderr, "  not valid UTF-8\n");
        return 0;
    }
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r')) {
            fprintf(stderr, "  bare LF at %zu\n", i);
            return 0;
        }
        if (data[i] == '\r' && (i + 1 >= len || data[i + 1] != '\n')) {
            fprintf(stderr, "  bare CR at %zu\n", i);
            return 0;
        }
        if (data[i] == '\n') {
            size_t l = i - 1 - start;
            if (l > 75) {
                fprintf(stderr, "  line of %zu octets at %zu\n", l, start);
                return 0;
            }
            if (i + 2 < len && data[i + 1] == ' ' && ((unsigned char)data[i + 2] & 0xC0) == 0x80) {
                fprintf(stderr, "  fold inside UTF-8 at %zu\n", i);
                return 0;
            }
            if (strncmp(data + start, "METHOD", 6) == 0) {
                fprintf(stderr, "  METHOD in output\n");
                return 0;
            }
            start = i + 1;
        }
    }
    return 1;
}

#endif
