/*
 * fuzz_mime.h — the fuzz entry points of the MIME side (fuzz_entry.h has
 * the rest): BODYSTRUCTURE through libetpan's IMAP parser to the part
 * walker, decoding one part, and a whole message as the Maildir source
 * reads it. Each returns 0, or -1 when a promise is broken (one line on
 * stderr says which).
 */
#ifndef FUZZ_MIME_H
#define FUZZ_MIME_H

#include "fuzz_check.h"
#include "imap_internal.h"
#include "mime.h"

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
    /*
     * The daemon reads every server byte through its guard (imap_guard.c:
     * literal, nesting and line limits); so does this harness, else it
     * would find libetpan's own stack overflow on deep nesting, which the
     * guard exists to prevent. The guard is fuzzed with it: libetpan
     * allocates a literal's announced size before reading it, so a
     * "{4000000000}" the guard let through would be a 4 GB malloc, which
     * libFuzzer reports as out-of-memory.
     */
    struct imap_guard_stats guard = {.op_budget = IMAP_OP_BUDGET};
    if (imap_guard_install(imap, &guard) != 0) {
        mailstream_close(imap->imap_stream); /* mailimap_free() would send LOGOUT */
        imap->imap_stream = NULL;
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
    int r = -1;
    if (set && ft && imap->imap_selection_info &&
        !mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid()) &&
        !mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_internaldate()) &&
        !mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_bodystructure())) {
        mailimap_set_msg_att_handler(imap, fz_bs_handler, &ctx);
        /* Any result will do: only crashes and broken promises matter here. */
        r = mailimap_uid_fetch(imap, set, ft, &res);
        mailimap_set_msg_att_handler(imap, NULL, NULL);
    } else {
        ctx.rc = fz_fail("bodystructure", "out of memory in the harness");
    }
    /*
     * On a tagged NO libetpan frees the list itself and leaves res dangling
     * (tests/corpus/regressions/bodystructure/tagged-no-leaves-list-dangling);
     * src/imap_fetch.c frees it only on success, and so does this.
     */
    if (res && r == MAILIMAP_NO_ERROR)
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

#endif
