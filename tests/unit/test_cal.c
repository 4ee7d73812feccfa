/*
 * test_cal.c — calendar parts in, merged event files out: parsing
 * (SPEC §3), scheduling semantics (RFC 5546) and the output format (SPEC §2).
 */
#include "cal.h"
#include "test_cal_util.h"
#include "unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define T0 1767225600 /* 2026-01-01T00:00:00Z */

/* One VEVENT in a VCALENDAR; method and rid_line may be "" . */
static char *ev(const char *method, const char *uid, const char *rid_line, int seq,
                const char *stamp, const char *summary)
{
    char *buf = malloc(2048);
    snprintf(buf, 2048,
             "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//test//test//EN\n%s%s%s"
             "BEGIN:VEVENT\nUID:%s\n%s%sSEQUENCE:%d\nDTSTAMP:%s\n"
             "DTSTART:20260310T100000Z\nDTEND:20260310T110000Z\nSUMMARY:%s\n"
             "END:VEVENT\nEND:VCALENDAR\n",
             *method ? "METHOD:" : "", method, *method ? "\n" : "", uid, rid_line,
             *rid_line ? "\n" : "", seq, stamp, summary);
    return buf;
}

static struct cal_versions *msg_ev(const char *mbox, uint32_t uid, int64_t date, const char *method,
                                   const char *evuid, const char *rid, int seq, const char *stamp,
                                   const char *summary)
{
    char *ics = ev(method, evuid, rid, seq, stamp, summary);
    struct cal_versions *v = tc_msg(mbox, uid, date, ics, NULL, NULL);
    free(ics);
    return v;
}

static void test_bare_vevent_is_read(void)
{
    struct cal_stats st = {0};
    struct cal_versions *m = tc_file("INBOX", 1, T0, "bare_vevent.ics", NULL, &st);
    CHECK(cal_versions_count(m) == 1);
    CHECK(st.parts == 1 && st.parts_bad == 0 && st.versions == 1);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    CHECK(r.nevents == 1);
    const struct tc_event *e = tc_event(&r, "bare@example.org");
    CHECK(e != NULL);
    if (e) {
        CHECK(tc_format_ok(e->data, e->len));
        CHECK(tc_has(e->data, e->len, "\r\nSUMMARY:Bare event\r\n"));
        CHECK(tc_has(e->data, e->len, "\r\nDTSTART;VALUE=DATE:20260301\r\n"));
        CHECK(e->mtime == T0);
    }
    CHECK(tc_format_ok(r.merged, r.merged_len));
    tc_result_free(&r);
    cal_versions_free(m);
}

static void test_bare_vevent_with_bare_vtimezone(void)
{
    /* No VCALENDAR at all, but the zone is given next to the event. */
    const char *ics = "BEGIN:VTIMEZONE\nTZID:Lab Zone\nBEGIN:STANDARD\n"
                      "DTSTART:19700101T000000\nTZOFFSETFROM:+0530\nTZOFFSETTO:+0530\n"
                      "TZNAME:LAB\nEND:STANDARD\nEND:VTIMEZONE\n"
                      "BEGIN:VEVENT\nUID:barez@x\nDTSTAMP:20260101T000000Z\n"
                      "RECURRENCE-ID;TZID=Lab Zone:20260310T103000\n"
                      "DTSTART;TZID=Lab Zone:20260310T113000\nEND:VEVENT\n";
    struct cal_stats st = {0};
    struct cal_versions *m = tc_msg("INBOX", 1, T0, ics, NULL, &st);
    CHECK(cal_versions_count(m) == 1 && st.warnings == 0);
    /* A cancel of that occurrence written in UTC finds it (10:30 +0530). */
    struct cal_versions *c = msg_ev("INBOX", 2, T0 + 1, "CANCEL", "barez@x",
                                    "RECURRENCE-ID:20260310T050000Z", 1, "20260102T000000Z", "x");
    struct cal_versions *all[2] = {m, c};
    struct tc_result r;
    CHECK(tc_resolve(all, 1, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1 && tc_has(r.events[0].data, r.events[0].len, "TZNAME:LAB"));
    tc_result_free(&r);
    CHECK(tc_resolve(all, 2, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 0);
    tc_result_free(&r);
    tc_free_all(all, 2);
}

static void test_two_vcalendars_in_one_part(void)
{
    struct cal_versions *m = tc_file("INBOX", 1, T0, "two_calendars.ics", NULL, NULL);
    CHECK(cal_versions_count(m) == 2);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    CHECK(r.nevents == 2);
    if (r.nevents == 2) {
        CHECK_STR(r.events[0].uid, "first@example.org");
        CHECK_STR(r.events[1].uid, "second@example.org");
    }
    CHECK(tc_count(r.merged, r.merged_len, "BEGIN:VEVENT") == 2);
    CHECK(tc_count(r.merged, r.merged_len, "BEGIN:VCALENDAR") == 1);
    CHECK(tc_pos(r.merged, r.merged_len, "SUMMARY:First") <
          tc_pos(r.merged, r.merged_len, "SUMMARY:Second"));
    tc_result_free(&r);
    cal_versions_free(m);
}

static void test_folded_lines_crlf_and_no_final_newline(void)
{
    const char *ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:fold@example.org\r\n"
                      "DTSTAMP:20260101T000000Z\r\nDTSTART:20260310T100000Z\r\n"
                      "SUMMARY:A summary that was\r\n  folded by the sender\r\n"
                      "END:VEVENT\r\nEND:VCALENDAR";
    struct cal_versions *m = tc_msg("INBOX", 1, T0, ics, NULL, NULL);
    CHECK(cal_versions_count(m) == 1);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1);
    if (r.nevents == 1)
        CHECK(tc_has(r.events[0].data, r.events[0].len,
                     "SUMMARY:A summary that was folded by the sender\r\n"));
    tc_result_free(&r);
    cal_versions_free(m);
}

static void test_duplicate_in_one_message_counts_once(void)
{
    /* Google's inline part and invite.ics; Exchange rewrote one of them:
     * other line ends, property order and an extra property. */
    const char *inline_part =
        "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:dup@example.org\r\n"
        "SEQUENCE:3\r\nDTSTAMP:20260101T100000Z\r\nDTSTART:20260310T100000Z\r\n"
        "SUMMARY:Dup\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    const char *attachment = "BEGIN:VCALENDAR\nMETHOD:REQUEST\nBEGIN:VEVENT\n"
                             "DTSTART:20260310T100000Z\nSUMMARY:Dup\nUID:dup@example.org\n"
                             "DTSTAMP:20260101T100000Z\nSEQUENCE:3\nX-MS-OLK-SENDER:x\n"
                             "END:VEVENT\nEND:VCALENDAR\n";
    struct cal_stats st = {0};
    struct cal_versions *m = tc_msg("INBOX", 1, T0, inline_part, NULL, &st);
    char err[128];
    CHECK(cal_versions_add_part(m, attachment, strlen(attachment), NULL, &st, err, sizeof err) ==
          0);
    CHECK(cal_versions_count(m) == 1);
    CHECK(st.parts == 2 && st.versions == 1);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    CHECK(r.nevents == 1);
    CHECK(tc_count(r.merged, r.merged_len, "BEGIN:VEVENT") == 1);
    tc_result_free(&r);
    cal_versions_free(m);
}

/* The same bytes twice in one message (Google: inline part and invite.ics)
 * give what parsing them twice gives: counted, nothing added, no warning
 * counted again; a part that failed to parse fails again. */
static void test_identical_part_twice_same_result(void)
{
    const char *part =
        "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:same@example.org\r\n"
        "SEQUENCE:1\r\nDTSTAMP:20260101T100000Z\r\n"
        "DTSTART;TZID=Nowhere/Unknown:20260310T100000\r\n"
        "SUMMARY:Same\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    const char *bad = "this is not a calendar";
    struct cal_stats st = {0};
    struct cal_versions *m = tc_msg("INBOX", 1, T0, part, NULL, &st);
    char err[128];
    CHECK(st.parts == 1 && st.versions == 1);
    unsigned warnings = st.warnings;
    CHECK(cal_versions_add_part(m, part, strlen(part), NULL, &st, err, sizeof err) == 0);
    CHECK(st.parts == 2 && st.versions == 1 && st.warnings == warnings && st.parts_bad == 0);
    CHECK(cal_versions_add_part(m, bad, strlen(bad), NULL, &st, err, sizeof err) == -EINVAL);
    CHECK(cal_versions_add_part(m, bad, strlen(bad), NULL, &st, err, sizeof err) == -EINVAL);
    CHECK(st.parts == 4 && st.parts_bad == 2 && cal_versions_count(m) == 1);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1 && tc_count(r.events[0].data, r.events[0].len, "BEGIN:VEVENT") == 1);
    tc_result_free(&r);
    cal_versions_free(m);
}

