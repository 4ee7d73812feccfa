/*
 * cal_text.c — byte-level helpers of the calendar module: a growable
 * buffer, RFC 5545 §3.1 line folding (75 octets, never inside a UTF-8
 * sequence), input sanitising, the nesting pre-check and property lookup
 * in serialised component text. No libical here.
 */
#include "cal_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CAL_FOLD 75 /* octets per physical line, excluding CRLF (RFC 5545 §3.1) */

static int cal_buf_grow(struct cal_buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void cal_buf_add(struct cal_buf *b, const char *s, size_t n)
{
    if (n == 0 || cal_buf_grow(b, n) < 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void cal_buf_adds(struct cal_buf *b, const char *s)
{
    cal_buf_add(b, s, strlen(s));
}

char *cal_buf_take(struct cal_buf *b, size_t *len)
{
    if (b->oom) {
        cal_buf_free(b);
        return NULL;
    }
    if (!b->p && cal_buf_grow(b, 0) < 0)
        return NULL;
    b->p[b->len] = '\0';
    char *p = b->p;
    /* Kept for the life of a snapshot: not the doubled capacity (up to 2x). */
    if (b->cap - b->len > 64 + b->len / 16) {
        char *fit = realloc(p, b->len + 1);
        if (fit)
            p = fit;
    }
    if (len)
        *len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void cal_buf_free(struct cal_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void cal_buf_add_line(struct cal_buf *b, const char *line, size_t n)
{
    size_t room = CAL_FOLD;
    while (n > room) {
        size_t cut = room;
        /* Step back off UTF-8 continuation bytes so a sequence stays whole. */
        while (cut > 1 && ((unsigned char)line[cut] & 0xC0) == 0x80)
            cut--;
        cal_buf_add(b, line, cut);
        cal_buf_add(b, "\r\n ", 3);
        line += cut;
        n -= cut;
        room = CAL_FOLD - 1; /* the leading space counts */
    }
    cal_buf_add(b, line, n);
    cal_buf_add(b, "\r\n", 2);
}

int cal_lines_next(struct cal_lines *l, size_t *start)
{
    l->line.len = 0;
    *start = l->pos;
    while (l->pos < l->len) {
        size_t s = l->pos, i = s;
        while (i < l->len && l->text[i] != '\r' && l->text[i] != '\n')
            i++;
        cal_buf_add(&l->line, l->text + s, i - s);
        if (i < l->len && l->text[i] == '\r')
            i++;
        if (i < l->len && l->text[i] == '\n')
            i++;
        l->pos = i;
        if (i < l->len && (l->text[i] == ' ' || l->text[i] == '\t')) {
            l->pos = i + 1; /* a continuation: its leading space is not content */
            continue;
        }
        if (l->line.len)
            break;
        *start = l->pos; /* an empty line: skip it */
    }
    if (l->line.oom || !l->line.len)
        return 0;
    l->line.p[l->line.len] = '\0';
    return 1;
}

void cal_buf_add_text(struct cal_buf *b, const char *text, size_t n)
{
    struct cal_lines l = {text, n, 0, {0}};
    size_t start;

    while (cal_lines_next(&l, &start))
        cal_buf_add_line(b, l.line.p, l.line.len);
    if (l.line.oom)
        b->oom = 1;
    cal_buf_free(&l.line);
}

/* Length of the valid UTF-8 sequence at s (RFC 3629), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

char *cal_sanitize(const char *text, size_t len)
{
    struct cal_buf b = {0};
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    if (cal_buf_grow(&b, len) < 0)
        return NULL;
    while (i < len) {
        size_t run = i;
        /* Copy plain printable ASCII in runs: the common case. */
        while (run < len && s[run] >= 0x20 && s[run] < 0x7F)
            run++;
        cal_buf_add(&b, text + i, run - i);
        i = run;
        if (i >= len)
            break;
        unsigned char c = s[i];
        if (c == '\r') {
            /* CRLF and the doubled "\r\r\n" become LF; a lone CR ends a line. */
            if (i + 1 < len && (s[i + 1] == '\n' || s[i + 1] == '\r')) {
                i++;
                continue;
            }
            cal_buf_add(&b, "\n", 1);
            i++;
        } else if (c == '\n' || c == '\t') {
            cal_buf_add(&b, (const char *)&s[i], 1);
            i++;
        } else if (c < 0x20 || c == 0x7F) {
            i++; /* NUL and other controls are not allowed in iCalendar text */
        } else {
            size_t l = utf8_seq(s + i, len - i);
            if (l) {
                cal_buf_add(&b, text + i, l);
                i += l;
            } else {
                cal_buf_add(&b, "\xEF\xBF\xBD", 3); /* U+FFFD for a bad byte */
                i++;
            }
        }
    }
    return cal_buf_take(&b, NULL);
}

int cal_check_nesting(const char *text, size_t len, int max, char *err, size_t errlen)
{
    int depth = 0;
    size_t i = 0;
    while (i < len) {
        const char *line = text + i;
        size_t rest = len - i;
        if (rest >= 6 && strncasecmp(line, "BEGIN:", 6) == 0) {
            if (++depth > max) {
                if (err && errlen)
                    snprintf(err, errlen, "components nested deeper than %d", max);
                return -EINVAL;
            }
        } else if (rest >= 4 && strncasecmp(line, "END:", 4) == 0 && depth > 0) {
            depth--;
        }
        const char *nl = memchr(line, '\n', rest);
        const char *cr = memchr(line, '\r', nl ? (size_t)(nl - line) : rest);
        const char *end = cr ? cr : nl;
        if (!end)
            break;
        i = (size_t)(end - text) + 1;
    }
    return 0;
}

/* Unescapes an RFC 5545 §3.3.11 TEXT value in place. */
static void cal_unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '\\' && r[1]) {
            r++;
            *w++ = (*r == 'n' || *r == 'N') ? '\n' : *r;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* Offset of the ':' that ends the name and parameters (quotes skipped). */
static const char *cal_value_start(const char *line)
{
    int quoted = 0;
    for (const char *p = line; *p; p++) {
        if (*p == '"')
            quoted = !quoted;
        else if (*p == ':' && !quoted)
            return p + 1;
    }
    return NULL;
}

int cal_text_match(const char *text, size_t len, const char *prop, const regex_t *re)
{
    struct cal_lines l = {text, len, 0, {0}};
    size_t plen = strlen(prop), start;
    int depth = 0, found = 0;

    while (!found && cal_lines_next(&l, &start)) {
        char *line = l.line.p;
        if (l.line.len >= 6 && strncasecmp(line, "BEGIN:", 6) == 0) {
            depth++;
        } else if (l.line.len >= 4 && strncasecmp(line, "END:", 4) == 0) {
            depth--;
        } else if (depth == 1 && l.line.len > plen && strncasecmp(line, prop, plen) == 0 &&
                   (line[plen] == ':' || line[plen] == ';')) {
            char *v = (char *)cal_value_start(line);
            if (v) {
                cal_unescape(v);
                found = regexec(re, v, 0, NULL, 0) == 0;
            }
        }
    }
    cal_buf_free(&l.line);
    return found;
}

int cal_text_has_line(const char *text, size_t len, const char *want)
{
    struct cal_lines l = {text, len, 0, {0}};
    size_t start;
    int found = 0;

    while (!found && cal_lines_next(&l, &start))
        found = strcmp(l.line.p, want) == 0;
    cal_buf_free(&l.line);
    return found;
}

char *cal_text_insert_prop(const char *text, size_t len, const char *line, size_t *outlen)
{
    /* RFC 5545 §3.6: a component's properties come before its subcomponents
     * (VALARM), so the new line goes before the first nested BEGIN, or
     * before the END line when there is none. Physical lines starting with
     * BEGIN:/END: are real lines: continuations start with a space. */
    size_t at = len, i = 0;
    int first = 1;
    while (i < len) {
        size_t start = i;
        const char *nl = memchr(text + i, '\n', len - i);
        i = nl ? (size_t)(nl - text) + 1 : len;
        if (first) {
            first = 0;
            continue;
        }
        if (i - start >= 6 && strncasecmp(text + start, "BEGIN:", 6) == 0) {
            at = start;
            break;
        }
        if (i - start >= 4 && strncasecmp(text + start, "END:", 4) == 0)
            at = start; /* the last END seen is the component's own */
    }
    struct cal_buf b = {0};
    cal_buf_add(&b, text, at);
    cal_buf_add_line(&b, line, strlen(line));
    cal_buf_add(&b, text + at, len - at);
    return cal_buf_take(&b, outlen);
}

void cal_buf_add_param(struct cal_buf *b, const char *value)
{
    int quote = strpbrk(value, ":;,") != NULL;
    if (quote)
        cal_buf_add(b, "\"", 1);
    for (const char *p = value; *p; p++)
        if (*p != '"')
            cal_buf_add(b, p, 1);
    if (quote)
        cal_buf_add(b, "\"", 1);
}
