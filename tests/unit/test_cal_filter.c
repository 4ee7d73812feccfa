/*
 * test_cal_filter.c — the filter options (SPEC §1): match=PROP~REGEX,
 * after=/before= with recurrence expansion, privacy=busy, and the date
 * syntax they take.
 */
#include "cal.h"
#include "test_cal_util.h"
#include "unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1767225600 /* 2026-01-01T00:00:00Z */
#define DAY 86400

static void test_parse_date_forms(void)
{
    int64_t t = 0;
    CHECK(cal_parse_date("2026-03-10", &t) == 0 && t == T0 + 68 * DAY);
    CHECK(cal_parse_date("2026-03-10T10:00:00Z", &t) == 0 && t == T0 + 68 * DAY + 36000);
    CHECK(cal_parse_date("2026-03-10T10:00:00+02:00", &t) == 0 && t == T0 + 68 * DAY + 28800);
    CHECK(cal_parse_date("2026-03-10t10:00:00.250-01:30", &t) == 0 &&
          t == T0 + 68 * DAY + 36000 + 5400);
    CHECK(cal_parse_date("1970-01-01", &t) == 0 && t == 0);
    CHECK(cal_parse_date("1969-12-31T23:59:59Z", &t) == 0 && t == -1);
    CHECK(cal_parse_date("2024-02-29", &t) == 0);
    const char *bad[] = {"",
                         "tomorrow",
                         "2026-3-10",
                         "2026-02-29",
                         "2026-13-01",
                         "2026-03-10T25:00:00Z",
                         "2026-03-10T10:00:00",
                         "2026-03-10T10:00Z",
                         "2026-03-10Z",
                         "2026-03-10 ",
                         "2026-03-10T10:00:00Zjunk",
                         "2026-03-10T10:00:00+0200"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (cal_parse_date(bad[i], &t) != -EINVAL) {
            fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
            CHECK(0);
        }
    }
    CHECK(cal_parse_date(NULL, &t) == -EINVAL);
}

static void test_add_match_syntax(void)
{
    struct cal_filter f = {0};
    char err[256];
    CHECK(cal_filter_add_match(&f, "summary~stand.?up", err, sizeof err) == 0);
    CHECK(f.nmatch == 1);
    CHECK_STR(f.match[0].property, "SUMMARY");
    CHECK(cal_filter_add_match(&f, "ORGANIZER~@example\\.org$", err, sizeof err) == 0);
    CHECK(cal_filter_add_match(&f, "X-MY-PROP~a~b", err, sizeof err) == 0); /* "~" in the regex */
    CHECK(f.nmatch == 3);
    const char *bad[] = {
        "SUMMARY",           "~x",
        "SUM MARY~x",        "SUMMARY~",
        "SUMMARY~(unclosed", "A234567890123456789012345678901234567890123456789012345678901234~x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK(cal_filter_add_match(&f, bad[i], err, sizeof err) == -EINVAL);
        CHECK(err[0] != '\0');
    }
    CHECK(f.nmatch == 3);
    for (int i = 3; i < 64; i++)
        CHECK(cal_filter_add_match(&f, "SUMMARY~x", err, sizeof err) == 0);
    CHECK(cal_filter_add_match(&f, "SUMMARY~x", err, sizeof err) == -EINVAL);
    cal_filter_free(&f);
    CHECK(f.nmatch == 0 && f.match == NULL);
    cal_filter_free(&f); /* twice is fine */
}

/* An event in UTC with optional extra lines (RRULE, ORGANIZER, ...). */
static char *evx(const char *uid, const char *start, const char *end, const char *extra)
{
    char *buf = malloc(4096);
    snprintf(buf, 4096,
             "BEGIN:VCALENDAR\nVERSION:2.0\nMETHOD:REQUEST\nBEGIN:VEVENT\nUID:%s\n"
             "DTSTAMP:20260101T000000Z\nDTSTART%s\n%s%s%s%sEND:VEVENT\nEND:VCALENDAR\n",
             uid, start, end ? "DTEND" : "", end ? end : "", end ? "\n" : "", extra ? extra : "");
    return buf;
}

