/*
 * test_cal_tz.c — time zones (SPEC §3): the sender's VTIMEZONE first, then
 * repair of IANA and Windows TZIDs, warnings for the rest, RECURRENCE-ID
 * keys that agree across zones, and the shared repair cache under threads.
 */
#include "cal.h"
#include "cal_internal.h"
#include "test_cal_util.h"
#include "tzwin.h"
#include "unit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define T0 1767225600 /* 2026-01-01T00:00:00Z */

/* A calendar with one event whose DTSTART/DTEND use tzid (quoted if needed). */
static char *tz_event(const char *uid, const char *tzparam, const char *vtimezone)
{
    char *buf = malloc(8192);
    snprintf(buf, 8192,
             "BEGIN:VCALENDAR\nVERSION:2.0\nMETHOD:REQUEST\n%s"
             "BEGIN:VEVENT\nUID:%s\nDTSTAMP:20260101T000000Z\n"
             "DTSTART;TZID=%s:20260310T100000\nDTEND;TZID=%s:20260310T110000\n"
             "SUMMARY:zone test\nEND:VEVENT\nEND:VCALENDAR\n",
             vtimezone ? vtimezone : "", uid, tzparam, tzparam);
    return buf;
}

/* Resolves one message made of ics; returns its only event file's text. */
static char *one_event(const char *ics, struct cal_stats *st)
{
    struct cal_versions *m = tc_msg("INBOX", 1, T0, ics, NULL, st);
    struct tc_result r;
    char *out = NULL;
    if (tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS, &r) == 0 && r.nevents == 1) {
        if (!tc_format_ok(r.events[0].data, r.events[0].len))
            fprintf(stderr, "  bad format\n");
        out = tc_unfold(r.events[0].data, r.events[0].len);
    }
    tc_result_free(&r);
    cal_versions_free(m);
    return out;
}

static void test_iana_tzid_repaired(void)
{
    struct cal_stats st = {0};
    char *ics = tz_event("iana@x", "Europe/Berlin", NULL);
    char *out = one_event(ics, &st);
    CHECK(out != NULL);
    if (out) {
        CHECK(strstr(out, "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\n") != NULL);
        CHECK(strstr(out, "freeassociation") == NULL);
        CHECK(strstr(out, "TZOFFSETTO:+0200") && strstr(out, "TZOFFSETTO:+0100"));
        CHECK(strstr(out, "DTSTART;TZID=Europe/Berlin:20260310T100000\r\n") != NULL);
    }
    CHECK(st.warnings == 0);
    free(out);
    free(ics);

    /* A vendor prefix in front of the IANA name (old Lightning, libical). */
    ics = tz_event("mozilla@x", "/mozilla.org/20050126_1/America/New_York", NULL);
    out = one_event(ics, &st);
    CHECK(out && strstr(out, "\r\nTZID:/mozilla.org/20050126_1/America/New_York\r\n"));
    CHECK(out && strstr(out, "X-LIC-LOCATION:America/New_York"));
    CHECK(st.warnings == 0);
    free(out);
    free(ics);

    ics = tz_event("utc@x", "UTC", NULL);
    out = one_event(ics, &st);
    CHECK(out && strstr(out, "BEGIN:VTIMEZONE\r\nTZID:UTC\r\n") && strstr(out, "TZOFFSETTO:+0000"));
    CHECK(st.warnings == 0);
    free(out);
    free(ics);
}

static void test_windows_tzid_repaired(void)
{
    struct cal_stats st = {0};
    char *ics = tz_event("win@x", "W. Europe Standard Time", NULL);
    char *out = one_event(ics, &st);
    CHECK(out != NULL);
    if (out) {
        CHECK(strstr(out, "BEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\n") != NULL);
        CHECK(strstr(out, "X-LIC-LOCATION:Europe/Berlin") != NULL);
        CHECK(strstr(out, "DTSTART;TZID=W. Europe Standard Time:20260310T100000") != NULL);
    }
    free(out);
    free(ics);
    ics = tz_event("east@x", "Eastern Standard Time", NULL);
    out = one_event(ics, &st);
    CHECK(out && strstr(out, "X-LIC-LOCATION:America/New_York"));
    free(out);
    free(ics);
    CHECK(st.warnings == 0);
}

