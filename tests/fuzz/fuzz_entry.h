/*
 * fuzz_entry.h — the fuzz entry points: one function per target, taking
 * the raw input bytes, driving the modules the way the daemon does and
 * checking what they promise (fuzz_check.h). Returns 0, or -1 when a
 * promise is broken (one line on stderr says which). Memory errors, leaks
 * and undefined behaviour are the sanitizers' to report.
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
#include "mime.h"
#include "names.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libetpan/libetpan.h>

/*
 * libetpan 1.9.4's IMAP parser leaks what it had read when a response
 * fails to parse (an allocation in mailimap_atom_parse under
 * mailimap_parse_response: tests/corpus/regressions/bodystructure/
 * leak-libetpan-atom). That is libetpan's bug, not ours. The programs that
 * run fuzz_bodystructure() tell LeakSanitizer to ignore leaks below that
 * parser; with full stacks (test_regressions) the suppression below is
 * exact, so whatever our code or this harness forgets is still reported.
 */
#define FZ_LSAN_LIBETPAN_IMAP "leak:mailimap_parse_response\n"

/* ===== (1) BODYSTRUCTURE: libetpan's IMAP parser, then the part walker ===== */

/*
 * A mailstream over memory: the input, then the tagged completion of the
 * command. Reads hand out at most `chunk` bytes, as a network does. At the
 * end a read fails (-1) instead of returning 0: libetpan 1.9.4 loops
 * forever on a 0-byte read inside a literal (notes/libetpan.md §0.5), so a
 * truncated literal must end as a stream error, as it does over TLS.
 */
struct fz_mem {
    char *buf;
    size_t len, off, chunk;
};

static inline ssize_t fz_mem_read(mailstream_low *s, void *buf, size_t count)
{
    struct fz_mem *m = s->data;
    size_t left = m->len - m->off;
    if (left == 0)
        return -1;
    if (count > left)
        count = left;
    if (count > m->chunk)
        count = m->chunk;
    memcpy(buf, m->buf + m->off, count);
    m->off += count;
    return (ssize_t)count;
}

static inline ssize_t fz_mem_write(mailstream_low *s, const void *buf, size_t count)
{
    (void)s;
    (void)buf;
    return (ssize_t)count; /* the command we send goes nowhere */
}

static inline int fz_mem_close(mailstream_low *s)
{
    (void)s;
    return 0;
}

static inline int fz_mem_get_fd(mailstream_low *s)
{
    (void)s;
    return -1;
}

static inline void fz_mem_free(mailstream_low *s)
{
    struct fz_mem *m = s->data;
    free(m->buf);
    free(m);
    free(s);
}

static mailstream_low_driver fz_mem_driver = {
    .mailstream_read = fz_mem_read,
    .mailstream_write = fz_mem_write,
    .mailstream_close = fz_mem_close,
    .mailstream_get_fd = fz_mem_get_fd,
    .mailstream_free = fz_mem_free,
};

/*
 * libetpan allocates a literal's announced size before reading it
 * (mmap_string_sized_new in mailimap_literal_parse_progress), so "{4000000000}"
 * is a 4 GB malloc whatever follows. A literal longer than the whole input
 * can never be complete; such inputs are skipped rather than reported as
 * the allocator's out-of-memory (the daemon's own bound on that is issue 7's
 * hostile-server part). Everything shorter is parsed.
 */
static inline int fz_literal_too_long(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (data[i] != '{')
            continue;
        uint64_t n = 0;
        size_t j = i + 1;
        while (j < size && data[j] >= '0' && data[j] <= '9' && n <= size)
            n = n * 10 + (uint64_t)(data[j++] - '0');
        if (j > i + 1 && n > size)
            return 1;
    }
    return 0;
}

/*
 * libetpan 1.9.4 calls a msg_att handler only when a progress callback is
 * set too; the daemon sets one that does nothing (src/imap.c).
 */
static inline void fz_progress_ignored(size_t current, size_t maximum, void *ctx)
{
    (void)current;
    (void)maximum;
    (void)ctx;
}

struct fz_bs_ctx {
    int rc;
    unsigned bodies;
};

