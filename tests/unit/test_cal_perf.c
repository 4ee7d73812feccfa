/*
 * test_cal_perf.c — the cost of the calendar model at mailbox scale:
 * 10,000 small invitations (Exchange style, each with its VTIMEZONE) parsed
 * and resolved, with and without the after/before filter: every event is
 * there and the output is well-formed at that size. The times are printed
 * for a person to read, never asserted (speed is the benchmark's business,
 * bench/). Under valgrind or a sanitizer the sizes shrink.
 */
#include "cal.h"
#include "test_cal_util.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static const char invite_fmt[] =
    "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nPRODID:Microsoft Exchange Server 2010\r\n"
    "VERSION:2.0\r\nBEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\n"
    "BEGIN:STANDARD\r\nDTSTART:16010101T030000\r\nTZOFFSETFROM:+0200\r\n"
    "TZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10\r\n"
    "END:STANDARD\r\nBEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:+0100\r\n"
    "TZOFFSETTO:+0200\r\nRRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3\r\n"
    "END:DAYLIGHT\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\n"
    "ORGANIZER;CN=Boss:mailto:boss@example.org\r\n"
    "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;CN=Alice:mailto:a\r\n"
    " lice@example.org\r\nDESCRIPTION;LANGUAGE=en-US:Meeting number %d\\n\r\n"
    "UID:perf-%d@example.org\r\nSUMMARY;LANGUAGE=en-US:Meeting %d\r\n"
    "DTSTART;TZID=W. Europe Standard Time:202603%02dT%02d0000\r\n"
    "DTEND;TZID=W. Europe Standard Time:202603%02dT%02d3000\r\n%s"
    "CLASS:PUBLIC\r\nPRIORITY:5\r\nDTSTAMP:20260301T%02d0000Z\r\nTRANSP:OPAQUE\r\n"
    "STATUS:CONFIRMED\r\nSEQUENCE:%d\r\nLOCATION;LANGUAGE=en-US:Room %d\r\n"
    "X-MICROSOFT-CDO-APPT-SEQUENCE:%d\r\nX-MICROSOFT-CDO-BUSYSTATUS:TENTATIVE\r\n"
    "X-MICROSOFT-CDO-INTENDEDSTATUS:BUSY\r\nX-MICROSOFT-CDO-ALLDAYEVENT:FALSE\r\n"
    "BEGIN:VALARM\r\nDESCRIPTION:REMINDER\r\nTRIGGER;RELATED=START:-PT15M\r\n"
    "ACTION:DISPLAY\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Parses n invitations (every tenth also updated, every seventh weekly) and
 * resolves them; returns the seconds taken, or -1 on a wrong result. */
static double run(int n, const struct cal_filter *f, size_t want_events)
{
    int nmsg = n + n / 10;
    struct cal_versions **m = calloc((size_t)nmsg, sizeof *m);
    char *buf = malloc(8192);
    double t0 = now();
    for (int i = 0; i < nmsg; i++) {
        int ev = i < n ? i : (i - n) * 10, seq = i < n ? 0 : 1;
        int day = 1 + ev % 28, hour = 8 + ev % 9;
        snprintf(buf, 8192, invite_fmt, ev, ev, ev, day, hour, day, hour,
                 ev % 7 == 0 ? "RRULE:FREQ=WEEKLY;BYDAY=MO,WE\r\n" : "", hour, seq, ev, seq);
        char url[96];
        snprintf(url, sizeof url, "imap://a@h/INBOX;UIDVALIDITY=1/;UID=%d", i + 1);
        struct cal_origin o = {"INBOX", (uint32_t)i + 1, 1772323200 + i, url};
        m[i] = cal_versions_new(&o);
        char err[128];
        if (cal_versions_add_part(m[i], buf, strlen(buf), f, NULL, err, sizeof err) != 1)
            return -1;
    }
    double t1 = now();
    struct tc_result r;
    int rc = tc_resolve(m, (size_t)nmsg, f, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r);
    double t2 = now();
    int ok = rc == 0 && r.nevents == want_events;
    if (ok && r.nevents) {
        /* updated events carry SEQUENCE:1 */
        const struct tc_event *e = tc_event(&r, "perf-10@example.org");
        ok = (!e || tc_has(e->data, e->len, "SEQUENCE:1\r\n")) &&
             tc_format_ok(r.merged, r.merged_len);
    }
    printf("  %d invitations (+%d updates): parse %.3f s, resolve %.3f s, %zu events, "
           "merged %zu bytes\n",
           n, nmsg - n, t1 - t0, t2 - t1, r.nevents, r.merged_len);
    tc_result_free(&r);
    for (int i = 0; i < nmsg; i++)
        cal_versions_free(m[i]);
    free(m);
    free(buf);
    return ok ? t2 - t0 : -1;
}

static int slow_build(void)
{
    return SANITIZED || getenv("VALGRIND") != NULL;
}

static void test_ten_thousand_invitations_resolved(void)
{
    int n = slow_build() ? 300 : 10000;
    double t = run(n, NULL, (size_t)n);
    CHECK(t >= 0);
}

static void test_ten_thousand_with_date_window_resolved(void)
{
    int n = slow_build() ? 300 : 10000;
    /* Window: March 20-21 2026 (a Friday): the one-offs on those days and
     * every weekly series (Mondays and Wednesdays from March) that ... */
    struct cal_filter f = {.has_after = 1, .has_before = 1};
    CHECK(cal_parse_date("2026-03-23", &f.after) == 0); /* a Monday */
    CHECK(cal_parse_date("2026-03-24", &f.before) == 0);
    /* one-offs on day 23 (ev % 28 == 22) plus every weekly series (ev % 7 == 0) */
    size_t want = 0;
    for (int ev = 0; ev < n; ev++)
        want += ev % 7 == 0 || ev % 28 == 22;
    double t = run(n, &f, want);
    CHECK(t >= 0);
}

int main(void)
{
    cal_global_init();
    RUN(test_ten_thousand_invitations_resolved);
    RUN(test_ten_thousand_with_date_window_resolved);
    return UNIT_DONE();
}