static void test_outlook_display_name_repaired(void)
{
    struct cal_stats st = {0};
    char *ics = tz_event("disp@x",
                         "\"(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna\"", NULL);
    char *out = one_event(ics, &st);
    CHECK(out != NULL);
    if (out) {
        CHECK(strstr(out, "X-LIC-LOCATION:Europe/Berlin") != NULL);
        CHECK(strstr(out, "DTSTART;TZID=\"(UTC+01:00) Amsterdam, Berlin, Bern, Rome, "
                          "Stockholm, Vienna\":20260310T100000") != NULL);
        CHECK(strstr(out, "BEGIN:VTIMEZONE\r\nTZID:(UTC+01:00) Amsterdam") != NULL);
    }
    CHECK(st.warnings == 0);
    free(out);
    free(ics);
}

static void test_windows_name_forms(void)
{
    CHECK_STR(tzwin_to_iana("W. Europe Standard Time"), "Europe/Berlin");
    CHECK_STR(tzwin_to_iana("w. europe standard time"), "Europe/Berlin");
    CHECK_STR(tzwin_to_iana("W. Europe Standard Time 1"), "Europe/Berlin");
    CHECK_STR(tzwin_to_iana("(GMT+01.00) Amsterdam / Berlin / Bern / Rome / Stockholm / Vienna"),
              "Europe/Berlin");
    CHECK_STR(tzwin_to_iana("(UTC-05:00) Eastern Time (US & Canada)"), "America/New_York");
    CHECK_STR(tzwin_to_iana("(UTC+02:00) Helsinki, Kyiv, Riga, Sofia, Tallinn, Vilnius"),
              "Europe/Kyiv Europe/Kiev");
    CHECK_STR(tzwin_to_iana("Romance Standard Time"), "Europe/Paris");
    CHECK_STR(tzwin_to_iana("New Zealand Standard Time"), "Pacific/Auckland");
    CHECK_STR(tzwin_to_iana("SA Pacific Standard Time"), "America/Bogota");
    CHECK_STR(tzwin_to_iana("UTC-11"), "Etc/GMT+11");
    CHECK_STR(tzwin_to_iana("UTC+12"), "Etc/GMT-12");
    CHECK(tzwin_to_iana("UTC+11") == NULL);
    CHECK(tzwin_to_iana("Customized Time Zone") == NULL);
    CHECK(tzwin_to_iana("Europe/Berlin") == NULL);
    CHECK(tzwin_to_iana("") == NULL);
    CHECK(tzwin_count() > 130);
}

static void test_every_windows_zone_has_a_vtimezone(void)
{
    struct cal_stats st = {0};
    size_t n = tzwin_count(), missing = 0;
    /* One calendar using every Windows id at once, with no VTIMEZONE. */
    size_t cap = n * 200 + 1024;
    char *ics = malloc(cap);
    size_t len = (size_t)snprintf(ics, cap, "BEGIN:VCALENDAR\nVERSION:2.0\n");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(ics + len, cap - len,
                                "BEGIN:VEVENT\nUID:w%03zu@x\nDTSTAMP:20260101T000000Z\n"
                                "DTSTART;TZID=%s:20260310T100000\nEND:VEVENT\n",
                                i, tzwin_id(i));
    snprintf(ics + len, cap - len, "END:VCALENDAR\n");
    struct cal_versions *m = tc_msg("INBOX", 1, T0, ics, NULL, &st);
    CHECK(cal_versions_count(m) == n);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_EVENTS | CAL_WANT_MERGED, &r) == 0);
    for (size_t i = 0; i < r.nevents; i++) {
        if (tc_count(r.events[i].data, r.events[i].len, "BEGIN:VTIMEZONE") != 1) {
            fprintf(stderr, "  no zone for %s\n", tzwin_id(i));
            missing++;
        }
    }
    CHECK(missing == 0 && st.warnings == 0);
    CHECK(tc_count(r.merged, r.merged_len, "BEGIN:VTIMEZONE") == (int)n);
    tc_result_free(&r);
    cal_versions_free(m);
    free(ics);
}