/* What the daemon's listing handler does with each FETCH response. */
static inline void fz_bs_handler(struct mailimap_msg_att *att, void *ctx)
{
    struct fz_bs_ctx *c = ctx;
    const struct mailimap_body *body = NULL;
    if (c->rc != 0 || att == NULL || att->att_list == NULL)
        return;
    for (clistiter *it = clist_begin(att->att_list); it; it = clist_next(it)) {
        struct mailimap_msg_att_item *item = clist_content(it);
        if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC &&
            item->att_data.att_static->att_type == MAILIMAP_MSG_ATT_BODYSTRUCTURE)
            body = item->att_data.att_static->att_data.att_bodystructure;
    }
    if (body == NULL)
        return;
    c->bodies++;
    /* Start from a non-empty list: the walker appends. */
    struct mime_part_list list = {0};
    list.parts = calloc(1, sizeof *list.parts);
    if (list.parts == NULL) {
        c->rc = fz_fail("bodystructure", "out of memory in the harness");
        return;
    }
    snprintf(list.parts[0].section, sizeof list.parts[0].section, "9");
    list.count = 1;
    int r = mime_find_calendar_parts(body, &list);
    if (r != 0)
        c->rc = fz_fail("bodystructure", "mime_find_calendar_parts returned %d", r);
    else
        c->rc = fz_check_parts("bodystructure", &list, 1);
    if (c->rc == 0 && strcmp(list.parts[0].section, "9") != 0)
        c->rc = fz_fail("bodystructure", "the walker changed a part it did not add");
    mime_part_list_free(&list);
}

/* Input: what a server sends after "1 UID FETCH 1 (UID INTERNALDATE BODYSTRUCTURE)". */
static inline int fz_bodystructure(const uint8_t *data, size_t size)
{
    static const char done[] = "1 OK done\r\n";
    struct fz_bs_ctx ctx = {0};
    struct fz_mem *m;
    mailstream_low *low;
    mailimap *imap;

    if (fz_literal_too_long(data, size))
        return 0;
    if ((m = calloc(1, sizeof *m)) == NULL || (m->buf = malloc(size + sizeof done)) == NULL) {
        free(m);
        return fz_fail("bodystructure", "out of memory in the harness");
    }
    if (size)
        memcpy(m->buf, data, size);
    memcpy(m->buf + size, done, sizeof done - 1);
    m->len = size + sizeof done - 1;
    m->chunk = 16 + size % 113;
    if ((low = mailstream_low_new(m, &fz_mem_driver)) == NULL) {
        free(m->buf);
        free(m);
        return fz_fail("bodystructure", "out of memory in the harness");
    }
    imap = mailimap_new(0, NULL);
    if (imap == NULL || (imap->imap_stream = mailstream_new(low, 8192)) == NULL) {
        mailstream_low_free(low);
        if (imap)
            mailimap_free(imap);
        return fz_fail("bodystructure", "out of memory in the harness");
    }
    /* As after EXAMINE: untagged EXISTS/FLAGS land in the selection info. */
    imap->imap_state = MAILIMAP_STATE_SELECTED;
    imap->imap_selection_info = mailimap_selection_info_new();
    mailimap_set_progress_callback(imap, NULL, fz_progress_ignored, NULL);

    struct mailimap_set *set = mailimap_set_new_single(1);
    struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
    clist *res = NULL;
    if (set && ft && imap->imap_selection_info &&
        !mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid()) &&
        !mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_internaldate()) &&
        !mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_bodystructure())) {
        mailimap_set_msg_att_handler(imap, fz_bs_handler, &ctx);
        mailimap_uid_fetch(imap, set, ft, &res); /* any result: only crashes matter here */
        mailimap_set_msg_att_handler(imap, NULL, NULL);
    } else {
        ctx.rc = fz_fail("bodystructure", "out of memory in the harness");
    }
    if (res)
        mailimap_fetch_list_free(res);
    if (ft)
        mailimap_fetch_type_free(ft);
    if (set)
        mailimap_set_free(set);
    /* Close first: mailimap_free() would send LOGOUT and wait for an answer. */
    mailstream_close(imap->imap_stream);
    imap->imap_stream = NULL;
    mailimap_free(imap);
    return ctx.rc;
}

/* ===== (2) decoding one part: transfer encoding, then charset ===== */

static const char *const fz_charsets[] = {
    "",
    "utf-8",
    "UTF-8",
    "us-ascii",
    "iso-8859-1",
    "windows-1252",
    "iso-8859-15",
    "utf-16",
    "utf-16le",
    "utf-16be",
    "utf-32",
    "utf-7",
    "iso-2022-jp",
    "shift_jis",
    "euc-jp",
    "gb2312",
    "gb18030",
    "big5",
    "koi8-r",
    "ks_c_5601-1987",
    "x-mac-roman",
    "\"utf-8\"",
    " latin1 ",
    "x-unknown",
    "utf-8//translit",
    "../../etc/passwd",
};
#define FZ_NCHARSETS (sizeof fz_charsets / sizeof fz_charsets[0])