/* UIDs kept by resolving these messages under f, joined by spaces. */
static void kept(struct cal_versions **m, size_t n, const struct cal_filter *f, char *out,
                 size_t outlen)
{
    struct tc_result r;
    out[0] = '\0';
    if (tc_resolve(m, n, f, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) != 0) {
        snprintf(out, outlen, "(error)");
        return;
    }
    for (size_t i = 0; i < r.nevents; i++) {
        if (i)
            strncat(out, " ", outlen - strlen(out) - 1);
        strncat(out, r.events[i].uid, outlen - strlen(out) - 1);
    }
    if (tc_count(r.merged, r.merged_len, "BEGIN:VEVENT") < (int)r.nevents)
        snprintf(out, outlen, "(merged lacks events)");
    tc_result_free(&r);
}

static void test_match_filter(void)
{
    struct cal_filter f = {0};
    char err[128], got[512];
    CHECK(cal_filter_add_match(&f, "SUMMARY~standup", err, sizeof err) == 0);
    const char *ics[] = {
        "BEGIN:VEVENT\nUID:a@x\nDTSTART:20260310T100000Z\nSUMMARY:Daily STANDUP\n"
        "ORGANIZER:mailto:boss@example.org\nEND:VEVENT\n",
        "BEGIN:VEVENT\nUID:b@x\nDTSTART:20260310T100000Z\nSUMMARY:Lunch\n"
        "ORGANIZER:mailto:boss@example.org\nEND:VEVENT\n",
        "BEGIN:VEVENT\nUID:c@x\nDTSTART:20260310T100000Z\nSUMMARY:Standup\\, remote\n"
        "ORGANIZER:mailto:someone@other.org\nEND:VEVENT\n",
        /* only an override matches: the event is kept */
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:d@x\nDTSTART:20260310T100000Z\n"
        "RRULE:FREQ=DAILY;COUNT=3\nSUMMARY:Series\nEND:VEVENT\n"
        "BEGIN:VEVENT\nUID:d@x\nRECURRENCE-ID:20260311T100000Z\nDTSTART:20260311T120000Z\n"
        "SUMMARY:Standup moved\nEND:VEVENT\nEND:VCALENDAR\n",
        /* a VALARM's SUMMARY is not the event's */
        "BEGIN:VEVENT\nUID:e@x\nDTSTART:20260310T100000Z\nSUMMARY:Other\n"
        "BEGIN:VALARM\nACTION:EMAIL\nSUMMARY:standup\nDESCRIPTION:x\nTRIGGER:-PT5M\n"
        "ATTENDEE:mailto:a@x\nEND:VALARM\nEND:VEVENT\n",
    };
    struct cal_versions *m[5];
    for (int i = 0; i < 5; i++)
        m[i] = tc_msg("INBOX", (uint32_t)i + 1, T0, ics[i], &f, NULL);
    kept(m, 5, &f, got, sizeof got);
    CHECK_STR(got, "a@x c@x d@x");
    CHECK(cal_filter_add_match(&f, "ORGANIZER~@example\\.org$", err, sizeof err) == 0);
    kept(m, 5, &f, got, sizeof got); /* computed at resolve time: filter changed */
    CHECK_STR(got, "a@x");
    /* "\," in the text is matched as ",". */
    struct cal_filter g = {0};
    CHECK(cal_filter_add_match(&g, "summary~^standup, remote$", err, sizeof err) == 0);
    kept(m, 5, &g, got, sizeof got);
    CHECK_STR(got, "c@x");
    tc_free_all(m, 5);
    cal_filter_free(&f);
    cal_filter_free(&g);
}