/* After cal_versions_seal() the digests are gone: the same part is parsed
 * again, and its component, already kept, still adds nothing. */
static void test_sealed_message_forgets_its_part_digests(void)
{
    const char *part = "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n"
                       "UID:sealed@example.org\r\nDTSTAMP:20260101T100000Z\r\n"
                       "DTSTART:20260310T100000Z\r\nSUMMARY:Sealed\r\nEND:VEVENT\r\n"
                       "END:VCALENDAR\r\n";
    struct cal_stats st = {0};
    struct cal_versions *m = tc_msg("INBOX", 1, T0, part, NULL, &st);
    char err[128];
    CHECK(cal_versions_add_part(m, part, strlen(part), NULL, &st, err, sizeof err) == 0);
    CHECK(cal_versions_count(m) == 1);
    cal_versions_seal(m);
    cal_versions_seal(m); /* twice is fine */
    CHECK(cal_versions_add_part(m, part, strlen(part), NULL, &st, err, sizeof err) == 0);
    CHECK(cal_versions_count(m) == 1 && st.parts == 3 && st.parts_bad == 0);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1 && tc_count(r.events[0].data, r.events[0].len, "BEGIN:VEVENT") == 1);
    tc_result_free(&r);
    cal_versions_seal(NULL);
    cal_versions_free(m);
}

/* The SUMMARY the single event of r ends up with. */
static int summary_is(const struct tc_result *r, const char *want)
{
    char line[128];
    snprintf(line, sizeof line, "\r\nSUMMARY:%s\r\n", want);
    return r->nevents == 1 && tc_has(r->events[0].data, r->events[0].len, line);
}

