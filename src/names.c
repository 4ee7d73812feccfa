/*
 * names.c — event file names from UIDs, mailbox names from modified UTF-7,
 * and safe path components (SPEC §2, §5: names from the server are
 * untrusted and never become paths outside the mount).
 *
 * Event file names. A UID made of A-Z a-z 0-9 . _ - @ + (at most 200 bytes,
 * not starting with '.', and not "merged") is kept: "<uid>.ics". Any other
 * UID is percent-encoded: every byte outside that set, a leading '.', and
 * the 'm' of "merged" becomes %XX (upper-case hex). Such a name always holds
 * a '%', which a kept name never does, and percent-encoding is injective,
 * so two UIDs never meet. When the encoded name would pass 200 bytes it
 * becomes a clean prefix of the encoding (at most 150 bytes) + "%%" + 32 hex
 * digits of SHA-256(UID). "%%" never occurs in a plain encoding (a '%' there
 * is always followed by a hex digit), so hashed names cannot meet encoded
 * ones either; two hashed names meet only on a 128-bit SHA-256 collision.
 */
#include "names.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define NAME_PLAIN_MAX 200       /* longest UID kept as is (SPEC §2) */
#define NAME_ENCODED_MAX 200     /* longest encoded name, ".ics" included */
#define NAME_PREFIX_MAX 150      /* longest encoded prefix in a hashed name */
#define NAME_HASH_HEX 32         /* hex digits of SHA-256 in a hashed name */
#define COMPONENT_MAX 255        /* NAME_MAX: longest name the kernel looks up */
#define COMPONENT_PREFIX_MAX 200 /* longest prefix of a hashed component */

static const char HEX[] = "0123456789ABCDEF";

static int put_hash(char *out, const char *data, size_t len);

/* The bytes a kept UID may consist of (SPEC §2). */
static int uid_byte_plain(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == '@' || c == '+';
}

/* Would "<uid>.ics" be a valid, unreserved name as it stands? */
static int uid_kept_as_is(const char *uid, size_t ulen)
{
    if (ulen == 0 || ulen > NAME_PLAIN_MAX || uid[0] == '.')
        return 0;
    for (size_t i = 0; i < ulen; i++)
        if (!uid_byte_plain((unsigned char)uid[i]))
            return 0;
    /* "merged.ics" is the directory's merged file; the other reserved names
     * either start with '.' or do not end in ".ics". */
    return !(ulen == 6 && memcmp(uid, "merged", 6) == 0);
}

/* Does byte i of uid need %XX in an encoded name? */
static int uid_byte_escaped(const char *uid, size_t ulen, size_t i)
{
    unsigned char c = (unsigned char)uid[i];
    if (!uid_byte_plain(c) || (i == 0 && c == '.'))
        return 1;
    return i == 0 && ulen == 6 && memcmp(uid, "merged", 6) == 0;
}

/* Length of the percent-encoding of uid (without ".ics"). */
static size_t uid_encoded_len(const char *uid, size_t ulen)
{
    size_t n = 0;
    for (size_t i = 0; i < ulen; i++)
        n += uid_byte_escaped(uid, ulen, i) ? 3 : 1;
    return n;
}

/*
 * Writes the percent-encoding of uid into out, stopping before a byte whose
 * encoding would pass max bytes (so a %XX is never cut). Returns its length.
 */
static size_t uid_encode(const char *uid, size_t ulen, char *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < ulen; i++) {
        unsigned char c = (unsigned char)uid[i];
        if (uid_byte_escaped(uid, ulen, i)) {
            if (n + 3 > max)
                break;
            out[n++] = '%';
            out[n++] = HEX[c >> 4];
            out[n++] = HEX[c & 15];
        } else {
            if (n + 1 > max)
                break;
            out[n++] = (char)c;
        }
    }
    return n;
}

char *name_for_uid(const char *uid, size_t ulen)
{
    char *name;
    if (uid == NULL)
        ulen = 0;
    if (uid_kept_as_is(uid, ulen)) {
        name = malloc(ulen + 5);
        if (name == NULL)
            return NULL;
        memcpy(name, uid, ulen);
        memcpy(name + ulen, ".ics", 5);
        return name;
    }

    size_t elen = uid_encoded_len(uid, ulen);
    if (ulen > 0 && elen + 4 <= NAME_ENCODED_MAX) {
        name = malloc(elen + 5);
        if (name == NULL)
            return NULL;
        uid_encode(uid, ulen, name, elen);
        memcpy(name + elen, ".ics", 5);
        return name;
    }

    /* Too long (or empty, which has no encoding of its own): prefix + hash. */
    name = malloc(NAME_PREFIX_MAX + 2 + NAME_HASH_HEX + 5);
    if (name == NULL)
        return NULL;
    size_t n = uid_encode(uid, ulen, name, NAME_PREFIX_MAX);
    if (put_hash(name + n, uid, ulen) < 0) {
        free(name);
        return NULL;
    }
    n += 2 + NAME_HASH_HEX;
    memcpy(name + n, ".ics", 5);
    return name;
}

/* ---- modified UTF-7 (RFC 3501 §5.1.3) ---- */

/* Value of a modified-BASE64 character (',' stands for '/'), or -1. */
static int mb64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == ',')
        return 63;
    return -1;
}