/* Labels mime_decode_part treats as UTF-8 without converting. */
static inline int fz_charset_identity(const char *cs)
{
    return strcmp(cs, "") == 0 || strcmp(cs, "utf-8") == 0 || strcmp(cs, "UTF-8") == 0 ||
           strcmp(cs, "us-ascii") == 0 || strcmp(cs, "\"utf-8\"") == 0;
}

/* RFC 2045 §6.8 base64 with CRLF every 76 characters, as mailers send it. */
static inline char *fz_base64(const uint8_t *in, size_t n, size_t *outlen)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t groups = (n + 2) / 3, cap = groups * 4 + (groups / 19 + 1) * 2 + 1, k = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[k++] = abc[(v >> 18) & 63];
        out[k++] = abc[(v >> 12) & 63];
        out[k++] = i + 1 < n ? abc[(v >> 6) & 63] : '=';
        out[k++] = i + 2 < n ? abc[v & 63] : '=';
        if ((i / 3 + 1) % 19 == 0) {
            out[k++] = '\r';
            out[k++] = '\n';
        }
    }
    out[k] = '\0';
    *outlen = k;
    return out;
}

/* RFC 2045 §6.7 quoted-printable with every byte as =XX and soft breaks. */
static inline char *fz_qp(const uint8_t *in, size_t n, size_t *outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(n * 3 + (n / 24 + 1) * 3 + 1);
    size_t k = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        out[k++] = '=';
        out[k++] = hex[in[i] >> 4];
        out[k++] = hex[in[i] & 15];
        if ((i + 1) % 24 == 0 && i + 1 < n) {
            memcpy(out + k, "=\r\n", 3);
            k += 3;
        }
    }
    out[k] = '\0';
    *outlen = k;
    return out;
}

/* mime_decode_part's promises for one call; *out is left for the caller. */
static inline int fz_decode_one(const char *raw, size_t rawlen, enum mime_encoding enc,
                                const char *cs, char **out, size_t *outlen, int *rcp)
{
    char err[256];
    memset(err, 'x', sizeof err);
    int r = mime_decode_part(raw, rawlen, enc, cs, out, outlen, err, sizeof err);
    *rcp = r;
    if (r == 0) {
        return fz_check_text("decode", "decoded part", *out, *outlen);
    }
    if (*out != NULL)
        return fz_fail("decode", "rc %d but *out is set", r);
    if (r != -EINVAL)
        return fz_fail("decode", "mime_decode_part returned %d", r);
    if (strnlen(err, sizeof err) == sizeof err || err[0] == '\0')
        return fz_fail("decode", "-EINVAL without a reason");
    return 0;
}

/*
 * Input: byte 0 picks the transfer encoding (mod 3), byte 1 the charset
 * label from fz_charsets (or, past the table, the label is the input up to
 * the first LF); the rest is the part's raw body.
 * Besides the promises of mime.h: plain UTF-8 passes unchanged, and the
 * same bytes sent as base64 or as quoted-printable decode to the same text.
 */
static inline int fz_decode(const uint8_t *data, size_t size)
{
    char label[101];
    const char *cs;
    int rc = 0, r;

    if (size < 2)
        return 0;
    enum mime_encoding enc = (enum mime_encoding)(data[0] % 3);
    size_t pick = data[1] % (FZ_NCHARSETS + 1);
    const uint8_t *body = data + 2;
    size_t blen = size - 2;
    if (pick < FZ_NCHARSETS) {
        cs = fz_charsets[pick];
    } else {
        size_t n = 0;
        while (n < blen && n < sizeof label - 1 && body[n] != '\n' && body[n] != '\0')
            n++;
        memcpy(label, body, n);
        label[n] = '\0';
        cs = label;
        body += n < blen ? n + 1 : n;
        blen -= n < blen ? n + 1 : n;
    }

    char *out = NULL, *again = NULL, *enc_body = NULL;
    size_t outlen = 0, againlen = 0, elen = 0;
    if (fz_decode_one((const char *)body, blen, enc, cs, &out, &outlen, &r) < 0) {
        rc = -1;
        goto out;
    }
    if (r != 0 || enc != MIME_ENC_7BIT)
        goto out;

    if (fz_charset_identity(cs) && fz_utf8_valid((const char *)body, blen) &&
        memchr(body, '\0', blen) == NULL && !(blen >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0) &&
        (outlen != blen || memcmp(out, body, blen) != 0)) {
        rc = fz_fail("decode", "valid UTF-8 did not pass through unchanged (%zu -> %zu bytes)",
                     blen, outlen);
        goto out;
    }
    for (int e = MIME_ENC_BASE64; e <= MIME_ENC_QP; e++) {
        enc_body = e == MIME_ENC_BASE64 ? fz_base64(body, blen, &elen) : fz_qp(body, blen, &elen);
        if (enc_body == NULL) {
            rc = fz_fail("decode", "out of memory in the harness");
            goto out;
        }
        if (fz_decode_one(enc_body, elen, (enum mime_encoding)e, cs, &again, &againlen, &r) < 0) {
            rc = -1;
            goto out;
        }
        if (r != 0 || againlen != outlen || memcmp(again, out, outlen) != 0) {
            rc = fz_fail("decode", "%s of the same bytes decodes differently (rc %d, %zu vs %zu)",
                         e == MIME_ENC_BASE64 ? "base64" : "quoted-printable", r, againlen, outlen);
            goto out;
        }
        free(again);
        again = NULL;
        free(enc_body);
        enc_body = NULL;
    }
out:
    free(out);
    free(again);
    free(enc_body);
    return rc;
}