/* python-icalendar 4 (khal on Debian 12) builds every VTIMEZONE it reads
 * and rejects RRULEs with a UTC UNTIL: repaired zones must avoid them. */
static void test_repaired_zones_load_in_python_icalendar(void)
{
    if (system("/usr/bin/python3 -c 'import icalendar' 2>/dev/null") != 0)
        return; /* optional check: needs Debian's python3-icalendar */
    size_t n = tzwin_count(), cap = n * 200 + 1024;
    char *ics = malloc(cap);
    size_t len = (size_t)snprintf(ics, cap, "BEGIN:VCALENDAR\n");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(ics + len, cap - len,
                                "BEGIN:VEVENT\nUID:p%03zu@x\nDTSTAMP:20260101T000000Z\n"
                                "DTSTART;TZID=%s:20260710T100000\nEND:VEVENT\n",
                                i, tzwin_id(i));
    snprintf(ics + len, cap - len, "END:VCALENDAR\n");
    struct cal_versions *m = tc_msg("INBOX", 1, T0, ics, NULL, NULL);
    struct tc_result r;
    CHECK(tc_resolve(&m, 1, NULL, CAL_WANT_MERGED, &r) == 0);
    char path[] = "/tmp/test_cal_tz_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, r.merged, r.merged_len) == (ssize_t)r.merged_len);
        close(fd);
        /* Every event gets an aware DTSTART; Berlin's is +02:00 in July. */
        size_t berlin = 0;
        for (size_t i = 0; i < n; i++)
            if (strcmp(tzwin_id(i), "W. Europe Standard Time") == 0)
                berlin = i;
        char cmd[768];
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c 'import sys, icalendar\n"
                 "c = icalendar.Calendar.from_ical(open(sys.argv[1], \"rb\").read())\n"
                 "ev = {str(e[\"UID\"]): e[\"DTSTART\"].dt for e in c.walk(\"VEVENT\")}\n"
                 "ok = len(ev) == %zu and all(d.tzinfo for d in ev.values())\n"
                 "ok = ok and ev[sys.argv[2]].utcoffset().total_seconds() == 7200\n"
                 "sys.exit(0 if ok else 1)' %s p%03zu@x",
                 n, path, berlin);
        CHECK(system(cmd) == 0);
        unlink(path);
    }
    tc_result_free(&r);
    cal_versions_free(m);
    free(ics);
}

static void test_unknown_tzid_warns(void)
{
    struct cal_stats st = {0};
    char *ics = tz_event("mars@x", "Mars/Olympus", NULL);
    char *out = one_event(ics, &st);
    CHECK(out != NULL);
    if (out) {
        CHECK(strstr(out, "VTIMEZONE") == NULL);
        CHECK(strstr(out, "DTSTART;TZID=Mars/Olympus:20260310T100000") != NULL);
    }
    CHECK(st.warnings == 1); /* DTSTART and DTEND: one TZID, one warning */
    free(out);
    free(ics);
    ics = tz_event("custom@x", "Customized Time Zone", NULL);
    out = one_event(ics, &st);
    CHECK(out && !strstr(out, "VTIMEZONE"));
    CHECK(st.warnings == 2);
    free(out);
    free(ics);
    /* Path tricks never reach the zoneinfo directory. */
    ics = tz_event("path@x", "../../../../etc/localtime", NULL);
    out = one_event(ics, &st);
    CHECK(out && !strstr(out, "VTIMEZONE"));
    CHECK(st.warnings == 3);
    free(out);
    free(ics);
}