static void test_after_before_with_recurrence(void)
{
    static const char berlin[] =
        "BEGIN:VTIMEZONE\nTZID:Europe/Berlin\nBEGIN:STANDARD\nDTSTART:19701025T030000\n"
        "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\nTZOFFSETFROM:+0200\nTZOFFSETTO:+0100\n"
        "END:STANDARD\nBEGIN:DAYLIGHT\nDTSTART:19700329T020000\n"
        "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\nTZOFFSETFROM:+0100\nTZOFFSETTO:+0200\n"
        "END:DAYLIGHT\nEND:VTIMEZONE\n";
    char weekly[2048];
    snprintf(
        weekly, sizeof weekly,
        "BEGIN:VCALENDAR\nVERSION:2.0\n%sBEGIN:VEVENT\nUID:weekly@x\n"
        "DTSTART;TZID=Europe/Berlin:20150105T093000\nDTEND;TZID=Europe/Berlin:20150105T094500\n"
        "RRULE:FREQ=WEEKLY;BYDAY=MO\nEND:VEVENT\nEND:VCALENDAR\n",
        berlin);
    char *ended = evx("ended@x", ":20240101T100000Z", ":20240101T110000Z",
                      "RRULE:FREQ=DAILY;UNTIL=20251231T100000Z\n");
    char *once = evx("once@x", ":20260310T100000Z", ":20260310T110000Z", NULL);
    char *allday = evx("allday@x", ";VALUE=DATE:20260310", NULL, NULL);
    char *counted =
        evx("counted@x", ":20260101T100000Z", NULL, "DURATION:PT1H\nRRULE:FREQ=DAILY;COUNT=3\n");
    char *rdate = evx("rdate@x", ":20250101T100000Z", ":20250101T110000Z",
                      "RDATE;VALUE=PERIOD:20260310T080000Z/PT1H\n");
    /* Only the repaired zone (no VTIMEZONE) tells 09:30 Berlin from UTC. */
    char *repaired =
        evx("repaired@x", ";TZID=Europe/Berlin:20260310T093000", NULL, "DURATION:PT30M\n");
    const char *all[] = {weekly, ended, once, allday, counted, rdate, repaired};
    enum { N = 7 };
    struct {
        const char *after, *before, *want;
    } cases[] = {
        {"2026-03-02", "2026-03-03", "weekly@x"},
        {"2026-03-10", "2026-03-11", "allday@x once@x rdate@x repaired@x"}, /* a Tuesday */
        {"2026-03-09T08:00:00Z", "2026-03-09T08:31:00Z", "weekly@x"},       /* 09:30 CET */
        {"2026-03-30T07:00:00Z", "2026-03-30T07:31:00Z", "weekly@x"},       /* 09:30 CEST */
        {"2026-03-30T08:00:00Z", "2026-03-30T08:31:00Z", ""},
        {"2026-03-10T10:30:00Z", NULL, "allday@x once@x weekly@x"},
        {"2026-03-10T11:00:00Z", "2026-03-10T23:00:00Z", "allday@x"},
        {NULL, "2026-01-01", "ended@x rdate@x weekly@x"},
        {"2026-01-02T10:30:00Z", "2026-01-03", "counted@x"},
        {"2026-01-03T10:30:00Z", "2026-01-06", "counted@x weekly@x"},
        {"2026-01-03T11:00:00Z", "2026-01-06", "weekly@x"},
        {"2026-01-04", "2026-01-05", ""},
        {"2026-03-10T08:45:00Z", "2026-03-10T08:50:00Z", "allday@x rdate@x repaired@x"},
        {"2026-03-10T08:00:00Z", "2026-03-10T08:30:00Z", "allday@x rdate@x"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct cal_filter f = {0};
        if (cases[c].after) {
            f.has_after = 1;
            CHECK(cal_parse_date(cases[c].after, &f.after) == 0);
        }
        if (cases[c].before) {
            f.has_before = 1;
            CHECK(cal_parse_date(cases[c].before, &f.before) == 0);
        }
        struct cal_versions *m[N];
        for (int i = 0; i < N; i++)
            m[i] = tc_msg("INBOX", (uint32_t)i + 1, T0, all[i], &f, NULL);
        char got[512];
        kept(m, N, &f, got, sizeof got);
        if (strcmp(got, cases[c].want) != 0)
            fprintf(stderr, "  case %zu (%s..%s)\n", c, cases[c].after ? cases[c].after : "",
                    cases[c].before ? cases[c].before : "");
        CHECK_STR(got, cases[c].want);
        /* The same answer when versions were read without the filter. */
        struct cal_versions *plain[N];
        for (int i = 0; i < N; i++)
            plain[i] = tc_msg("INBOX", (uint32_t)i + 1, T0, all[i], NULL, NULL);
        kept(plain, N, &f, got, sizeof got);
        CHECK_STR(got, cases[c].want);
        tc_free_all(m, N);
        tc_free_all(plain, N);
    }
    free(ended);
    free(once);
    free(allday);
    free(counted);
    free(rdate);
    free(repaired);
}

static void test_window_skips_cancelled_and_moved_occurrences(void)
{
    struct cal_filter f = {.has_after = 1, .has_before = 1};
    CHECK(cal_parse_date("2026-03-03", &f.after) == 0);
    CHECK(cal_parse_date("2026-03-04", &f.before) == 0);
    char *series = evx("s@x", ":20260301T100000Z", ":20260301T110000Z",
                       "RRULE:FREQ=DAILY;COUNT=3\nSEQUENCE:0\n");
    char *exdated = evx("ex@x", ":20260301T100000Z", ":20260301T110000Z",
                        "RRULE:FREQ=DAILY;COUNT=3\nEXDATE:20260303T100000Z\n");
    const char *cancel = "BEGIN:VCALENDAR\nMETHOD:CANCEL\nBEGIN:VEVENT\nUID:s@x\n"
                         "DTSTAMP:20260102T000000Z\nSEQUENCE:1\n"
                         "RECURRENCE-ID:20260303T100000Z\nEND:VEVENT\nEND:VCALENDAR\n";
    const char *move_out = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:s@x\nDTSTAMP:20260102T000000Z\n"
                           "RECURRENCE-ID:20260303T100000Z\nDTSTART:20260401T100000Z\n"
                           "DTEND:20260401T110000Z\nEND:VEVENT\nEND:VCALENDAR\n";
    const char *move_in = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:s@x\nDTSTAMP:20260102T000000Z\n"
                          "RECURRENCE-ID:20260302T100000Z\nDTSTART:20260303T150000Z\n"
                          "DTEND:20260303T160000Z\nEND:VEVENT\nEND:VCALENDAR\n";
    char got[256];
    struct cal_versions *a[2] = {tc_msg("INBOX", 1, T0, series, &f, NULL),
                                 tc_msg("INBOX", 2, T0 + 1, exdated, &f, NULL)};
    kept(a, 2, &f, got, sizeof got);
    CHECK_STR(got, "s@x"); /* ex@x's only instance in the window is excluded */
    struct cal_versions *b[2] = {a[0], tc_msg("INBOX", 3, T0 + 2, cancel, &f, NULL)};
    kept(b, 2, &f, got, sizeof got);
    CHECK_STR(got, "");
    struct cal_versions *c[2] = {a[0], tc_msg("INBOX", 4, T0 + 3, move_out, &f, NULL)};
    kept(c, 2, &f, got, sizeof got);
    CHECK_STR(got, "");
    struct cal_versions *d[3] = {a[0], b[1], tc_msg("INBOX", 5, T0 + 4, move_in, &f, NULL)};
    kept(d, 3, &f, got, sizeof got);
    CHECK_STR(got, "s@x");
    tc_free_all(a, 2);
    cal_versions_free(b[1]);
    cal_versions_free(c[1]);
    cal_versions_free(d[2]);
    free(series);
    free(exdated);
}

static void test_privacy_busy(void)
{
    struct cal_filter f = {.privacy_busy = 1};
    struct cal_versions *m = tc_file("INBOX", 1, T0, "outlook_request.ics", &f, NULL);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, &f, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    CHECK(r.nevents == 1);
    if (r.nevents == 1) {
        const char *d = r.events[0].data;
        size_t n = r.events[0].len;
        CHECK(tc_format_ok(d, n));
        CHECK(tc_has(d, n, "\r\nSUMMARY:Busy\r\n"));
        CHECK(tc_count(d, n, "SUMMARY") == 1);
        const char *gone[] = {"DESCRIPTION", "LOCATION",    "ATTENDEE", "Quarterly",
                              "Zürich",      "X-MICROSOFT", "VALARM",   "Alice"};
        for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++) {
            if (tc_has(d, n, gone[i])) {
                fprintf(stderr, "  still has %s\n", gone[i]);
                CHECK(0);
            }
        }
        CHECK(tc_has(d, n, "DTSTART;TZID=W. Europe Standard Time:20260310T100000\r\n"));
        CHECK(tc_has(d, n, "X-IMAPCALFS-SOURCE:"));
        CHECK(tc_has(d, n, "BEGIN:VTIMEZONE"));
    }
    tc_result_free(&r);
    cal_versions_free(m);
}