/* ===== (6) a whole message (the Maildir source): parts, sections, decoding ===== */

/*
 * Input: an RFC 5322 message. Every calendar part found must be extractable
 * by its section, and its bytes must decode (or be refused) cleanly.
 */
static inline int fz_message(const uint8_t *data, size_t size)
{
    struct mime_part_list list = {0};
    const char *msg = (const char *)data;
    int rc = 0;

    int r = mime_find_calendar_parts_in_message(msg, size, &list);
    if (r == -EINVAL)
        return list.count == 0 ? 0 : fz_fail("message", "-EINVAL with %zu parts", list.count);
    if (r != 0)
        return fz_fail("message", "mime_find_calendar_parts_in_message returned %d", r);
    if (fz_check_parts("message", &list, 0) < 0) {
        rc = -1;
        goto out;
    }
    for (size_t i = 0; i < list.count && rc == 0; i++) {
        const struct mime_part *p = &list.parts[i];
        char *sec = NULL, *text = NULL;
        size_t seclen = 0, textlen = 0;
        r = mime_extract_section(msg, size, p->section, &sec, &seclen);
        if (r != 0) {
            rc = fz_fail("message", "found section %s but extracting it gave %d", p->section, r);
            break;
        }
        if (fz_decode_one(sec, seclen, p->encoding, p->charset, &text, &textlen, &r) < 0)
            rc = -1;
        free(text);
        free(sec);
    }
out:
    mime_part_list_free(&list);
    return rc;
}

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

static inline int fz_same_result(const struct cal_result *a, const struct cal_result *b)
{
    if (a->nevents != b->nevents || a->merged_len != b->merged_len ||
        a->merged_mtime != b->merged_mtime || memcmp(a->merged, b->merged, a->merged_len) != 0)
        return 0;
    for (size_t i = 0; i < a->nevents; i++) {
        const struct cal_event_file *x = &a->events[i], *y = &b->events[i];
        if (strcmp(x->uid, y->uid) != 0 || x->len != y->len || x->mtime != y->mtime ||
            memcmp(x->data, y->data, x->len) != 0)
            return 0;
    }
    return 1;
}

static inline int fz_check_result(const struct cal_result *res)
{
    char what[64];
    if (fz_check_vcalendar("ical", "merged.ics", res->merged, res->merged_len) < 0)
        return -1;
    for (size_t i = 0; i < res->nevents; i++) {
        const struct cal_event_file *e = &res->events[i];
        snprintf(what, sizeof what, "event file %zu", i);
        if (e->uid == NULL)
            return fz_fail("ical", "%s has no UID", what);
        if (i > 0 && strcmp(res->events[i - 1].uid, e->uid) >= 0)
            return fz_fail("ical", "event files not sorted by UID at %zu", i);
        if (fz_check_vcalendar("ical", what, e->data, e->len) < 0)
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
    char err[256], url[160];
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
    if (fz_check_result(&r1) < 0)
        goto out;
    rev[0] = msgs[2], rev[1] = msgs[1], rev[2] = msgs[0];
    if ((r = cal_resolve(rev, 3, f, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r2)) != 0) {
        fz_fail("ical", "cal_resolve (reversed) returned %d", r);
        goto out;
    }
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
    r = cal_versions_add_part(back, r1.merged, r1.merged_len, f, &st, err, sizeof err);
    if (r < 0) {
        fz_fail("ical", "merged.ics does not parse again: %d %s", r, err);
        goto out;
    }
    rc = 0;
out:
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