static const char berlin_sender[] =
    "BEGIN:VTIMEZONE\nTZID:Europe/Berlin\nBEGIN:STANDARD\nDTSTART:19701025T030000\n"
    "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\nTZOFFSETFROM:+0200\nTZOFFSETTO:+0100\n"
    "TZNAME:SENDER-CET\nEND:STANDARD\nBEGIN:DAYLIGHT\nDTSTART:19700329T020000\n"
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\nTZOFFSETFROM:+0100\nTZOFFSETTO:+0200\n"
    "TZNAME:SENDER-CEST\nEND:DAYLIGHT\nEND:VTIMEZONE\n";

static void test_sender_vtimezone_used_first(void)
{
    struct cal_stats st = {0};
    char *ics = tz_event("sender@x", "Europe/Berlin", berlin_sender);
    char *out = one_event(ics, &st);
    CHECK(out && strstr(out, "TZNAME:SENDER-CET") && !strstr(out, "X-LIC-LOCATION"));
    CHECK(out && tc_count(out, strlen(out), "BEGIN:VTIMEZONE") == 1);
    free(out);
    free(ics);
    /* A Windows name travels with the sender's own VTIMEZONE. */
    char win[2048];
    snprintf(win, sizeof win, "%s", berlin_sender);
    char *p = strstr(win, "Europe/Berlin");
    memmove(p + strlen("W. Europe Standard Time"), p + strlen("Europe/Berlin"),
            strlen(p + strlen("Europe/Berlin")) + 1);
    memcpy(p, "W. Europe Standard Time", strlen("W. Europe Standard Time"));
    ics = tz_event("sender-win@x", "W. Europe Standard Time", win);
    out = one_event(ics, &st);
    CHECK(out && strstr(out, "TZNAME:SENDER-CET") && !strstr(out, "X-LIC-LOCATION"));
    CHECK(st.warnings == 0);
    free(out);
    free(ics);
}

/* An override keyed in one zone and a cancel of it written in another. */
static void rid_across_zones(const char *tzid, const char *vtimezone)
{
    char master[4096], cancel[1024];
    snprintf(master, sizeof master,
             "BEGIN:VCALENDAR\nVERSION:2.0\nMETHOD:REQUEST\n%s"
             "BEGIN:VEVENT\nUID:rid@x\nDTSTAMP:20260101T000000Z\nSEQUENCE:0\n"
             "DTSTART;TZID=%s:20260105T093000\nRRULE:FREQ=WEEKLY;COUNT=10\n"
             "SUMMARY:series\nEND:VEVENT\n"
             "BEGIN:VEVENT\nUID:rid@x\nDTSTAMP:20260101T000000Z\nSEQUENCE:0\n"
             "RECURRENCE-ID;TZID=%s:20260112T093000\nDTSTART;TZID=%s:20260112T110000\n"
             "SUMMARY:moved\nEND:VEVENT\nEND:VCALENDAR\n",
             vtimezone ? vtimezone : "", tzid, tzid, tzid);
    snprintf(cancel, sizeof cancel,
             "BEGIN:VCALENDAR\nVERSION:2.0\nMETHOD:CANCEL\n"
             "BEGIN:VEVENT\nUID:rid@x\nDTSTAMP:20260102T000000Z\nSEQUENCE:1\n"
             "RECURRENCE-ID:20260112T083000Z\nEND:VEVENT\nEND:VCALENDAR\n");
    struct cal_versions *m[2] = {tc_msg("INBOX", 1, T0, master, NULL, NULL),
                                 tc_msg("INBOX", 2, T0 + 10, cancel, NULL, NULL)};
    struct tc_result r;
    CHECK(tc_resolve(m, 2, NULL, CAL_WANT_EVENTS, &r) == 0);
    CHECK(r.nevents == 1);
    if (r.nevents == 1) {
        CHECK(!tc_has(r.events[0].data, r.events[0].len, "SUMMARY:moved"));
        CHECK(tc_has(r.events[0].data, r.events[0].len, "EXDATE:20260112T083000Z\r\n"));
    }
    tc_result_free(&r);
    tc_free_all(m, 2);
}

