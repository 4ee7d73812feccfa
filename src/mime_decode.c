/*
 * mime_decode.c — one calendar part's bytes to clean UTF-8 text: undo the
 * transfer encoding (libetpan), convert the charset (iconv), then make the
 * result safe for a C-string parser (no NUL, valid UTF-8, no leading BOM).
 *
 * libetpan's charconv() is deliberately not used: it turns unconvertible
 * bytes into '?' and silently drops a truncated tail, which loses data
 * without a trace. Here every bad sequence becomes U+FFFD instead.
 */
#include "mime.h"

#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libetpan/libetpan.h>

/* A growable byte buffer. */
struct buf {
    char *p;
    size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t more)
{
    if (more > SIZE_MAX - b->len - 1)
        return -ENOMEM;
    if (b->len + more + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + more + 1)
        cap = cap > SIZE_MAX / 2 ? b->len + more + 1 : cap * 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(struct buf *b, const void *data, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -ENOMEM;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */

/*
 * Length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes at s
 * start no valid sequence; *bad is then the length of the maximal invalid
 * subpart (Unicode 15 §3.9, "U+FFFD substitution of maximal subparts"), so
 * that one broken character costs one U+FFFD and never swallows its
 * neighbours. Rejects overlong forms, surrogates and values past U+10FFFF.
 */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

    *bad = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        if (c == 0xF4)
            hi = 0x8F; /* > U+10FFFF */
    } else
        return 0;
    for (size_t i = 1; i < need; i++) {
        unsigned char lo_i = i == 1 ? lo : 0x80, hi_i = i == 1 ? hi : 0xBF;
        if (i >= n || s[i] < lo_i || s[i] > hi_i) {
            *bad = i;
            return 0;
        }
    }
    return need;
}

/*
 * Appends in[0..n) to out as valid UTF-8: invalid sequences become U+FFFD,
 * NUL bytes are dropped (libical takes C strings; a bad QP escape "=00" or
 * "=ZZ" decodes to NUL), and a byte-order mark at the very start goes too.
 */
static int utf8_clean(const char *in, size_t n, struct buf *out)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0;

    if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        i = 3;
    if (buf_reserve(out, n - i) < 0)
        return -ENOMEM;
    while (i < n) {
        /* Calendar text is mostly ASCII: copy such runs in one go. */
        size_t run = 0;
        while (i + run < n && s[i + run] >= 0x01 && s[i + run] < 0x80)
            run++;
        if (run) {
            /* U+FFFD (3 bytes) may have replaced 1 byte before: reserve again. */
            if (buf_reserve(out, run) < 0)
                return -ENOMEM;
            memcpy(out->p + out->len, s + i, run);
            out->len += run;
            i += run;
            continue;
        }
        size_t bad, k = utf8_seq(s + i, n - i, &bad);
        int r;
        if (k == 0) {
            r = buf_add(out, REPLACEMENT, 3);
            i += bad;
        } else if (k == 1 && s[i] == '\0') {
            r = 0;
            i++;
        } else {
            r = buf_add(out, s + i, k);
            i += k;
        }
        if (r < 0)
            return r;
    }
    return 0;
}

/*
 * Converts with iconv, one U+FFFD per byte iconv cannot read (EILSEQ) and
 * one for an incomplete sequence at the end (EINVAL), so a damaged part
 * still shows everything that was readable.
 */
static int iconv_convert(iconv_t cd, const char *in, size_t n, struct buf *out)
{
    char *inp = (char *)in;
    size_t inleft = n;
    int flushing = 0;

    if (buf_reserve(out, n + n / 2 + 16) < 0)
        return -ENOMEM;
    for (;;) {
        char *outp = out->p + out->len;
        size_t outleft = out->cap - out->len - 1;
        size_t r = flushing ? iconv(cd, NULL, NULL, &outp, &outleft)
                            : iconv(cd, &inp, &inleft, &outp, &outleft);
        int e = errno;
        out->len = (size_t)(outp - out->p);
        if (r != (size_t)-1) {
            if (flushing)
                return 0;
            flushing = 1; /* emit the shift-back sequence of stateful encodings */
            continue;
        }
        if (e == E2BIG) {
            if (buf_reserve(out, out->cap) < 0)
                return -ENOMEM;
        } else if (e == EILSEQ && !flushing) {
            if (buf_add(out, REPLACEMENT, 3) < 0)
                return -ENOMEM;
            inp++;
            inleft--;
        } else if (e == EINVAL && !flushing) {
            if (buf_add(out, REPLACEMENT, 3) < 0)
                return -ENOMEM;
            inleft = 0;
        } else {
            return flushing ? 0 : -EINVAL;
        }
    }
}

