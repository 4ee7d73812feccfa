/*
 * fuzz_check.h — the properties the fuzz entry points (fuzz_entry.h) check
 * on what the modules return: valid UTF-8, well-formed calendar output,
 * well-formed part lists, safe file names. Written independently of the
 * code under test, so a bug there is not mirrored here.
 *
 * Every check returns 0, or -1 after one line on stderr saying what broke
 * ("fuzz: <target>: ..."). Used by the libFuzzer targets (which abort on
 * -1) and by tests/unit/test_regressions.c (which counts it as a failure).
 */
#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include "mime.h"
#include "names.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static inline int fz_fail(const char *target, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "fuzz: %s: ", target);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return -1;
}

/* Strict UTF-8 (RFC 3629): no overlongs, no surrogates, nothing past U+10FFFF. */
static inline int fz_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        uint32_t cp;
        size_t k;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            k = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + k > n)
            return 0;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < least[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k;
    }
    return 1;
}

/*
 * A C string of exactly len bytes that is valid UTF-8: what every decoded
 * part and every rendered file must be.
 */
static inline int fz_check_text(const char *target, const char *what, const char *s, size_t len)
{
    if (s == NULL)
        return fz_fail(target, "%s is NULL", what);
    if (s[len] != '\0' || strlen(s) != len)
        return fz_fail(target, "%s: %zu bytes announced, C string of %zu", what, len, strlen(s));
    if (!fz_utf8_valid(s, len))
        return fz_fail(target, "%s is not valid UTF-8", what);
    return 0;
}

/*
 * BEGIN/END of one content line (physical: such lines are never folded)
 * against the stack of open components. Exactly one VCALENDAR, at the top;
 * the components that make calendar entries (and VTIMEZONE) only directly
 * inside it: an entry nested in another would reach readers that walk all
 * VEVENTs without passing the merge, CANCEL and the filters.
 */
#define FZ_MAX_NEST 16
static inline int fz_check_nesting_line(const char *target, const char *what, const char *line,
                                        size_t n, char stack[][32], size_t *depth, size_t *ncal)
{
    static const char *const toplevel[] = {"VEVENT", "VTODO", "VJOURNAL", "VFREEBUSY", "VTIMEZONE"};
    int begin = n > 6 && memcmp(line, "BEGIN:", 6) == 0;
    int end = n > 4 && memcmp(line, "END:", 4) == 0;
    if (!begin && !end)
        return 0;
    const char *name = line + (begin ? 6 : 4);
    size_t nl = n - (begin ? 6 : 4);
    if (nl >= 32)
        return fz_fail(target, "%s: component name of %zu bytes", what, nl);
    if (end) {
        if (*depth == 0 || strlen(stack[*depth - 1]) != nl ||
            memcmp(stack[*depth - 1], name, nl) != 0)
            return fz_fail(target, "%s: END:%.*s does not close the open component", what, (int)nl,
                           name);
        (*depth)--;
        return 0;
    }
    int is_cal = nl == 9 && memcmp(name, "VCALENDAR", 9) == 0;
    if (is_cal && (*depth != 0 || ++*ncal > 1))
        return fz_fail(target, "%s: a second or nested VCALENDAR", what);
    if (!is_cal && *depth == 0)
        return fz_fail(target, "%s: BEGIN:%.*s outside the VCALENDAR", what, (int)nl, name);
    for (size_t i = 0; i < sizeof toplevel / sizeof toplevel[0]; i++)
        if (strlen(toplevel[i]) == nl && memcmp(toplevel[i], name, nl) == 0 && *depth != 1)
            return fz_fail(target, "%s: %s nested inside %s", what, toplevel[i], stack[*depth - 1]);
    if (*depth == FZ_MAX_NEST)
        return fz_fail(target, "%s: components nested more than %d deep", what, FZ_MAX_NEST);
    memcpy(stack[*depth], name, nl);
    stack[*depth][nl] = '\0';
    (*depth)++;
    return 0;
}

/*
 * One rendered VCALENDAR (an event file or merged.ics): valid UTF-8, CRLF
 * line ends only, no control bytes but TAB, every physical line at most 75
 * octets (RFC 5545 §3.1), no empty line, and components properly nested
 * (fz_check_nesting_line) in exactly one BEGIN:VCALENDAR ... END:VCALENDAR.
 */
