/*
 * test_mime.c — calendar parts found in BODYSTRUCTUREs and whole messages,
 * their IMAP section numbers, section extraction and decoding (mime.h).
 *
 * The fixtures are real: each MSG_* was stored in a Dovecot 2.3 Maildir and
 * BS_* is the BODYSTRUCTURE line Dovecot answered for it, so the two walkers
 * are compared with what a server really says. BODY.PEEK[section] answers of
 * that Dovecot are the expected extraction results below.
 */
#include "mime.h"
#include "mime_fixtures.h"
#include "unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

/* ---- helpers ---- */

/* A BODYSTRUCTURE parsed by libetpan's IMAP parser, and what owns it. */
struct parsed_bs {
    clist *fetch; /* mailimap_fetch_list_free() */
    const struct mailimap_body *body;
};

/*
 * Feeds one untagged FETCH response line to libetpan exactly as a server
 * would: a socketpair plays the server, mailimap_uid_fetch() reads. The
 * response ends in "1 OK" (the tag of the first command) and the server end
 * is shut for writing, so a malformed line ends in an error, not a hang.
 * Returns 0 with out->body set, or -1.
 */
static int parse_bodystructure(const char *line, struct parsed_bs *out)
{
    int sv[2];
    int rc = -1;
    char *resp = NULL;

    memset(out, 0, sizeof *out);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return -1;
    size_t len = strlen(line);
    resp = malloc(len + 16);
    if (resp == NULL)
        goto out_fds;
    memcpy(resp, line, len);
    memcpy(resp + len, "1 OK done\r\n", 12);
    len += 11;
    if (write(sv[1], resp, len) != (ssize_t)len) /* fits: the socket buffer is >100 KiB */
        goto out_fds;
    shutdown(sv[1], SHUT_WR);

    mailimap *imap = mailimap_new(0, NULL);
    if (imap == NULL)
        goto out_fds;
    mailimap_set_timeout(imap, 5);
    imap->imap_stream = mailstream_socket_open(sv[0]);
    if (imap->imap_stream == NULL) {
        mailimap_free(imap);
        goto out_fds;
    }
    sv[0] = -1; /* the stream owns it now */
    imap->imap_state = MAILIMAP_STATE_SELECTED;

    struct mailimap_set *set = mailimap_set_new_single(1);
    struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
    mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid());
    mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_bodystructure());
    int r = mailimap_uid_fetch(imap, set, ft, &out->fetch);
    mailimap_set_free(set);
    mailimap_fetch_type_free(ft);
    mailstream_close(imap->imap_stream);
    imap->imap_stream = NULL;
    mailimap_free(imap);
    if (r != MAILIMAP_NO_ERROR) {
        out->fetch = NULL;
        goto out_fds;
    }

    for (clistiter *it = clist_begin(out->fetch); it && !out->body; it = clist_next(it)) {
        struct mailimap_msg_att *att = clist_content(it);
        for (clistiter *i2 = clist_begin(att->att_list); i2; i2 = clist_next(i2)) {
            struct mailimap_msg_att_item *item = clist_content(i2);
            if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC &&
                item->att_data.att_static->att_type == MAILIMAP_MSG_ATT_BODYSTRUCTURE)
                out->body = item->att_data.att_static->att_data.att_bodystructure;
        }
    }
    rc = out->body ? 0 : -1;
out_fds:
    free(resp);
    if (sv[0] >= 0)
        close(sv[0]);
    close(sv[1]);
    return rc;
}

static void parsed_bs_free(struct parsed_bs *p)
{
    if (p->fetch)
        mailimap_fetch_list_free(p->fetch);
    memset(p, 0, sizeof *p);
}

/* Calendar parts of a BODYSTRUCTURE line; -1 when the line does not parse. */
static int bs_parts(const char *line, struct mime_part_list *list)
{
    struct parsed_bs p;
    memset(list, 0, sizeof *list);
    if (parse_bodystructure(line, &p) < 0)
        return -1;
    int r = mime_find_calendar_parts(p.body, list);
    parsed_bs_free(&p);
    return r;
}

/* Calendar parts of a whole message given as a C string. */
static int msg_parts(const char *msg, struct mime_part_list *list)
{
    memset(list, 0, sizeof *list);
    return mime_find_calendar_parts_in_message(msg, strlen(msg), list);
}