static void test_higher_sequence_wins(void)
{
    struct cal_versions *m[3] = {
        msg_ev("INBOX", 3, T0 + 300, "REQUEST", "s@x", "", 0, "20260103T000000Z", "zero"),
        msg_ev("INBOX", 1, T0 + 100, "REQUEST", "s@x", "", 2, "20260101T000000Z", "two"),
        msg_ev("INBOX", 2, T0 + 200, "REQUEST", "s@x", "", 1, "20260102T000000Z", "one"),
    };
    struct tc_result r;
    CHECK(tc_resolve(m, 3, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(summary_is(&r, "two"));
    /* mtime is the message the file holds, not the newest one seen. */
    CHECK(r.nevents == 1 && r.events[0].mtime == T0 + 100);
    tc_result_free(&r);
    tc_free_all(m, 3);
}

static void test_dtstamp_breaks_sequence_tie(void)
{
    struct cal_versions *m[2] = {
        msg_ev("INBOX", 2, T0 + 200, "REQUEST", "d@x", "", 1, "20260101T000000Z", "old"),
        msg_ev("INBOX", 1, T0 + 100, "REQUEST", "d@x", "", 1, "20260105T000000Z", "new"),
    };
    struct tc_result r;
    CHECK(tc_resolve(m, 2, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(summary_is(&r, "new"));
    tc_result_free(&r);
    tc_free_all(m, 2);
}

static void test_later_message_breaks_tie(void)
{
    const char *st = "20260101T000000Z";
    struct cal_versions *a[2] = {
        msg_ev("INBOX", 9, T0 + 100, "REQUEST", "l@x", "", 1, st, "earlier"),
        msg_ev("INBOX", 1, T0 + 200, "REQUEST", "l@x", "", 1, st, "later"),
    };
    struct tc_result r;
    CHECK(tc_resolve(a, 2, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(summary_is(&r, "later"));
    tc_result_free(&r);
    tc_free_all(a, 2);

    /* Same INTERNALDATE: the higher IMAP UID; then the mailbox name. */
    struct cal_versions *b[2] = {
        msg_ev("INBOX", 5, T0, "REQUEST", "l@x", "", 1, st, "uid5"),
        msg_ev("INBOX", 4, T0, "REQUEST", "l@x", "", 1, st, "uid4"),
    };
    CHECK(tc_resolve(b, 2, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(summary_is(&r, "uid5"));
    tc_result_free(&r);
    tc_free_all(b, 2);
    struct cal_versions *c[2] = {
        msg_ev("Archive", 5, T0, "REQUEST", "l@x", "", 1, st, "archive"),
        msg_ev("INBOX", 5, T0, "REQUEST", "l@x", "", 1, st, "inbox"),
    };
    CHECK(tc_resolve(c, 2, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(summary_is(&r, "inbox"));
    tc_result_free(&r);
    tc_free_all(c, 2);
}

static void test_cancel_removes_event(void)
{
    struct cal_versions *m[4] = {
        msg_ev("INBOX", 1, T0 + 100, "REQUEST", "c@x", "", 0, "20260101T000000Z", "meeting"),
        msg_ev("INBOX", 2, T0 + 150, "REQUEST", "c@x", "RECURRENCE-ID:20260317T100000Z", 0,
               "20260101T000000Z", "moved"),
        msg_ev("INBOX", 3, T0 + 200, "CANCEL", "c@x", "", 1, "20260102T000000Z", "meeting"),
        msg_ev("INBOX", 4, T0 + 50, "REQUEST", "other@x", "", 0, "20260101T000000Z", "other"),
    };
    struct tc_result r;
    CHECK(tc_resolve(m, 4, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    CHECK(r.nevents == 1);
    CHECK(tc_event(&r, "c@x") == NULL);
    CHECK(tc_count(r.merged, r.merged_len, "BEGIN:VEVENT") == 1);
    CHECK(!tc_has(r.merged, r.merged_len, "UID:c@x"));
    tc_result_free(&r);

    /* An occurrence re-sent after the cancel (higher SEQUENCE) stays, as
     * an event of its own; the cancel changed that file, so it dates it. */
    struct cal_versions *later =
        msg_ev("INBOX", 5, T0 + 150, "REQUEST", "c@x", "RECURRENCE-ID:20260324T100000Z", 2,
               "20260101T000000Z", "re-invited");
    struct cal_versions *all[5] = {m[0], m[1], m[2], m[3], later};
    CHECK(tc_resolve(all, 5, NULL, CAL_WANT_EVENTS, &r) == 0);
    const struct tc_event *e = tc_event(&r, "c@x");
    CHECK(e != NULL);
    if (e) {
        CHECK(tc_count(e->data, e->len, "BEGIN:VEVENT") == 1);
        CHECK(tc_has(e->data, e->len, "SUMMARY:re-invited"));
        CHECK(e->mtime == T0 + 200);
    }
    tc_result_free(&r);
    tc_free_all(all, 5);
}

static void test_cancel_loses_to_newer_request(void)
{
    struct cal_versions *m[2] = {
        msg_ev("INBOX", 1, T0 + 100, "CANCEL", "n@x", "", 1, "20260102T000000Z", "x"),
        msg_ev("INBOX", 2, T0 + 200, "REQUEST", "n@x", "", 2, "20260103T000000Z", "back"),
    };
    struct tc_result r;
    CHECK(tc_resolve(m, 2, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(summary_is(&r, "back"));
    tc_result_free(&r);
    tc_free_all(m, 2);
}

/* Where in r the segment starting with prefix is, or NULL. */
static const struct iovec *rope_seg(const struct cal_rope *r, const char *prefix)
{
    for (size_t i = 0; i < r->nseg; i++)
        if (r->seg[i].iov_len >= strlen(prefix) &&
            memcmp(r->seg[i].iov_base, prefix, strlen(prefix)) == 0)
            return &r->seg[i];
    return NULL;
}

/*
 * Files are ropes over the versions' texts: a component is the same
 * memory in its event file and in merged.ics (no copies), and each rope
 * holds the versions it points into, so it reads the same after the
 * caller dropped them (ASan and valgrind see it if not). The EXDATE'd
 * master is new text, owned by the rope.
 */
static void test_ropes_borrow_and_hold_their_versions(void)
{
    struct cal_versions *m[3] = {
        tc_file("INBOX", 1, T0 + 100, "google_series.ics", NULL, NULL),
        tc_file("INBOX", 2, T0 + 500, "google_cancel_occurrence.ics", NULL, NULL),
        msg_ev("INBOX", 3, T0 + 300, "REQUEST", "plain@x", "", 0, "20260102T000000Z", "plain"),
    };
    struct tc_result ref;
    struct cal_result r;
    CHECK(tc_resolve(m, 3, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &ref) == 0);
    CHECK(cal_resolve(m, 3, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    tc_free_all(m, 3);
    CHECK(r.nevents == 2 && ref.nevents == 2);
    for (size_t i = 0; i < r.nevents && i < ref.nevents; i++) {
        char *flat = cal_rope_flatten(&r.events[i].bytes);
        CHECK(flat && r.events[i].bytes.len == ref.events[i].len &&
              memcmp(flat, ref.events[i].data, ref.events[i].len) == 0);
        free(flat);
    }
    char *merged = cal_rope_flatten(&r.merged);
    CHECK(merged && r.merged.len == ref.merged_len &&
          memcmp(merged, ref.merged, ref.merged_len) == 0);
    free(merged);
    const struct iovec *in_file =
        r.nevents == 2 ? rope_seg(&r.events[0].bytes, "BEGIN:VEVENT") : NULL;
    const struct iovec *in_merged = rope_seg(&r.merged, "BEGIN:VEVENT");
    CHECK(in_file && in_merged && in_file->iov_base == in_merged->iov_base);
    cal_result_free(&r);
    tc_result_free(&ref);
}

static void test_cancel_removes_occurrence(void)
{
    struct cal_versions *m[2] = {
        tc_file("INBOX", 1, T0 + 100, "google_series.ics", NULL, NULL),
        tc_file("INBOX", 2, T0 + 500, "google_cancel_occurrence.ics", NULL, NULL),
    };
    CHECK(cal_versions_count(m[0]) == 2 && cal_versions_count(m[1]) == 1);
    struct tc_result r;
    CHECK(tc_resolve(m, 2, NULL, CAL_WANT_EVENTS, &r) == 0);
    const struct tc_event *e = tc_event(&r, "standup-7f3a9c@google.com");
    CHECK(r.nevents == 1 && e);
    if (e) {
        CHECK(tc_format_ok(e->data, e->len));
        CHECK(tc_has(e->data, e->len, "\r\nEXDATE;TZID=Europe/Berlin:20260119T093000\r\n"));
        CHECK(tc_count(e->data, e->len, "BEGIN:VEVENT") == 2); /* master + moved one */
        CHECK(!tc_has(e->data, e->len, "STATUS:CANCELLED"));
        CHECK(e->mtime == T0 + 500); /* the cancel changed the file */
    }
    tc_result_free(&r);

    /* Cancelling the moved occurrence drops the override too. */
    struct cal_versions *c =
        msg_ev("INBOX", 3, T0 + 600, "CANCEL", "standup-7f3a9c@google.com",
               "RECURRENCE-ID;TZID=Europe/Berlin:20260112T093000", 2, "20260116T000000Z", "x");
    struct cal_versions *all[3] = {m[0], m[1], c};
    CHECK(tc_resolve(all, 3, NULL, CAL_WANT_EVENTS, &r) == 0);
    e = tc_event(&r, "standup-7f3a9c@google.com");
    CHECK(e != NULL);
    if (e) {
        CHECK(tc_count(e->data, e->len, "BEGIN:VEVENT") == 1);
        CHECK(!tc_has(e->data, e->len, "RECURRENCE-ID"));
        CHECK(tc_has(e->data, e->len, "EXDATE;TZID=Europe/Berlin:20260112T093000\r\n"));
        CHECK(tc_has(e->data, e->len, "EXDATE;TZID=Europe/Berlin:20260119T093000\r\n"));
        CHECK(tc_count(e->data, e->len, "BEGIN:VTIMEZONE") == 1);
    }
    tc_result_free(&r);

    /* The organizer's updated master already excludes it: no second EXDATE. */
    const char *upd = "BEGIN:VCALENDAR\nMETHOD:REQUEST\nBEGIN:VEVENT\nUID:ex2@x\n"
                      "DTSTAMP:20260120T000000Z\nSEQUENCE:2\nDTSTART:20260105T093000Z\n"
                      "RRULE:FREQ=WEEKLY\nEXDATE:20260119T093000Z\nEND:VEVENT\nEND:VCALENDAR\n";
    struct cal_versions *twice[2] = {
        tc_msg("INBOX", 10, T0 + 800, upd, NULL, NULL),
        msg_ev("INBOX", 11, T0 + 700, "CANCEL", "ex2@x", "RECURRENCE-ID:20260119T093000Z", 1,
               "20260115T000000Z", "x"),
    };
    CHECK(tc_resolve(twice, 2, NULL, CAL_WANT_EVENTS, &r) == 0);
    e = tc_event(&r, "ex2@x");
    CHECK(e && tc_count(e->data, e->len, "EXDATE:20260119T093000Z\r\n") == 1);
    tc_result_free(&r);
    tc_free_all(twice, 2);
    tc_free_all(all, 3);
}

static void test_reply_creates_nothing(void)
{
    const char *methods[] = {"REPLY", "REFRESH", "COUNTER", "DECLINECOUNTER"};
    for (size_t i = 0; i < 4; i++) {
        char *ics = ev(methods[i], "r@x", "", 0, "20260101T000000Z", "answer");
        struct cal_stats st = {0};
        struct cal_versions *m = tc_msg("INBOX", 1, T0, NULL, NULL, NULL);
        char err[64];
        CHECK(cal_versions_add_part(m, ics, strlen(ics), NULL, &st, err, sizeof err) == 0);
        CHECK(cal_versions_count(m) == 0 && st.parts_bad == 0);
        struct tc_result r;
        CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
        CHECK(r.nevents == 0 && !tc_has(r.merged, r.merged_len, "VEVENT"));
        CHECK(tc_format_ok(r.merged, r.merged_len));
        tc_result_free(&r);
        cal_versions_free(m);
        free(ics);
    }
}

static void test_override_without_master_is_own_file_then_joins(void)
{
    struct cal_versions *m[2] = {
        msg_ev("INBOX", 2, T0 + 200, "REQUEST", "o@x", "RECURRENCE-ID:20260317T100000Z", 3,
               "20260105T000000Z", "just this one"),
        NULL,
    };
    struct tc_result r;
    CHECK(tc_resolve(m, 1, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1);
    if (r.nevents == 1) {
        CHECK_STR(r.events[0].uid, "o@x");
        CHECK(tc_count(r.events[0].data, r.events[0].len, "BEGIN:VEVENT") == 1);
        CHECK(tc_has(r.events[0].data, r.events[0].len, "RECURRENCE-ID:20260317T100000Z"));
    }
    tc_result_free(&r);

    /* The master arrives later (and is older by SEQUENCE: no matter, another key). */
    char *ics = ev("REQUEST", "o@x", "", 0, "20260101T000000Z", "series");
    char *rr = strstr(ics, "SUMMARY:");
    char *full = malloc(4096);
    snprintf(full, 4096, "%.*sRRULE:FREQ=WEEKLY;COUNT=5\n%s", (int)(rr - ics), ics, rr);
    m[1] = tc_msg("INBOX", 3, T0 + 300, full, NULL, NULL);
    CHECK(tc_resolve(m, 2, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1);
    if (r.nevents == 1) {
        const char *d = r.events[0].data;
        size_t n = r.events[0].len;
        CHECK(tc_count(d, n, "BEGIN:VEVENT") == 2);
        CHECK(tc_pos(d, n, "SUMMARY:series") < tc_pos(d, n, "SUMMARY:just this one"));
        CHECK(r.events[0].mtime == T0 + 300);
    }
    tc_result_free(&r);
    tc_free_all(m, 2);
    free(ics);
    free(full);
}

/* A minimal VTIMEZONE with a fixed offset and a marker TZNAME. */
static void vtz(char *out, size_t n, const char *tzid, const char *off, const char *name)
{
    snprintf(out, n,
             "BEGIN:VTIMEZONE\nTZID:%s\nBEGIN:STANDARD\nDTSTART:19700101T000000\n"
             "TZOFFSETFROM:%s\nTZOFFSETTO:%s\nTZNAME:%s\nEND:STANDARD\nEND:VTIMEZONE\n",
             tzid, off, off, name);
}

static void test_vtimezone_exactly_those_used(void)
{
    char a[512], b[512], c[512], u[512], ics[4096];
    vtz(a, sizeof a, "Zone A", "+0300", "ZA");
    vtz(b, sizeof b, "Zone B", "+0400", "ZB");
    vtz(c, sizeof c, "Zone C", "+0500", "ZC");
    vtz(u, sizeof u, "Unused Zone", "+0600", "ZU");
    snprintf(ics, sizeof ics,
             "BEGIN:VCALENDAR\nVERSION:2.0\nMETHOD:REQUEST\n%s%s%s%s"
             "BEGIN:VEVENT\nUID:tz@x\nDTSTAMP:20260101T000000Z\n"
             "DTSTART;TZID=Zone B:20260310T100000\nRRULE:FREQ=DAILY;COUNT=10\n"
             "EXDATE;TZID=Zone C:20260312T100000\nSUMMARY:master\nEND:VEVENT\n"
             "BEGIN:VEVENT\nUID:tz@x\nDTSTAMP:20260101T000000Z\n"
             "RECURRENCE-ID;TZID=Zone A:20260313T090000\n"
             "DTSTART;TZID=Zone B:20260313T120000\nSUMMARY:override\nEND:VEVENT\n"
             "BEGIN:VEVENT\nUID:only-b@x\nDTSTAMP:20260101T000000Z\n"
             "DTSTART;TZID=Zone B:20260310T100000\nSUMMARY:b\nEND:VEVENT\n"
             "END:VCALENDAR\n",
             u, c, b, a);
    struct cal_stats st = {0};
    struct cal_versions *m = tc_msg("INBOX", 1, T0, ics, NULL, &st);
    CHECK(cal_versions_count(m) == 3 && st.warnings == 0);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    const struct tc_event *e = tc_event(&r, "tz@x");
    CHECK(e != NULL);
    if (e) {
        CHECK(tc_format_ok(e->data, e->len));
        CHECK(tc_count(e->data, e->len, "BEGIN:VTIMEZONE") == 3);
        CHECK(tc_has(e->data, e->len, "TZID:Zone A\r\n")); /* only the RECURRENCE-ID uses it */
        CHECK(tc_has(e->data, e->len, "TZID:Zone C\r\n")); /* only an EXDATE uses it */
        CHECK(!tc_has(e->data, e->len, "Unused Zone"));
        long pa = tc_pos(e->data, e->len, "TZID:Zone A\r\n");
        long pb = tc_pos(e->data, e->len, "TZID:Zone B\r\n");
        long pc = tc_pos(e->data, e->len, "TZID:Zone C\r\n");
        long pv = tc_pos(e->data, e->len, "BEGIN:VEVENT");
        CHECK(pa < pb && pb < pc && pc < pv);
        CHECK(tc_pos(e->data, e->len, "SUMMARY:master") <
              tc_pos(e->data, e->len, "SUMMARY:override"));
    }
    e = tc_event(&r, "only-b@x");
    CHECK(e && tc_count(e->data, e->len, "BEGIN:VTIMEZONE") == 1 &&
          tc_has(e->data, e->len, "TZID:Zone B\r\n"));
    CHECK(tc_count(r.merged, r.merged_len, "BEGIN:VTIMEZONE") == 3);
    tc_result_free(&r);
    cal_versions_free(m);
}

static void test_merged_one_vtimezone_per_tzid(void)
{
    char z1[512], z2[512], ics1[2048], ics2[2048];
    vtz(z1, sizeof z1, "Europe/Somewhere", "+0100", "FIRST");
    vtz(z2, sizeof z2, "Europe/Somewhere", "+0100", "SECOND");
    const char *body = "BEGIN:VEVENT\nUID:%s\nDTSTAMP:20260101T000000Z\n"
                       "DTSTART;TZID=Europe/Somewhere:20260310T100000\nSUMMARY:x\nEND:VEVENT\n";
    char e1[512], e2[512];
    snprintf(e1, sizeof e1, body, "b-event@x");
    snprintf(e2, sizeof e2, body, "a-event@x");
    snprintf(ics1, sizeof ics1, "BEGIN:VCALENDAR\nVERSION:2.0\n%s%sEND:VCALENDAR\n", z1, e1);
    snprintf(ics2, sizeof ics2, "BEGIN:VCALENDAR\nVERSION:2.0\n%s%sEND:VCALENDAR\n", z2, e2);
    struct cal_versions *m[2] = {tc_msg("INBOX", 1, T0, ics1, NULL, NULL),
                                 tc_msg("Other", 1, T0, ics2, NULL, NULL)};
    struct tc_result r;
    CHECK(tc_resolve(m, 2, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    CHECK(r.nevents == 2);
    CHECK(tc_count(r.merged, r.merged_len, "BEGIN:VTIMEZONE") == 1);
    /* a-event@x comes first in the output, so its sender's definition wins. */
    CHECK(tc_has(r.merged, r.merged_len, "TZNAME:SECOND"));
    CHECK(!tc_has(r.merged, r.merged_len, "TZNAME:FIRST"));
    /* Each event file keeps its own sender's zone. */
    const struct tc_event *b = tc_event(&r, "b-event@x");
    CHECK(b && tc_has(b->data, b->len, "TZNAME:FIRST"));
    CHECK(tc_format_ok(r.merged, r.merged_len));
    tc_result_free(&r);
    tc_free_all(m, 2);
}

static int same_result(const struct tc_result *a, const struct tc_result *b)
{
    if (a->nevents != b->nevents || a->merged_len != b->merged_len ||
        memcmp(a->merged, b->merged, a->merged_len) != 0 || a->merged_mtime != b->merged_mtime)
        return 0;
    for (size_t i = 0; i < a->nevents; i++)
        if (strcmp(a->events[i].uid, b->events[i].uid) != 0 ||
            a->events[i].len != b->events[i].len || a->events[i].mtime != b->events[i].mtime ||
            memcmp(a->events[i].data, b->events[i].data, a->events[i].len) != 0)
            return 0;
    return 1;
}

static void test_output_deterministic_under_permutation(void)
{
    enum { N = 7 };
    struct cal_versions *m[N] = {
        tc_file("INBOX", 1, T0 + 100, "google_series.ics", NULL, NULL),
        tc_file("INBOX", 2, T0 + 500, "google_cancel_occurrence.ics", NULL, NULL),
        tc_file("Work", 1, T0 + 100, "outlook_request.ics", NULL, NULL),
        tc_file("Work", 2, T0 + 100, "two_calendars.ics", NULL, NULL),
        /* exact ties broken only by the mailbox name */
        msg_ev("A", 1, T0, "REQUEST", "tie@x", "", 1, "20260101T000000Z", "a"),
        msg_ev("B", 1, T0, "REQUEST", "tie@x", "", 1, "20260101T000000Z", "b"),
        msg_ev("B", 2, T0, "CANCEL", "first@example.org", "", 1, "20260101T000000Z", "c"),
    };
    struct tc_result ref;
    CHECK(tc_resolve(m, N, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &ref) == 0);
    CHECK(ref.nevents == 4);
    unsigned seed = 12345;
    for (int round = 0; round < 40; round++) {
        struct cal_versions *p[N];
        memcpy(p, m, sizeof p);
        for (int i = N - 1; i > 0; i--) {
            seed = seed * 1103515245u + 12345u;
            int j = (int)((seed >> 16) % (unsigned)(i + 1));
            struct cal_versions *t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        struct tc_result r;
        CHECK(tc_resolve(p, N, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
        CHECK(same_result(&ref, &r));
        tc_result_free(&r);
    }
    tc_result_free(&ref);
    tc_free_all(m, N);
}

static void test_no_method_in_output_and_crlf_folding(void)
{
    char summary[1200] = "", ics[4096];
    for (int i = 0; i < 12; i++)
        strcat(summary, "Zürich Ärger 日本語の会議 😀 ");
    snprintf(ics, sizeof ics,
             "BEGIN:VCALENDAR\nVERSION:2.0\nMETHOD:REQUEST\nBEGIN:VEVENT\nUID:utf8@x\n"
             "METHOD:PUBLISH\nDTSTAMP:20260101T000000Z\nDTSTART:20260310T100000Z\n"
             "SUMMARY:%s\nEND:VEVENT\nEND:VCALENDAR\n",
             summary);
    struct cal_versions *m = tc_msg("INBOX", 1, T0, ics, NULL, NULL);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    CHECK(r.nevents == 1);
    if (r.nevents == 1) {
        CHECK(tc_format_ok(r.events[0].data, r.events[0].len));
        CHECK(!tc_has(r.events[0].data, r.events[0].len, "METHOD"));
        char want[1300];
        snprintf(want, sizeof want, "SUMMARY:%.*s\r\n", (int)strlen(summary) - 1, summary);
        CHECK(tc_has(r.events[0].data, r.events[0].len, want));
    }
    CHECK(tc_format_ok(r.merged, r.merged_len));
    tc_result_free(&r);
    cal_versions_free(m);
}

static void test_source_url_added_once(void)
{
    const char *ics = "BEGIN:VEVENT\nUID:src@x\nDTSTAMP:20260101T000000Z\n"
                      "DTSTART:20260310T100000Z\nX-IMAPCALFS-SOURCE:imap://evil/\n"
                      "BEGIN:VALARM\nACTION:DISPLAY\nTRIGGER:-PT5M\nEND:VALARM\n"
                      "END:VEVENT\n";
    struct cal_versions *m = tc_msg("Team/Cal", 42, T0, ics, NULL, NULL);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1);
    if (r.nevents == 1) {
        const char *d = r.events[0].data;
        size_t n = r.events[0].len;
        CHECK(tc_count(d, n, "X-IMAPCALFS-SOURCE") == 1);
        CHECK(tc_has(d, n,
                     "\r\nX-IMAPCALFS-SOURCE:imap://alice@imap.example.org/Team/Cal;"
                     "UIDVALIDITY=7/;UID=42\r\nBEGIN:VALARM\r\n"));
    }
    tc_result_free(&r);
    cal_versions_free(m);
}

static void test_source_url_cannot_inject_lines(void)
{
    const char *ics = "BEGIN:VEVENT\nUID:inj@x\nDTSTAMP:20260101T000000Z\n"
                      "DTSTART:20260310T100000Z\nEND:VEVENT\n";
    struct cal_origin o = {.mailbox = "INBOX",
                           .uid = 1,
                           .internaldate = T0,
                           .source_url = "imap://h/x\r\nBEGIN:VEVENT\nUID:evil"};
    struct cal_versions *m = cal_versions_new(&o);
    char err[64];
    CHECK(cal_versions_add_part(m, ics, strlen(ics), NULL, NULL, err, sizeof err) == 1);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1);
    if (r.nevents == 1) {
        CHECK(tc_count(r.events[0].data, r.events[0].len, "\nBEGIN:VEVENT") == 1);
        CHECK(!tc_has(r.events[0].data, r.events[0].len, "\nUID:evil"));
        CHECK(tc_format_ok(r.events[0].data, r.events[0].len));
    }
    tc_result_free(&r);
    cal_versions_free(m);
}

static void test_x_lic_error_stripped(void)
{
    const char *ics = "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:err@x\n"
                      "DTSTAMP:20260101T000000Z\nDTSTART:20260310T100000Z\nDTEND:notadate\n"
                      "FOO BAR\nX-FOO;BAD PARAM:1\nSUMMARY:still here\nEND:VEVENT\nEND:VCALENDAR\n";
    struct cal_versions *m = tc_msg("INBOX", 1, T0, ics, NULL, NULL);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1);
    if (r.nevents == 1) {
        CHECK(!tc_has(r.events[0].data, r.events[0].len, "X-LIC-ERROR"));
        CHECK(tc_has(r.events[0].data, r.events[0].len, "SUMMARY:still here"));
    }
    tc_result_free(&r);
    cal_versions_free(m);
}

static void test_deep_nesting_refused(void)
{
    struct cal_stats st = {0};
    struct cal_versions *m = tc_msg("INBOX", 1, T0, NULL, NULL, NULL);
    char err[128] = "";
    /* 9 levels: refused. */
    char deep[2048] = "BEGIN:VCALENDAR\n";
    for (int i = 0; i < 8; i++)
        strcat(deep, "BEGIN:VEVENT\n");
    for (int i = 0; i < 8; i++)
        strcat(deep, "END:VEVENT\n");
    strcat(deep, "END:VCALENDAR\n");
    CHECK(cal_versions_add_part(m, deep, strlen(deep), NULL, &st, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "nested") != NULL);
    CHECK(st.parts == 1 && st.parts_bad == 1);

    /* 100,000 levels (libical's recursive free would overflow the stack). */
    size_t n = 100000, len = n * (13 + 11);
    char *huge = malloc(len + 1), *p = huge;
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "BEGIN:VEVENT\n");
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "END:VEVENT\n");
    CHECK(cal_versions_add_part(m, huge, (size_t)(p - huge), NULL, &st, err, sizeof err) ==
          -EINVAL);
    free(huge);

    /* 8 levels are fine (lower-case BEGIN counts too). */
    char ok[2048] = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:deep@x\nDTSTART:20260310T100000Z\n";
    for (int i = 0; i < 6; i++)
        strcat(ok, "begin:VALARM\nACTION:DISPLAY\nTRIGGER:-PT5M\n");
    for (int i = 0; i < 6; i++)
        strcat(ok, "END:VALARM\n");
    strcat(ok, "END:VEVENT\nEND:VCALENDAR\n");
    CHECK(cal_versions_add_part(m, ok, strlen(ok), NULL, &st, err, sizeof err) == 1);
    CHECK(st.parts_bad == 2);
    cal_versions_free(m);
}

static void test_garbage_part_is_error(void)
{
    struct cal_stats st = {0};
    struct cal_versions *m = tc_msg("INBOX", 1, T0, NULL, NULL, NULL);
    char err[128];
    const char *bad[] = {
        "hello world\r\nthis is not ical",
        "",
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:trunc@x\nDTSTART:20260310T100000Z\nSUMM",
    };
    for (size_t i = 0; i < 3; i++) {
        err[0] = '\0';
        CHECK(cal_versions_add_part(m, bad[i], strlen(bad[i]), NULL, &st, err, sizeof err) ==
              -EINVAL);
        CHECK(err[0] != '\0');
    }
    size_t big = CAL_MAX_PART_BYTES + 1;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    CHECK(cal_versions_add_part(m, huge, big, NULL, &st, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "limit") != NULL);
    free(huge);
    CHECK(st.parts == 4 && st.parts_bad == 4 && cal_versions_count(m) == 0);
    /* The next good part of the same message still counts. */
    char *ics = ev("REQUEST", "good@x", "", 0, "20260101T000000Z", "good");
    CHECK(cal_versions_add_part(m, ics, strlen(ics), NULL, &st, err, sizeof err) == 1);
    CHECK(st.parts == 5 && st.parts_bad == 4);
    free(ics);
    cal_versions_free(m);
}

/* A VEVENT whose DTSTART is missing or did not parse is no event (RFC 5546
 * §3.2, RFC 5545 §3.6.1); only a CANCEL may leave it out. */
static void test_vevent_without_dtstart_left_out(void)
{
    struct cal_stats st = {0};
    struct cal_versions *m = tc_msg("INBOX", 1, T0, NULL, NULL, NULL);
    char err[128] = "";
    /* A ticketing system's broken attachment: bad DTSTART, line without ':'. */
    const char *broken = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\n"
                         "UID:parking@x\r\nDTSTART:2026-03-28 18:30\r\n"
                         "SUMMARY Parking voucher\r\nEND:VCALENDAR\r\nEND:VEVENT\r\n";
    CHECK(cal_versions_add_part(m, broken, strlen(broken), NULL, &st, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "DTSTART") != NULL);
    CHECK(st.parts == 1 && st.parts_bad == 1 && cal_versions_count(m) == 0);

    /* Next to a good event: the good one stays, the other is a warning. */
    const char *mixed = "BEGIN:VCALENDAR\r\nMETHOD:PUBLISH\r\n"
                        "BEGIN:VEVENT\r\nUID:nostart@x\r\nSUMMARY:no start\r\nEND:VEVENT\r\n"
                        "BEGIN:VEVENT\r\nUID:good@x\r\nDTSTAMP:20260101T000000Z\r\n"
                        "DTSTART:20260310T100000Z\r\nSUMMARY:good\r\nEND:VEVENT\r\n"
                        "END:VCALENDAR\r\n";
    CHECK(cal_versions_add_part(m, mixed, strlen(mixed), NULL, &st, err, sizeof err) == 1);
    CHECK(st.parts == 2 && st.parts_bad == 1 && st.warnings == 1);

    /* A CANCEL needs no DTSTART; a VTODO has none to need. */
    const char *cancel = "BEGIN:VCALENDAR\r\nMETHOD:CANCEL\r\nBEGIN:VEVENT\r\n"
                         "UID:good@x\r\nSEQUENCE:1\r\nDTSTAMP:20260102T000000Z\r\n"
                         "STATUS:CANCELLED\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    CHECK(cal_versions_add_part(m, cancel, strlen(cancel), NULL, &st, err, sizeof err) == 1);
    struct cal_filter todo = {.kinds = CAL_VTODO};
    const char *task = "BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nUID:task@x\r\n"
                       "SUMMARY:whenever\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
    CHECK(cal_versions_add_part(m, task, strlen(task), &todo, &st, err, sizeof err) == 1);
    CHECK(st.parts == 4 && st.parts_bad == 1 && st.warnings == 1);
    CHECK(cal_versions_count(m) == 3);
    cal_versions_free(m);
}

static void test_components_filter(void)
{
    const char *ics = "BEGIN:VCALENDAR\nVERSION:2.0\n"
                      "BEGIN:VTODO\nUID:todo@x\nDTSTAMP:20260101T000000Z\nSUMMARY:task\n"
                      "DUE:20260310T100000Z\nEND:VTODO\n"
                      "BEGIN:VJOURNAL\nUID:j@x\nDTSTAMP:20260101T000000Z\nSUMMARY:note\n"
                      "END:VJOURNAL\n"
                      "BEGIN:VEVENT\nUID:ev@x\nDTSTAMP:20260101T000000Z\n"
                      "DTSTART:20260310T100000Z\nEND:VEVENT\nEND:VCALENDAR\n";
    struct cal_versions *m = tc_msg("INBOX", 1, T0, ics, NULL, NULL);
    CHECK(cal_versions_count(m) == 1);
    struct cal_filter f = {.kinds = CAL_VEVENT | CAL_VTODO};
    struct cal_versions *m2 = tc_msg("INBOX", 1, T0, ics, &f, NULL);
    CHECK(cal_versions_count(m2) == 2);
    struct tc_result r;
    CHECK(tc_resolve(&m2, 1, &f, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 2 && tc_event(&r, "todo@x") && tc_event(&r, "ev@x"));
    const struct tc_event *t = tc_event(&r, "todo@x");
    CHECK(t && tc_has(t->data, t->len, "BEGIN:VTODO\r\n") && tc_format_ok(t->data, t->len));
    tc_result_free(&r);
    /* Resolving with VEVENT only leaves the task out. */
    CHECK(tc_resolve(&m2, 1, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1 && tc_event(&r, "ev@x"));
    tc_result_free(&r);
    cal_versions_free(m);
    cal_versions_free(m2);
}

static void test_mtime_is_newest_message_held(void)
{
    struct cal_versions *m[3] = {
        msg_ev("INBOX", 1, T0 + 100, "REQUEST", "mt@x", "", 0, "20260101T000000Z", "master"),
        msg_ev("INBOX", 2, T0 + 300, "REQUEST", "mt@x", "RECURRENCE-ID:20260317T100000Z", 0,
               "20260101T000000Z", "override"),
        msg_ev("INBOX", 3, T0 + 200, "REQUEST", "other@x", "", 0, "20260101T000000Z", "o"),
    };
    struct tc_result r;
    CHECK(tc_resolve(m, 3, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    const struct tc_event *e = tc_event(&r, "mt@x"), *o = tc_event(&r, "other@x");
    CHECK(e && e->mtime == T0 + 300);
    CHECK(o && o->mtime == T0 + 200);
    CHECK(r.merged_mtime == T0 + 300);
    tc_result_free(&r);
    tc_free_all(m, 3);
}

static void test_invalid_utf8_and_nul_made_valid(void)
{
    const char ics[] = "BEGIN:VEVENT\nUID:bad8@x\nDTSTAMP:20260101T000000Z\n"
                       "DTSTART:20260310T100000Z\nSUMMARY:caf\xe9 \xff\xfe na\0me \xc3\xa9\n"
                       "END:VEVENT\n";
    struct cal_versions *m = tc_msg("INBOX", 1, T0, NULL, NULL, NULL);
    char err[64];
    struct cal_stats st = {0};
    CHECK(cal_versions_add_part(m, ics, sizeof ics - 1, NULL, &st, err, sizeof err) == 1);
    /* Shown, but counted: the text did not fit its charset. */
    CHECK(st.parts == 1 && st.parts_bad == 0 && st.warnings == 1);
    /* What mime_decode_part() made of a wrong label counts the same. */
    const char decoded[] = "BEGIN:VEVENT\nUID:fffd@x\nDTSTART:20260310T100000Z\n"
                           "SUMMARY:Caf\xef\xbf\xbd\nEND:VEVENT\n";
    CHECK(cal_versions_add_part(m, decoded, sizeof decoded - 1, NULL, &st, err, sizeof err) == 1);
    CHECK(st.parts == 2 && st.warnings == 2);
    const char clean[] = "BEGIN:VEVENT\nUID:ok@x\nDTSTART:20260310T100000Z\n"
                         "SUMMARY:Caf\xc3\xa9\nEND:VEVENT\n";
    CHECK(cal_versions_add_part(m, clean, sizeof clean - 1, NULL, &st, err, sizeof err) == 1);
    CHECK(st.parts == 3 && st.warnings == 2);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 3);
    if (r.nevents == 3) {
        CHECK(tc_format_ok(r.events[0].data, r.events[0].len));
        CHECK(tc_has(r.events[0].data, r.events[0].len,
                     "SUMMARY:caf\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd name \xc3\xa9\r\n"));
    }
    tc_result_free(&r);
    cal_versions_free(m);
}

static void test_missing_uid_gets_stable_one(void)
{
    const char *ics = "BEGIN:VEVENT\nDTSTAMP:20260101T000000Z\nDTSTART:20260310T100000Z\n"
                      "SUMMARY:no uid\nEND:VEVENT\n";
    struct cal_versions *m[2] = {tc_msg("INBOX", 1, T0, ics, NULL, NULL),
                                 tc_msg("INBOX", 2, T0, ics, NULL, NULL)};
    struct tc_result r;
    CHECK(tc_resolve(m, 2, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1);
    if (r.nevents == 1) {
        CHECK(strncmp(r.events[0].uid, "imapcalfs-", 10) == 0);
        char line[80];
        snprintf(line, sizeof line, "\r\nUID:%s\r\n", r.events[0].uid);
        CHECK(tc_has(r.events[0].data, r.events[0].len, line));
    }
    tc_result_free(&r);
    tc_free_all(m, 2);
}

static void test_output_parses_with_python_icalendar(void)
{
    if (system("/usr/bin/python3 -c 'import icalendar' 2>/dev/null") != 0)
        return; /* optional check: needs Debian's python3-icalendar */
    struct cal_versions *m[4] = {
        tc_file("INBOX", 1, T0 + 100, "google_series.ics", NULL, NULL),
        tc_file("INBOX", 2, T0 + 500, "google_cancel_occurrence.ics", NULL, NULL),
        tc_file("Work", 1, T0 + 100, "outlook_request.ics", NULL, NULL),
        tc_file("Work", 2, T0 + 100, "two_calendars.ics", NULL, NULL),
    };
    struct tc_result r;
    CHECK(tc_resolve(m, 4, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    char path[] = "/tmp/test_cal_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, r.merged, r.merged_len) == (ssize_t)r.merged_len);
        close(fd);
        char cmd[512];
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c 'import sys, icalendar\n"
                 "c = icalendar.Calendar.from_ical(open(sys.argv[1], \"rb\").read())\n"
                 "ev = [e for e in c.walk(\"VEVENT\")]\n"
                 "tz = [z for z in c.walk(\"VTIMEZONE\")]\n"
                 "sys.exit(0 if len(ev) == 5 and len(tz) == 2 and \"METHOD\" not in c "
                 "else 1)' %s 2>/dev/null",
                 path);
        int st = system(cmd);
        CHECK(st == 0);
        unlink(path);
    }
    tc_result_free(&r);
    tc_free_all(m, 4);
}

int main(void)
{
    cal_global_init();
    RUN(test_bare_vevent_is_read);
    RUN(test_bare_vevent_with_bare_vtimezone);
    RUN(test_two_vcalendars_in_one_part);
    RUN(test_folded_lines_crlf_and_no_final_newline);
    RUN(test_duplicate_in_one_message_counts_once);
    RUN(test_identical_part_twice_same_result);
    RUN(test_sealed_message_forgets_its_part_digests);
    RUN(test_higher_sequence_wins);
    RUN(test_dtstamp_breaks_sequence_tie);
    RUN(test_later_message_breaks_tie);
    RUN(test_cancel_removes_event);
    RUN(test_cancel_loses_to_newer_request);
    RUN(test_cancel_removes_occurrence);
    RUN(test_ropes_borrow_and_hold_their_versions);
    RUN(test_reply_creates_nothing);
    RUN(test_override_without_master_is_own_file_then_joins);
    RUN(test_vtimezone_exactly_those_used);
    RUN(test_merged_one_vtimezone_per_tzid);
    RUN(test_output_deterministic_under_permutation);
    RUN(test_no_method_in_output_and_crlf_folding);
    RUN(test_source_url_added_once);
    RUN(test_source_url_cannot_inject_lines);
    RUN(test_x_lic_error_stripped);
    RUN(test_deep_nesting_refused);
    RUN(test_garbage_part_is_error);
    RUN(test_vevent_without_dtstart_left_out);
    RUN(test_components_filter);
    RUN(test_mtime_is_newest_message_held);
    RUN(test_invalid_utf8_and_nul_made_valid);
    RUN(test_missing_uid_gets_stable_one);
    RUN(test_output_parses_with_python_icalendar);
    return UNIT_DONE();
}