static void test_privacy_match_uses_sender_text(void)
{
    struct cal_filter f = {.privacy_busy = 1};
    char err[128], got[256];
    CHECK(cal_filter_add_match(&f, "SUMMARY~quarterly", err, sizeof err) == 0);
    CHECK(cal_filter_add_match(&f, "LOCATION~zürich", err, sizeof err) == 0);
    struct cal_versions *m = tc_file("INBOX", 1, T0, "outlook_request.ics", &f, NULL);
    kept(&m, 1, &f, got, sizeof got);
    CHECK(strncmp(got, "040000008200E000", 16) == 0);
    cal_versions_free(m);
    cal_filter_free(&f);
    struct cal_filter g = {.privacy_busy = 1};
    CHECK(cal_filter_add_match(&g, "SUMMARY~^busy$", err, sizeof err) == 0);
    m = tc_file("INBOX", 1, T0, "outlook_request.ics", &g, NULL);
    kept(&m, 1, &g, got, sizeof got);
    CHECK_STR(got, "");
    cal_versions_free(m);
    cal_filter_free(&g);
}

static void test_hostile_rules_stay_bounded(void)
{
    struct cal_filter f = {.has_after = 1, .has_before = 1};
    CHECK(cal_parse_date("2026-03-03", &f.after) == 0);
    CHECK(cal_parse_date("2026-03-04", &f.before) == 0);
    /* Never matches (February 30th); secondly; an absurd COUNT. */
    char *never =
        evx("never@x", ":20260101T100000Z", NULL, "RRULE:FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30\n");
    char *secondly = evx("secondly@x", ":20200101T100000Z", NULL, "RRULE:FREQ=SECONDLY\n");
    char *counted =
        evx("count@x", ":19000101T100000Z", NULL, "RRULE:FREQ=HOURLY;COUNT=100000000\n");
    const char *all[] = {never, secondly, counted};
    struct cal_versions *m[3];
    for (int i = 0; i < 3; i++)
        m[i] = tc_msg("INBOX", (uint32_t)i + 1, T0, all[i], &f, NULL);
    char got[256];
    kept(m, 3, &f, got, sizeof got);
    /* Unknowable cheaply, so kept; "never" has no instance at all. */
    CHECK_STR(got, "count@x secondly@x");
    tc_free_all(m, 3);
    free(never);
    free(secondly);
    free(counted);
}

int main(void)
{
    cal_global_init();
    RUN(test_parse_date_forms);
    RUN(test_add_match_syntax);
    RUN(test_match_filter);
    RUN(test_after_before_with_recurrence);
    RUN(test_window_skips_cancelled_and_moved_occurrences);
    RUN(test_privacy_busy);
    RUN(test_privacy_match_uses_sender_text);
    RUN(test_hostile_rules_stay_bounded);
    return UNIT_DONE();
}