static inline int fz_check_vcalendar(const char *target, const char *what, const char *s,
                                     size_t len)
{
    static const char begin[] = "BEGIN:VCALENDAR\r\n", end[] = "END:VCALENDAR\r\n";
    if (fz_check_text(target, what, s, len) < 0)
        return -1;
    if (len < sizeof begin - 1 + sizeof end - 1 || memcmp(s, begin, sizeof begin - 1) != 0 ||
        memcmp(s + len - (sizeof end - 1), end, sizeof end - 1) != 0)
        return fz_fail(target, "%s is not one BEGIN:VCALENDAR..END:VCALENDAR", what);
    char stack[FZ_MAX_NEST][32];
    size_t line_start = 0, depth = 0, ncal = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r') {
            if (i + 1 >= len || s[i + 1] != '\n')
                return fz_fail(target, "%s: bare CR at byte %zu", what, i);
            if (i - line_start > 75)
                return fz_fail(target, "%s: line of %zu octets at byte %zu", what, i - line_start,
                               line_start);
            if (i == line_start)
                return fz_fail(target, "%s: empty line at byte %zu", what, i);
            if (fz_check_nesting_line(target, what, s + line_start, i - line_start, stack, &depth,
                                      &ncal) < 0)
                return -1;
            line_start = i + 2;
            i++;
        } else if (c == '\n') {
            return fz_fail(target, "%s: bare LF at byte %zu", what, i);
        } else if ((c < 0x20 && c != '\t') || c == 0x7F) {
            return fz_fail(target, "%s: control byte 0x%02x at byte %zu", what, c, i);
        }
    }
    if (depth != 0 || ncal != 1)
        return fz_fail(target, "%s: %zu components left open", what, depth);
    return 0;
}

/* An IMAP section number: "1", "2.1.3" — positive decimal numbers joined by '.'. */
static inline int fz_section_ok(const char *s, size_t room)
{
    size_t n = strnlen(s, room);
    if (n == 0 || n == room)
        return 0;
    int at_start = 1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (at_start)
                return 0;
            at_start = 1;
        } else if (s[i] >= '0' && s[i] <= '9') {
            if (at_start && s[i] == '0')
                return 0; /* sections count from 1, without leading zeros */
            at_start = 0;
        } else {
            return 0;
        }
    }
    return !at_start;
}

/* What mime_find_calendar_parts*() promise about their list. */
static inline int fz_check_parts(const char *target, const struct mime_part_list *l, size_t before)
{
    if (l->count < before || l->count - before > MIME_MAX_PARTS)
        return fz_fail(target, "%zu parts added, the limit is %d", l->count - before,
                       MIME_MAX_PARTS);
    if (l->count > 0 && l->parts == NULL)
        return fz_fail(target, "%zu parts but no array", l->count);
    for (size_t i = before; i < l->count; i++) {
        const struct mime_part *p = &l->parts[i];
        if (!fz_section_ok(p->section, sizeof p->section))
            return fz_fail(target, "part %zu: bad section \"%.*s\"", i, (int)sizeof p->section,
                           p->section);
        if (p->encoding != MIME_ENC_7BIT && p->encoding != MIME_ENC_BASE64 &&
            p->encoding != MIME_ENC_QP)
            return fz_fail(target, "part %zu: encoding %d", i, (int)p->encoding);
        size_t cl = strnlen(p->charset, sizeof p->charset);
        if (cl == sizeof p->charset)
            return fz_fail(target, "part %zu: charset not terminated", i);
        for (size_t j = 0; j < cl; j++)
            if (p->charset[j] >= 'A' && p->charset[j] <= 'Z')
                return fz_fail(target, "part %zu: charset \"%s\" not lower case", i, p->charset);
        for (size_t j = before; j < i; j++)
            if (strcmp(l->parts[j].section, p->section) == 0)
                return fz_fail(target, "section %s listed twice", p->section);
    }
    return 0;
}

/* Names a directory of ours holds itself, or that mean something to the kernel. */
static inline int fz_name_reserved(const char *n)
{
    static const char *const reserved[] = {
        ".", "..", NAME_MERGED, NAME_STATUS, NAME_REFRESH, NAME_DISPLAYNAME,
    };
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcmp(n, reserved[i]) == 0)
            return 1;
    return 0;
}

/*
 * A directory entry made from untrusted text (SPEC §2, §5): non-empty,
 * at most 255 bytes (NAME_MAX), no '/', no control byte, not hidden (no
 * leading '.', which also rules out ".", "..", ".status", ".refresh") and
 * none of our own names. NUL cannot be inside a C string; the caller
 * checks the length it expects when it knows one.
 */
static inline int fz_check_component(const char *target, const char *what, const char *name)
{
    if (name == NULL)
        return fz_fail(target, "%s: NULL", what);
    size_t n = strlen(name);
    if (n == 0 || n > 255)
        return fz_fail(target, "%s: length %zu", what, n);
    if (name[0] == '.' || fz_name_reserved(name))
        return fz_fail(target, "%s: reserved or hidden name \"%s\"", what, name);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/' || c < 0x20 || c == 0x7F)
            return fz_fail(target, "%s: byte 0x%02x at %zu in \"%s\"", what, c, i, name);
    }
    return 0;
}

#endif