static void test_rid_normalised_across_zones(void)
{
    rid_across_zones("Europe/Berlin", berlin_sender);  /* the sender's zone */
    rid_across_zones("W. Europe Standard Time", NULL); /* a repaired zone */
}

/* Offsets from cal_zone.c against libical's expansion of the same text,
 * at noon every 9 days from 1971 to 2036; returns the mismatches. */
static int zone_math_mismatches(const char *vtz_text, int step_days)
{
    char *cal = malloc(strlen(vtz_text) + 64);
    sprintf(cal, "BEGIN:VCALENDAR\r\n%sEND:VCALENDAR\r\n", vtz_text);
    icalcomponent *root = icalparser_parse_string(cal);
    free(cal);
    icalcomponent *vtz =
        root ? icalcomponent_get_first_component(root, ICAL_VTIMEZONE_COMPONENT) : NULL;
    struct cal_tzrules *rules = vtz ? cal_tzrules_compile(vtz) : NULL;
    icaltimezone *lz = icaltimezone_new();
    int bad = 0;
    if (!rules || !vtz || !icaltimezone_set_component(lz, icalcomponent_new_clone(vtz))) {
        bad = 1;
        goto out;
    }
    for (int64_t day = cal_days_from_civil(1971, 1, 1); day < cal_days_from_civil(2037, 1, 1);
         day += step_days) {
        struct icaltimetype t =
            icaltime_from_timet_with_zone((time_t)(day * 86400 + 43200), 0, NULL);
        int dst, want = icaltimezone_get_utc_offset(lz, &t, &dst);
        int got = cal_tzrules_offset(rules, day * 86400 + 43200);
        if (got != want && bad++ < 3)
            fprintf(stderr, "  %04d-%02d-%02d: %d, libical %d\n", t.year, t.month, t.day, got,
                    want);
    }
out:
    cal_tzrules_free(rules);
    icaltimezone_free(lz, 1);
    if (root)
        icalcomponent_free(root);
    return bad;
}

static void test_zone_math_agrees_with_libical(void)
{
    size_t len;
    char *text = tc_slurp("outlook_request.ics", &len);
    char *b = text ? strstr(text, "BEGIN:VTIMEZONE") : NULL;
    char *e = b ? strstr(b, "END:VTIMEZONE\r\n") : NULL;
    CHECK(e != NULL);
    if (e) {
        e[strlen("END:VTIMEZONE\r\n")] = '\0';
        CHECK(zone_math_mismatches(b, 9) == 0); /* Exchange: rules from 1601 */
    }
    free(text);
    char sender[2048];
    snprintf(sender, sizeof sender, "%s", berlin_sender);
    CHECK(zone_math_mismatches(sender, 9) == 0);
    /* Southern hemisphere, fourth-Sunday style and BYMONTHDAY+BYDAY rules. */
    const char *odd = "BEGIN:VTIMEZONE\r\nTZID:Odd\r\nBEGIN:DAYLIGHT\r\n"
                      "DTSTART:19800907T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=9;BYDAY=SU;"
                      "BYMONTHDAY=8,9,10,11,12,13,14\r\nTZOFFSETFROM:-0300\r\n"
                      "TZOFFSETTO:-0200\r\nEND:DAYLIGHT\r\nBEGIN:STANDARD\r\n"
                      "DTSTART:19800406T020000\r\nRRULE:FREQ=YEARLY;INTERVAL=1;BYMONTH=4;"
                      "BYDAY=4SU;UNTIL=20200426T050000Z\r\nTZOFFSETFROM:-0200\r\n"
                      "TZOFFSETTO:-0300\r\nEND:STANDARD\r\nBEGIN:STANDARD\r\n"
                      "DTSTART:20210401T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=4;BYMONTHDAY=-1\r\n"
                      "TZOFFSETFROM:-0200\r\nTZOFFSETTO:-0300\r\nEND:STANDARD\r\n"
                      "END:VTIMEZONE\r\n";
    CHECK(zone_math_mismatches(odd, 9) == 0);
    /* Every repaired Windows zone (fewer samples under valgrind). */
    int step = getenv("VALGRIND") ? 97 : 9;
    for (size_t i = 0; i < tzwin_count(); i++) {
        const char *vtz = cal_tz_repair_text(tzwin_id(i), NULL);
        CHECK(vtz != NULL);
        if (vtz && zone_math_mismatches(vtz, step)) {
            fprintf(stderr, "  zone %s\n", tzwin_id(i));
            CHECK(0);
        }
        if (getenv("VALGRIND"))
            i += 4;
    }
}