/* Copies printable ASCII of an untrusted string for an error message. */
static void err_set(char *err, size_t errlen, const char *fmt, const char *arg)
{
    char safe[64];
    size_t i = 0;
    if (err == NULL || errlen == 0)
        return;
    for (; arg[i] && i < sizeof safe - 1; i++)
        safe[i] = (arg[i] >= 0x20 && arg[i] < 0x7F) ? arg[i] : '?';
    safe[i] = '\0';
    snprintf(err, errlen, fmt, safe);
}

/*
 * A charset label goes to iconv_open() only when it looks like a name: no
 * "//" suffixes (//TRANSLIT, //IGNORE) and nothing path-like from the wire.
 */
static int charset_name_ok(const char *cs)
{
    for (; *cs; cs++)
        if (!isalnum((unsigned char)*cs) && strchr("-_.:+()", *cs) == NULL)
            return 0;
    return 1;
}

/* Labels treated as UTF-8 (validated, not converted). */
static int charset_is_utf8(const char *cs)
{
    static const char *const names[] = {"",      "utf-8",          "utf8", "us-ascii",
                                        "ascii", "ansi_x3.4-1968", "none", "unicode-1-1-utf-8"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(cs, names[i]) == 0)
            return 1;
    return 0;
}

/*
 * Mail labels iconv does not know, or knows as something narrower than
 * what senders really use. ISO-8859-1 goes to windows-1252 like every
 * mail client does (WHATWG Encoding §4.2): Outlook labels cp1252 text
 * with curly quotes and "€" as Latin-1; the C1 controls it would give
 * instead are never meant.
 */