/* Appends code point cp as UTF-8; out has room (4 bytes per input char is enough). */
static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * Decodes one "&...-" run starting after the '&' at *pp; appends UTF-8 to
 * out (at *n) and leaves *pp after the '-'. Returns 0, or -1 when the run
 * breaks RFC 3501 §5.1.3: a character outside modified BASE64, no closing
 * '-', leftover bits that are non-zero or make a whole extra character, a
 * lone or reversed surrogate, or an encoded character that must appear as
 * itself (printable US-ASCII, which includes '&') or cannot appear (NUL).
 */
static int mutf7_run(const char **pp, char *out, size_t *n)
{
    const unsigned char *p = (const unsigned char *)*pp;
    uint32_t bits = 0, high = 0;
    int nbits = 0, units = 0;

    for (;; p++) {
        if (*p == '-')
            break;
        int v = mb64_value(*p);
        if (v < 0)
            return -1; /* includes the end of the string: unterminated */
        bits = (bits << 6) | (uint32_t)v;
        nbits += 6;
        if (nbits < 16)
            continue;
        nbits -= 16;
        uint32_t u = (bits >> nbits) & 0xFFFF;
        bits &= (1u << nbits) - 1;
        units++;
        if (high != 0) {
            if (u < 0xDC00 || u > 0xDFFF)
                return -1;
            *n += put_utf8(out + *n, 0x10000 + ((high - 0xD800) << 10) + (u - 0xDC00));
            high = 0;
        } else if (u >= 0xD800 && u <= 0xDBFF) {
            high = u;
        } else if (u >= 0xDC00 && u <= 0xDFFF) {
            return -1;
        } else if (u == 0 || (u >= 0x20 && u <= 0x7E)) {
            return -1;
        } else {
            *n += put_utf8(out + *n, u);
        }
    }
    if (units == 0 || high != 0 || nbits >= 6 || bits != 0)
        return -1;
    *pp = (const char *)p + 1;
    return 0;
}

char *name_mailbox_decode(const char *mutf7)
{
    if (mutf7 == NULL)
        return NULL;
    size_t len = strlen(mutf7);
    /* Each input byte yields at most 4 output bytes (a base64 char is 6 bits). */
    if (len > (SIZE_MAX - 1) / 4)
        return NULL;
    char *out = malloc(len * 4 + 1);
    if (out == NULL)
        return NULL;
    size_t n = 0;
    const char *p = mutf7;
    while (*p) {
        unsigned char c = (unsigned char)*p;
        if (c == '&') {
            if (p[1] == '-') {
                out[n++] = '&';
                p += 2;
            } else {
                p++;
                if (mutf7_run(&p, out, &n) < 0)
                    goto bad;
            }
        } else if (c >= 0x20 && c <= 0x7E) {
            out[n++] = (char)c;
            p++;
        } else {
            goto bad; /* control or 8-bit byte: not modified UTF-7 */
        }
    }
    out[n] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

/* ---- safe single path components ---- */

/* Names that mean something else in a directory of ours. */
static int component_reserved(const char *s)
{
    return strcmp(s, NAME_MERGED) == 0 || strcmp(s, NAME_DISPLAYNAME) == 0;
}

/* Appends "%%" + NAME_HASH_HEX lower-case hex digits of SHA-256(data). */
static int put_hash(char *out, const char *data, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(len ? data : "", len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen * 2 < NAME_HASH_HEX)
        return -1;
    *out++ = '%';
    *out++ = '%';
    for (int i = 0; i < NAME_HASH_HEX / 2; i++) {
        *out++ = (char)(HEX[md[i] >> 4] | 0x20); /* lower case: visibly not a %XX */
        *out++ = (char)(HEX[md[i] & 15] | 0x20);
    }
    return 0;
}

/*
 * '%' itself is escaped so the result percent-decodes back to the input: the
 * mapping is injective. A leading '.' is escaped as well, which covers ".",
 * "..", hidden names and our own ".status" / ".refresh"; the first byte of
 * "merged.ics" and "displayname" is escaped so no directory hides those
 * files. "" becomes "%00", which no other input can give (NUL never occurs).
 * A result longer than NAME_MAX (255) could not be looked up, so it becomes
 * a clean prefix + "%%" + hash, like a long UID.
 */
char *name_safe_component(const char *s)
{
    if (s == NULL)
        s = "";
    size_t len = strlen(s);
    if (len > (SIZE_MAX - NAME_HASH_HEX - 4) / 3)
        return NULL;
    char *out = malloc(len * 3 + NAME_HASH_HEX + 4);
    if (out == NULL)
        return NULL;
    if (len == 0) {
        memcpy(out, "%00", 4);
        return out;
    }
    int reserved = component_reserved(s);
    size_t n = 0, cut = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F || c == '/' || c == '%' || (i == 0 && (c == '.' || reserved))) {
            out[n++] = '%';
            out[n++] = HEX[c >> 4];
            out[n++] = HEX[c & 15];
        } else {
            out[n++] = (char)c;
        }
        if (n <= COMPONENT_PREFIX_MAX)
            cut = n; /* the longest clean prefix that leaves room for the hash */
    }
    if (n > COMPONENT_MAX) {
        if (put_hash(out + cut, s, len) < 0) {
            free(out);
            return NULL;
        }
        n = cut + 2 + NAME_HASH_HEX;
    }
    out[n] = '\0';
    return out;
}