static void test_hostile_vtimezone_is_not_expanded(void)
{
    /* A never-matching hourly rule spins libical's iterator for seconds. */
    const char *ics = "BEGIN:VCALENDAR\nBEGIN:VTIMEZONE\nTZID:Evil\nBEGIN:STANDARD\n"
                      "DTSTART:19700101T000000\nRRULE:FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=30\n"
                      "TZOFFSETFROM:+0100\nTZOFFSETTO:+0100\nEND:STANDARD\nEND:VTIMEZONE\n"
                      "BEGIN:VEVENT\nUID:evil@x\nRECURRENCE-ID;TZID=Evil:20260101T100000\n"
                      "DTSTART;TZID=Evil:20260101T100000\nEND:VEVENT\nEND:VCALENDAR\n";
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct cal_versions *m = tc_msg("INBOX", 1, T0, ics, NULL, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    CHECK(cal_versions_count(m) == 1);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    CHECK(secs < 1.0);
    cal_versions_free(m);
}

struct tz_thread {
    const char *tzid;
    int ok;
};

static void *tz_worker(void *arg)
{
    struct tz_thread *t = arg;
    t->ok = 1;
    for (int i = 0; i < 30; i++) {
        char uid[32];
        snprintf(uid, sizeof uid, "thr%d@x", i);
        char *ics = tz_event(uid, t->tzid, NULL);
        struct cal_stats st = {0};
        char *out = one_event(ics, &st);
        if (!out || !strstr(out, "BEGIN:VTIMEZONE") || st.warnings)
            t->ok = 0;
        free(out);
        free(ics);
    }
    return NULL;
}

static void test_threads_share_the_repair_cache(void)
{
    struct tz_thread t[4] = {{"Asia/Tokyo", 0},
                             {"Tokyo Standard Time", 0},
                             {"America/Sao_Paulo", 0},
                             {"(UTC+09:30) Adelaide", 0}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, tz_worker, &t[i]);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(t[i].ok);
    }
}

int main(void)
{
    cal_global_init();
    RUN(test_iana_tzid_repaired);
    RUN(test_windows_tzid_repaired);
    RUN(test_outlook_display_name_repaired);
    RUN(test_windows_name_forms);
    RUN(test_every_windows_zone_has_a_vtimezone);
    RUN(test_repaired_zones_load_in_python_icalendar);
    RUN(test_unknown_tzid_warns);
    RUN(test_sender_vtimezone_used_first);
    RUN(test_rid_normalised_across_zones);
    RUN(test_zone_math_agrees_with_libical);
    RUN(test_hostile_vtimezone_is_not_expanded);
    RUN(test_threads_share_the_repair_cache);
    return UNIT_DONE();
}