/* "1.3,2" — the sections of a list, for compact comparisons. */
static const char *sections(const struct mime_part_list *list)
{
    static char buf[4096];
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < list->count && n < sizeof buf; i++)
        n +=
            (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", i ? "," : "", list->parts[i].section);
    return buf;
}

/* A growable string for building large test inputs. */
struct sb {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sb *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            abort(); /* test harness only */
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

/* Decodes and checks the result is exactly want (a C string). */
static int decodes_to(const char *raw, size_t rawlen, enum mime_encoding enc, const char *cs,
                      const char *want)
{
    char *out = NULL, err[128];
    size_t outlen = 0;
    int r = mime_decode_part(raw, rawlen, enc, cs, &out, &outlen, err, sizeof err);
    int ok = r == 0 && out != NULL && outlen == strlen(want) && memcmp(out, want, outlen) == 0 &&
             out[outlen] == '\0';
    if (!ok)
        fprintf(stderr, "  decode(%s): r=%d err=\"%s\" got \"%s\" want \"%s\"\n", cs ? cs : "NULL",
                r, r ? err : "", out ? out : "(null)", want);
    free(out);
    return ok;
}

/* ---- tests ---- */

static void test_alternative_with_calendar_part(void)
{
    struct mime_part_list l;
    CHECK(bs_parts(BS_ALT, &l) == 0);
    CHECK_STR(sections(&l), "1.3,2");
    if (l.count == 2) {
        CHECK(l.parts[0].encoding == MIME_ENC_BASE64);
        CHECK_STR(l.parts[0].charset, "utf-8");
        CHECK(l.parts[0].size == 164);
        CHECK(l.parts[1].encoding == MIME_ENC_BASE64);
        CHECK_STR(l.parts[1].charset, "");
    }
    mime_part_list_free(&l);
    CHECK(l.parts == NULL && l.count == 0);

    /* multipart/related and nested alternative/mixed, every calendar type. */
    CHECK(bs_parts(BS_TYPES, &l) == 0);
    CHECK_STR(sections(&l), "1,2,3,4.2.1");
    if (l.count == 4)
        CHECK_STR(l.parts[3].charset, "windows-1252");
    mime_part_list_free(&l);

    /* A top-level single part is section "1". */
    CHECK(bs_parts(BS_SINGLE, &l) == 0);
    CHECK_STR(sections(&l), "1");
    mime_part_list_free(&l);

    /* Appending: a second call adds to what the list holds. */
    CHECK(bs_parts(BS_SINGLE, &l) == 0);
    struct parsed_bs p;
    CHECK(parse_bodystructure(BS_ALT, &p) == 0);
    CHECK(mime_find_calendar_parts(p.body, &l) == 0);
    CHECK_STR(sections(&l), "1,1.3,2");
    parsed_bs_free(&p);
    mime_part_list_free(&l);
}

static void test_base64_and_qp_decoded(void)
{
    char *raw = NULL;
    size_t rawlen = 0;

    /* base64 with line breaks, UTF-8 inside (U+2615 HOT BEVERAGE). */
    CHECK(mime_extract_section(MSG_ALT, strlen(MSG_ALT), "1.3", &raw, &rawlen) == 0);
    CHECK(raw && decodes_to(raw, rawlen, MIME_ENC_BASE64, "utf-8",
                            "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n"
                            "UID:standup@example.org\r\nSUMMARY:Standup \xe2\x98\x95\r\n"
                            "END:VEVENT\r\nEND:VCALENDAR\r\n"));
    free(raw);

    /* quoted-printable ISO-8859-1 inside a forwarded message. */
    CHECK(mime_extract_section(MSG_FWD, strlen(MSG_FWD), "2.2", &raw, &rawlen) == 0);
    CHECK(raw && decodes_to(raw, rawlen, MIME_ENC_QP, "iso-8859-1",
                            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:treffen@example.org\r\n"
                            "SUMMARY:Treffen in M\xc3\xbcnchen\r\nEND:VEVENT\r\nEND:VCALENDAR"));
    free(raw);

    /* QP soft line breaks join lines; base64 junk and missing padding are tolerated. */
    const char qp[] = "SUMMARY:a very long=\r\n line =E2=98=95\r\n";
    CHECK(decodes_to(qp, strlen(qp), MIME_ENC_QP, "UTF-8",
                     "SUMMARY:a very long line \xe2\x98\x95\r\n"));
    const char b64[] = "QkVH\r\nSU46\r\n*VkNB TEVO\r\nREFS";
    CHECK(decodes_to(b64, strlen(b64), MIME_ENC_BASE64, NULL, "BEGIN:VCALENDAR"));
    /* 7bit passes through; empty input gives an empty string. */
    CHECK(decodes_to("BEGIN", 5, MIME_ENC_7BIT, "", "BEGIN"));
    CHECK(decodes_to("", 0, MIME_ENC_BASE64, "utf-8", ""));
    /* A UTF-8 BOM at the start goes, one elsewhere stays. */
    CHECK(decodes_to("\xef\xbb\xbf"
                     "A\xef\xbb\xbf",
                     7, MIME_ENC_7BIT, "utf-8", "A\xef\xbb\xbf"));
    CHECK(decodes_to("77u/QQ==", 8, MIME_ENC_BASE64, "utf-8", "A"));
}

/* Well-formed base64 (decoded without libetpan) and the shapes that are
 * left to libetpan: every padding length, LF-only lines, '=' in the middle,
 * bits left over, too much padding. */
static void test_base64_every_padding_and_fallback(void)
{
    CHECK(decodes_to("QQ==", 4, MIME_ENC_BASE64, NULL, "A"));
    CHECK(decodes_to("QUI=", 4, MIME_ENC_BASE64, NULL, "AB"));
    CHECK(decodes_to("QUJD", 4, MIME_ENC_BASE64, NULL, "ABC"));
    CHECK(decodes_to("QUJD\nREVG\r\nR0g=\r\n", 17, MIME_ENC_BASE64, NULL, "ABCDEFGH"));
    CHECK(decodes_to("QUJD\r\n4piV\r\n", 12, MIME_ENC_BASE64, "utf-8", "ABC\xe2\x98\x95"));
    /* Not strict: libetpan decides, as it always did (missing padding,
     * bits left over). */
    CHECK(decodes_to("QUJ", 3, MIME_ENC_BASE64, NULL, "AB"));
    CHECK(decodes_to("QQ", 2, MIME_ENC_BASE64, NULL, "A"));
    CHECK(decodes_to("QR==", 4, MIME_ENC_BASE64, NULL, "A"));
}

static void test_forwarded_rfc822_sections(void)
{
    struct mime_part_list l;
    CHECK(bs_parts(BS_FWD, &l) == 0);
    CHECK_STR(sections(&l), "2.2,3.1");
    if (l.count == 2) {
        CHECK(l.parts[0].encoding == MIME_ENC_QP);
        CHECK_STR(l.parts[0].charset, "iso-8859-1");
        CHECK(l.parts[0].size == 111);
        CHECK(l.parts[1].encoding == MIME_ENC_7BIT);
        CHECK_STR(l.parts[1].charset, "utf-8");
    }
    mime_part_list_free(&l);

    /* A message that is itself message/rfc822: its single body part is 1.1. */
    CHECK(bs_parts(BS_TOPRFC822, &l) == 0);
    CHECK_STR(sections(&l), "1.1");
    mime_part_list_free(&l);
    CHECK(msg_parts(MSG_TOPRFC822, &l) == 0);
    CHECK_STR(sections(&l), "1.1");
    mime_part_list_free(&l);
}

static void test_octet_stream_named_ics(void)
{
    struct mime_part_list l;
    /* name="Meeting.ICS", filename="other.ics", RFC 2231 filename*=, and an
     * RFC 2047 encoded-word name ("Termin.ics"); agenda.pdf is not calendar. */
    CHECK(bs_parts(BS_OCTET, &l) == 0);
    CHECK_STR(sections(&l), "2,3,4,5");
    if (l.count == 4) {
        CHECK(l.parts[0].encoding == MIME_ENC_BASE64);
        CHECK(l.parts[0].size == 44);
        CHECK_STR(l.parts[1].charset, "");
    }
    mime_part_list_free(&l);
    CHECK(msg_parts(MSG_OCTET, &l) == 0);
    CHECK_STR(sections(&l), "2,3,4,5");
    mime_part_list_free(&l);
}

static void test_no_calendar_part_finds_none(void)
{
    struct mime_part_list l;
    /* image/png "photo.icsx" and text/plain name="ics" are not calendar data. */
    CHECK(bs_parts(BS_NONE, &l) == 0);
    CHECK(l.count == 0 && l.parts == NULL);
    mime_part_list_free(&l);
    CHECK(msg_parts(MSG_NONE, &l) == 0);
    CHECK(l.count == 0);
    mime_part_list_free(&l);
    CHECK(mime_find_calendar_parts(NULL, &l) == 0 && l.count == 0);
    /* ".ics" in other parameters, the description or the subtype name is not a file name. */
    CHECK(bs_parts("* 1 FETCH (UID 1 BODYSTRUCTURE ((\"application\" \"octet-stream\" "
                   "(\"x-name\" \"a.ics\") NIL \"notes.ics\" \"7bit\" 4 NIL (\"attachment\" "
                   "(\"creation-date\" \"b.ics\")) NIL NIL)(\"application\" \"x-ics\" NIL NIL NIL "
                   "\"7bit\" 4 NIL NIL NIL NIL) \"mixed\"))\r\n",
                   &l) == 0);
    CHECK(l.count == 0);
    mime_part_list_free(&l);
    /* Not a message at all, or nothing: no parts, no crash. */
    CHECK(msg_parts("just some text\r\n", &l) == 0 && l.count == 0);
    mime_part_list_free(&l);
    int r = mime_find_calendar_parts_in_message("", 0, &l);
    CHECK((r == 0 || r == -EINVAL) && l.count == 0);
    mime_part_list_free(&l);
    mime_part_list_free(NULL);
}

static void test_latin1_and_cp1252_to_utf8(void)
{
    CHECK(decodes_to("Caf\xe9", 4, MIME_ENC_7BIT, "ISO-8859-1", "Caf\xc3\xa9"));
    CHECK(decodes_to("Caf\xe9", 4, MIME_ENC_7BIT, "latin1", "Caf\xc3\xa9"));
    CHECK(decodes_to("\x80 \x93x\x94", 5, MIME_ENC_7BIT, "windows-1252",
                     "\xe2\x82\xac \xe2\x80\x9cx\xe2\x80\x9d"));
    /* Outlook labels cp1252 as Latin-1: read it the way mail clients do. */
    CHECK(decodes_to("5 \x80", 3, MIME_ENC_7BIT, "iso-8859-1", "5 \xe2\x82\xac"));
    /* QP-encoded Latin-1, charset label in quotes and upper case. */
    CHECK(decodes_to("M=FCnchen", 9, MIME_ENC_QP, "\"ISO-8859-15\"", "M\xc3\xbcnchen"));
    /* A byte cp1252 leaves undefined becomes U+FFFD, the rest survives. */
    CHECK(decodes_to("a\x81z", 3, MIME_ENC_7BIT, "cp1252", "a\xef\xbf\xbdz"));
    /* Invalid UTF-8 is replaced, one U+FFFD per maximal bad subsequence. */
    CHECK(decodes_to("a\xe9z", 3, MIME_ENC_7BIT, "utf-8", "a\xef\xbf\xbdz"));
    CHECK(decodes_to("a\xe2\x98z", 4, MIME_ENC_7BIT, "utf-8", "a\xef\xbf\xbdz"));
    CHECK(decodes_to("\xc0\xaf", 2, MIME_ENC_7BIT, "us-ascii", "\xef\xbf\xbd\xef\xbf\xbd"));
    CHECK(
        decodes_to("\xed\xa0\x80", 3, MIME_ENC_7BIT, NULL, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"));
    CHECK(decodes_to("\xf0\x9f\x8e\x80", 4, MIME_ENC_7BIT, "utf-8", "\xf0\x9f\x8e\x80"));
    CHECK(decodes_to("end\xf0\x9f", 5, MIME_ENC_7BIT, "utf-8", "end\xef\xbf\xbd"));
    /* Multi-byte charsets through iconv, a truncated tail included. */
    CHECK(
        decodes_to("\x93\xfa\x96\x7b", 4, MIME_ENC_7BIT, "Shift_JIS", "\xe6\x97\xa5\xe6\x9c\xac"));
    CHECK(decodes_to("\x93\xfa\x96", 3, MIME_ENC_7BIT, "shift_jis", "\xe6\x97\xa5\xef\xbf\xbd"));
}

static void test_unknown_charset_is_error(void)
{
    const char *bad[] = {"x-no-such-charset", "utf-8//TRANSLIT", "../../etc/passwd",
                         "latin1//IGNORE", "a-very-long-charset-name-that-no-one-has-ever-seen-xx"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out = (char *)1, err[128] = "";
        size_t outlen = 99;
        int r = mime_decode_part("abc", 3, MIME_ENC_7BIT, bad[i], &out, &outlen, err, sizeof err);
        CHECK(r == -EINVAL);
        CHECK(out == NULL && outlen == 0);
        CHECK(strstr(err, "unknown charset") != NULL);
    }
    /* The reason is not required: err may be NULL. */
    char *out = NULL;
    size_t outlen = 0;
    CHECK(mime_decode_part("abc", 3, MIME_ENC_QP, "x-nope", &out, &outlen, NULL, 0) == -EINVAL);
    /* Unprintable bytes of a hostile label never reach the message. */
    char err[128];
    CHECK(mime_decode_part("abc", 3, MIME_ENC_7BIT, "x\x1b[2J", &out, &outlen, err, sizeof err) ==
          -EINVAL);
    CHECK(strchr(err, '\x1b') == NULL);
}

static void test_nul_bytes_dropped(void)
{
    /* A broken QP escape decodes to NUL in libetpan: it must not survive. */
    CHECK(decodes_to("a=ZZb=00c", 9, MIME_ENC_QP, "utf-8", "abc"));
    CHECK(decodes_to("x\0y\0", 4, MIME_ENC_7BIT, NULL, "xy"));
    CHECK(decodes_to("YQBi", 4, MIME_ENC_BASE64, "utf-8", "ab")); /* "a\0b" */
    /* Latin-1 with a NUL, and UTF-16 whose NUL bytes are not NUL characters. */
    CHECK(decodes_to("\xe9\0\xe9", 3, MIME_ENC_7BIT, "iso-8859-1", "\xc3\xa9\xc3\xa9"));
    CHECK(decodes_to("\xff\xfe"
                     "A\0\xfc\0"
                     "\0\0B\0",
                     10, MIME_ENC_7BIT, "UTF-16",
                     "A\xc3\xbc"
                     "B"));
    CHECK(decodes_to("\xff\xfe"
                     "A\0",
                     4, MIME_ENC_7BIT, "utf-16le", "A"));
}

/* A BODYSTRUCTURE line with a text/calendar leaf inside `levels` multiparts. */
static char *nested_bs(int levels)
{
    struct sb b = {0};
    sb_add(&b, "* 1 FETCH (UID 1 BODYSTRUCTURE ");
    for (int i = 0; i < levels; i++)
        sb_add(&b, "(");
    sb_add(&b,
           "(\"text\" \"calendar\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 8 1 NIL NIL NIL NIL)");
    for (int i = 0; i < levels; i++)
        sb_add(&b, " \"mixed\")");
    sb_add(&b, ")\r\n");
    return b.p;
}

/* The same shape as a whole message, one boundary per level. */
static char *nested_msg(int levels)
{
    struct sb b = {0};
    char line[128];
    sb_add(&b, "From: a@example.org\r\nMIME-Version: 1.0\r\n");
    for (int i = 0; i < levels; i++) {
        snprintf(line, sizeof line,
                 "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i);
        sb_add(&b, line);
    }
    sb_add(&b, "Content-Type: text/calendar\r\n\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n");
    for (int i = levels - 1; i >= 0; i--) {
        snprintf(line, sizeof line, "--b%d--\r\n", i);
        sb_add(&b, line);
    }
    return b.p;
}

/* "1.1.1..." with n components. */
static const char *ones(int n)
{
    static char buf[256];
    size_t k = 0;
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s1", i ? "." : "");
    buf[k] = '\0';
    return buf;
}

static void test_depth_limit(void)
{
    struct mime_part_list l;
    /* The body is depth 1, its children depth 2: a leaf inside 31 multiparts
     * is at MIME_MAX_DEPTH and found, one more level and it is ignored. */
    int found_at = MIME_MAX_DEPTH - 1, lost_at = MIME_MAX_DEPTH;
    char *s = nested_bs(found_at);
    CHECK(bs_parts(s, &l) == 0);
    CHECK_STR(sections(&l), ones(found_at));
    mime_part_list_free(&l);
    free(s);
    s = nested_msg(found_at);
    CHECK(msg_parts(s, &l) == 0);
    CHECK_STR(sections(&l), ones(found_at));
    mime_part_list_free(&l);
    free(s);

    s = nested_bs(lost_at);
    CHECK(bs_parts(s, &l) == 0);
    CHECK(l.count == 0);
    mime_part_list_free(&l);
    free(s);
    s = nested_msg(lost_at);
    CHECK(msg_parts(s, &l) == 0);
    CHECK(l.count == 0);
    mime_part_list_free(&l);
    free(s);

    /* Far deeper than any limit: no crash, nothing found. */
    s = nested_msg(2000);
    CHECK(msg_parts(s, &l) == 0 && l.count == 0);
    mime_part_list_free(&l);
    free(s);

    /* At most MIME_MAX_PARTS calendar parts per message. */
    struct sb b = {0}, m = {0};
    sb_add(&b, "* 1 FETCH (UID 1 BODYSTRUCTURE (");
    sb_add(&m, "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n");
    for (int i = 0; i < MIME_MAX_PARTS + 10; i++) {
        sb_add(&b, "(\"application\" \"ics\" NIL NIL NIL \"7bit\" 4 NIL NIL NIL NIL)");
        sb_add(&m, "--x\r\nContent-Type: application/ics\r\n\r\nBEGIN\r\n");
    }
    sb_add(&b, " \"mixed\"))\r\n");
    sb_add(&m, "--x--\r\n");
    CHECK(bs_parts(b.p, &l) == 0);
    CHECK(l.count == MIME_MAX_PARTS);
    CHECK(l.count == MIME_MAX_PARTS && strcmp(l.parts[MIME_MAX_PARTS - 1].section, "64") == 0);
    mime_part_list_free(&l);
    CHECK(msg_parts(m.p, &l) == 0);
    CHECK(l.count == MIME_MAX_PARTS);
    mime_part_list_free(&l);
    free(b.p);
    free(m.p);
}

/* A copy of s with every CRLF turned into LF; the caller frees it. */
static char *lf_only(const char *s)
{
    char *out = malloc(strlen(s) + 1);
    size_t n = 0;
    if (out == NULL)
        abort(); /* test harness only */
    for (; *s; s++)
        if (!(s[0] == '\r' && s[1] == '\n'))
            out[n++] = *s;
    out[n] = '\0';
    return out;
}

static void test_message_walk_matches_bodystructure_sections(void)
{
    const char *bs[] = {BS_ALT, BS_FWD, BS_NONE, BS_OCTET, BS_SINGLE, BS_TOPRFC822, BS_TYPES};
    const char *msg[] = {MSG_ALT,    MSG_FWD,       MSG_NONE, MSG_OCTET,
                         MSG_SINGLE, MSG_TOPRFC822, MSG_TYPES};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) {
        struct mime_part_list a, b;
        CHECK(bs_parts(bs[i], &a) == 0);
        CHECK(msg_parts(msg[i], &b) == 0);
        CHECK(a.count == b.count);
        for (size_t k = 0; k < a.count && k < b.count; k++) {
            CHECK_STR(b.parts[k].section, a.parts[k].section);
            CHECK(b.parts[k].encoding == a.parts[k].encoding);
            CHECK_STR(b.parts[k].charset, a.parts[k].charset);
            CHECK(b.parts[k].size == a.parts[k].size);
        }
        /* mbsync and offlineimap store messages with bare LF line ends. */
        char *lf = lf_only(msg[i]);
        struct mime_part_list c;
        CHECK(msg_parts(lf, &c) == 0);
        CHECK(c.count == a.count);
        for (size_t k = 0; k < a.count && k < c.count; k++) {
            CHECK_STR(c.parts[k].section, a.parts[k].section);
            CHECK(c.parts[k].encoding == a.parts[k].encoding);
            CHECK_STR(c.parts[k].charset, a.parts[k].charset);
        }
        mime_part_list_free(&c);
        free(lf);
        mime_part_list_free(&a);
        mime_part_list_free(&b);
    }
}

/* Extracts SECTION of MSG and compares it with what Dovecot answered. */
static int extracts_to(const char *msg, const char *section, const char *want)
{
    char *out = NULL;
    size_t outlen = 0;
    int r = mime_extract_section(msg, strlen(msg), section, &out, &outlen);
    int ok = r == 0 && outlen == strlen(want) && memcmp(out, want, outlen) == 0;
    if (!ok)
        fprintf(stderr, "  section %s: r=%d len=%zu want %zu\n", section, r, outlen, strlen(want));
    free(out);
    return ok;
}

static int extract_fails(const char *msg, const char *section)
{
    char *out = (char *)1;
    size_t outlen = 7;
    int r = mime_extract_section(msg, strlen(msg), section, &out, &outlen);
    return out == NULL && outlen == 0 ? r : 0;
}

static void test_extract_section(void)
{
    const char cal[] = "BEGIN:VCALENDAR\r\nEND:VCALENDAR";
    CHECK(extracts_to(MSG_ALT, "1.1", "You are invited."));
    CHECK(extracts_to(MSG_ALT, "1.2", "<p>You are invited.</p>"));
    CHECK(extracts_to(MSG_ALT, "2",
                      "QkVHSU46VkNBTEVOREFSDQpNRVRIT0Q6UkVRVUVTVA0KQkVHSU46VkVWRU5UDQ"
                      "pVSUQ6c3RhbmR1\r\ncEBleGFtcGxlLm9yZw0KU1VNTUFSWTpTdGFuZHVwIOKY"
                      "lQ0KRU5EOlZFVkVOVA0KRU5EOlZDQUxF\r\nTkRBUg0K"));
    CHECK(extracts_to(MSG_FWD, "2.1", "Gr=FC=DFe"));
    CHECK(extracts_to(MSG_FWD, "3.1",
                      "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:single@example.org\r\n"
                      "END:VEVENT\r\nEND:VCALENDAR"));
    CHECK(extracts_to(MSG_OCTET, "3", cal));
    CHECK(extracts_to(MSG_OCTET, "6", "JVBERi0xLjQK"));
    CHECK(extracts_to(MSG_SINGLE, "1", "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"));
    CHECK(extracts_to(MSG_TOPRFC822, "1.1", "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"));
    CHECK(extracts_to(MSG_TYPES, "4.2.1", cal));
    CHECK(extracts_to(MSG_TYPES, "4.1", "x"));

    /* A message/rfc822 part is the embedded message, headers included. */
    char *out = NULL;
    size_t outlen = 0;
    CHECK(mime_extract_section(MSG_FWD, strlen(MSG_FWD), "3", &out, &outlen) == 0);
    CHECK(out && outlen == 191 && strncmp(out, "From: erin@example.org\r\n", 24) == 0);
    free(out);

    /* Every section either walker reports can be extracted, with the announced size. */
    const char *msgs[] = {MSG_ALT, MSG_FWD, MSG_OCTET, MSG_SINGLE, MSG_TOPRFC822, MSG_TYPES};
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        struct mime_part_list l;
        CHECK(msg_parts(msgs[i], &l) == 0 && l.count > 0);
        for (size_t k = 0; k < l.count; k++) {
            CHECK(mime_extract_section(msgs[i], strlen(msgs[i]), l.parts[k].section, &out,
                                       &outlen) == 0);
            CHECK(outlen == l.parts[k].size);
            free(out);
        }
        mime_part_list_free(&l);
    }

    /* No such part, and sections that are not part numbers. */
    CHECK(extract_fails(MSG_ALT, "3") == -ENOENT);
    CHECK(extract_fails(MSG_ALT, "1.4") == -ENOENT);
    CHECK(extract_fails(MSG_ALT, "1.1.1") == -ENOENT);
    CHECK(extract_fails(MSG_FWD, "3.2") == -ENOENT);
    CHECK(extract_fails(MSG_SINGLE, "2") == -ENOENT);
    CHECK(extract_fails(MSG_ALT, "") == -EINVAL);
    CHECK(extract_fails(MSG_ALT, "0") == -EINVAL);
    CHECK(extract_fails(MSG_ALT, "1..2") == -EINVAL);
    CHECK(extract_fails(MSG_ALT, "1.") == -EINVAL);
    CHECK(extract_fails(MSG_ALT, "1.TEXT") == -EINVAL);
    CHECK(extract_fails(MSG_ALT, "-1") == -EINVAL);
    CHECK(extract_fails(MSG_ALT, "99999999999999999999") == -EINVAL);
}

int main(void)
{
    RUN(test_alternative_with_calendar_part);
    RUN(test_base64_and_qp_decoded);
    RUN(test_base64_every_padding_and_fallback);
    RUN(test_forwarded_rfc822_sections);
    RUN(test_octet_stream_named_ics);
    RUN(test_no_calendar_part_finds_none);
    RUN(test_latin1_and_cp1252_to_utf8);
    RUN(test_unknown_charset_is_error);
    RUN(test_nul_bytes_dropped);
    RUN(test_depth_limit);
    RUN(test_message_walk_matches_bodystructure_sections);
    RUN(test_extract_section);
    return UNIT_DONE();
}