static const char *charset_alias(const char *cs)
{
    static const char *const map[][2] = {
        {"iso-8859-1", "WINDOWS-1252"},
        {"iso8859-1", "WINDOWS-1252"},
        {"iso_8859-1", "WINDOWS-1252"},
        {"latin1", "WINDOWS-1252"},
        {"l1", "WINDOWS-1252"},
        {"cp819", "WINDOWS-1252"},
        {"gb2312", "GBK"},
        {"ks_c_5601-1987", "CP949"},
        {"iso-2022-jp", "ISO-2022-JP-2"},
        {"iso-8859-8-i", "ISO-8859-8"},
        {"x-mac-roman", "MACINTOSH"},
        {"unicode-1-1-utf-7", "UTF-7"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(cs, map[i][0]) == 0)
            return map[i][1];
    return cs;
}

/* Base64 alphabet value; -2 line break, -3 padding, -1 anything else. */
static const signed char B64[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -2, -1, -1, -2, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -3, -1, -1, -1, 0,  1,  2,  3,  4,  5,  6,
    7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
    49, 50, 51, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

/*
 * Base64 as RFC 2045 §6.8 writes it (alphabet, CRLF or LF line breaks, "="
 * padding only at the end) decoded into out (room for rawlen * 3 / 4 bytes).
 * Returns the length, or -1 for anything else: that is left to libetpan,
 * whose way with junk is what the parts have always been decoded with. For
 * well-formed input both give the same bytes; this is only faster.
 */
static long base64_strict(const char *raw, size_t rawlen, unsigned char *out)
{
    unsigned acc = 0, nacc = 0, pad = 0;
    size_t n = 0;

    for (size_t i = 0; i < rawlen; i++) {
        int v = B64[(unsigned char)raw[i]];

        if (v == -2)
            continue;
        if (v == -3) {
            pad++;
            continue;
        }
        if (v < 0 || pad)
            return -1;
        acc = acc << 6 | (unsigned)v;
        if (++nacc == 4) {
            out[n++] = (unsigned char)(acc >> 16);
            out[n++] = (unsigned char)(acc >> 8);
            out[n++] = (unsigned char)acc;
            acc = nacc = 0;
        }
    }
    /* What is left must be exactly what the padding says. */
    if (nacc == 0 && pad == 0)
        return (long)n;
    if (nacc == 2 && pad == 2 && (acc & 0xF) == 0) {
        out[n++] = (unsigned char)(acc >> 4);
        return (long)n;
    }
    if (nacc == 3 && pad == 1 && (acc & 0x3) == 0) {
        out[n++] = (unsigned char)(acc >> 10);
        out[n++] = (unsigned char)(acc >> 2);
        return (long)n;
    }
    return -1;
}

/* Undoes Content-Transfer-Encoding; *dec is an mmap string (mmap_string_unref). */
static int transfer_decode(const char *raw, size_t rawlen, enum mime_encoding enc, char **dec,
                           size_t *declen)
{
    int mech =
        enc == MIME_ENC_BASE64 ? MAILMIME_MECHANISM_BASE64 : MAILMIME_MECHANISM_QUOTED_PRINTABLE;
    size_t idx = 0;
    *dec = NULL;
    *declen = 0;
    /*
     * libetpan 1.9.4's quoted-printable decoder reads two bytes past the end
     * when the part ends in an escape ("=" or "=X"): decode from a copy with
     * zeroed room behind it (the zeros are never part of the result).
     */
    char *padded = malloc(rawlen + 4);
    if (padded == NULL)
        return -ENOMEM;
    memcpy(padded, raw, rawlen);
    memset(padded + rawlen, 0, 4);
    int r = mailmime_part_parse(padded, rawlen, &idx, mech, dec, declen);
    free(padded);
    if (r == MAILIMF_ERROR_MEMORY)
        return -ENOMEM;
    if (r != MAILIMF_NO_ERROR || *dec == NULL)
        return -EINVAL; /* not seen: the decoders skip junk, but stay safe */
    return 0;
}

int mime_decode_part(const char *raw, size_t rawlen, enum mime_encoding enc, const char *charset,
                     char **out, size_t *outlen, char *err, size_t errlen)
{
    char cs[64];
    struct buf conv = {0}, clean = {0};
    char *dec = NULL, *fast = NULL;
    const char *data = raw;
    size_t dlen = rawlen;
    iconv_t cd = (iconv_t)-1;
    int r;

    *out = NULL;
    *outlen = 0;
    if (err != NULL && errlen > 0)
        err[0] = '\0';

    /* Normalise the label: trim blanks and quotes, lower-case. */
    const char *c = charset ? charset : "";
    while (*c == ' ' || *c == '\t' || *c == '"')
        c++;
    size_t n = strlen(c);
    while (n > 0 && (c[n - 1] == ' ' || c[n - 1] == '\t' || c[n - 1] == '"'))
        n--;
    if (n >= sizeof cs) {
        err_set(err, errlen, "unknown charset \"%s\"", c);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        cs[i] = (char)tolower((unsigned char)c[i]);
    cs[n] = '\0';

    /* Refuse an unknown charset before doing any work. */
    if (!charset_is_utf8(cs)) {
        if (charset_name_ok(cs))
            cd = iconv_open("UTF-8", charset_alias(cs));
        if (cd == (iconv_t)-1) {
            err_set(err, errlen, "unknown charset \"%s\"", cs);
            return -EINVAL;
        }
    }

    if (enc == MIME_ENC_BASE64 && rawlen > 0) {
        /* Most parts are well-formed: decoded here without libetpan's copies. */
        if ((fast = malloc(rawlen / 4 * 3 + 3)) == NULL) {
            r = -ENOMEM;
            goto out;
        }
        long got = base64_strict(raw, rawlen, (unsigned char *)fast);
        if (got >= 0) {
            data = fast;
            dlen = (size_t)got;
        }
    }
    if ((enc == MIME_ENC_BASE64 || enc == MIME_ENC_QP) && rawlen > 0 && data == raw) {
        r = transfer_decode(raw, rawlen, enc, &dec, &dlen);
        if (r < 0) {
            if (r == -EINVAL)
                err_set(err, errlen, "%s", "cannot undo the transfer encoding");
            goto out;
        }
        data = dec;
    }

    if (cd != (iconv_t)-1) {
        r = iconv_convert(cd, data, dlen, &conv);
        if (r < 0) {
            if (r == -EINVAL)
                err_set(err, errlen, "cannot convert from charset \"%s\"", cs);
            goto out;
        }
        data = conv.p;
        dlen = conv.len;
    }

    /* Also after iconv: the source may hold NULs (UTF-16!) or a BOM. */
    r = utf8_clean(data ? data : "", dlen, &clean);
    if (r < 0)
        goto out;
    if (buf_reserve(&clean, 0) < 0) {
        r = -ENOMEM;
        goto out;
    }
    clean.p[clean.len] = '\0';
    *out = clean.p;
    *outlen = clean.len;
    clean.p = NULL;
    r = 0;
out:
    free(clean.p);
    free(conv.p);
    free(fast);
    if (dec != NULL)
        mmap_string_unref(dec);
    if (cd != (iconv_t)-1)
        iconv_close(cd);
    return r;
}
