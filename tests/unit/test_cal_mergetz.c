/*
 * test_cal_mergetz.c — merged.ics when one TZID name stands for different
 * zones in different mail (Outlook's "Customized Time Zone"): one
 * VTIMEZONE per definition, the later ones renamed, and every time in the
 * merge still meaning what its sender meant (checked with libical).
 */
#include "cal.h"
#include "test_cal_util.h"
#include "unit.h"

#include <libical/ical.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1772323200 /* 2026-03-01T00:00:00Z */
#define CTZ "Customized Time Zone"

/* Central European rules as Outlook writes them (DTSTART in 1601). */
#define VTZ_BERLIN(name)                                                                           \
    "BEGIN:VTIMEZONE\r\nTZID:" name "\r\n"                                                         \
    "BEGIN:STANDARD\r\nDTSTART:16010101T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\n"      \
    "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10\r\nEND:STANDARD\r\n"                       \
    "BEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n"      \
    "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n"

/* The same zone written by another client: other order of rules and of
 * properties, a TZNAME, LAST-MODIFIED, X-LIC-LOCATION, lower-case names,
 * LF line ends, folded lines. None of it changes a time. */
#define VTZ_BERLIN_NOISY(name)                                                                     \
    "BEGIN:VTIMEZONE\ntzid:" name "\nLAST-MODIFIED:20240101T000000Z\n"                             \
    "X-LIC-LOCATION:Europe/Berlin\n"                                                               \
    "BEGIN:DAYLIGHT\nTZNAME:CEST\nTZOFFSETTO:+0200\nTZOFFSETFROM:+0100\n"                          \
    "RRULE:FREQ=YEARLY;INTERVAL=1;\n "                                                             \
    "BYDAY=-1SU;BYMONTH=3\nDTSTART:16010101T020000\nEND:DAYLIGHT\n"                                \
    "BEGIN:STANDARD\nDTSTART:16010101T030000\nTZOFFSETFROM:+0200\nTZOFFSETTO:+0100\n"              \
    "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10\nTZNAME:CET\nEND:STANDARD\n"               \
    "END:VTIMEZONE\n"

/* US Eastern rules. */
#define VTZ_NEWYORK(name)                                                                          \
    "BEGIN:VTIMEZONE\r\nTZID:" name "\r\n"                                                         \
    "BEGIN:STANDARD\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:-0400\r\nTZOFFSETTO:-0500\r\n"      \
    "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=1SU;BYMONTH=11\r\nEND:STANDARD\r\n"                        \
    "BEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:-0500\r\nTZOFFSETTO:-0400\r\n"      \
    "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=2SU;BYMONTH=3\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n"

/* A fixed +09:00. */
#define VTZ_TOKYO(name)                                                                            \
    "BEGIN:VTIMEZONE\r\nTZID:" name "\r\n"                                                         \
    "BEGIN:STANDARD\r\nDTSTART:16010101T000000\r\nTZOFFSETFROM:+0900\r\nTZOFFSETTO:+0900\r\n"      \
    "END:STANDARD\r\nEND:VTIMEZONE\r\n"

/* 2026-03-12: New York is on daylight time (since 8 March), Berlin not yet. */
#define UTC_1300 1773320400LL /* 2026-03-12T13:00:00Z */
#define UTC_1400 1773324000LL /* 2026-03-12T14:00:00Z */

/* A REQUEST with one VTIMEZONE and one event at 2026-03-12 `local`;
 * tzparam is the TZID parameter as written (quoted or not). */
static char *request(const char *vtz, const char *uid, const char *tzparam, const char *local)
{
    size_t cap = strlen(vtz) + 2048;
    char *s = malloc(cap);
    snprintf(s, cap,
             "BEGIN:VCALENDAR\r\nPRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN\r\n"
             "VERSION:2.0\r\nMETHOD:REQUEST\r\n%s"
             "BEGIN:VEVENT\r\nUID:%s\r\nDTSTAMP:20260301T000000Z\r\nSEQUENCE:0\r\n"
             "DTSTART;TZID=%s:20260312T%s\r\nDTEND;TZID=%s:20260312T235900\r\n"
             "SUMMARY:%s\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
             vtz, uid, tzparam, local, tzparam, uid);
    return s;
}

/* Merges the messages; returns merged.ics (caller frees) and checks its format. */
static char *merge(struct cal_versions **m, size_t n, size_t *len)
{
    struct tc_result r;
    char *out = NULL;
    if (tc_resolve(m, n, NULL, CAL_WANT_MERGED | CAL_WANT_EVENTS, &r) != 0)
        return NULL;
    if (!tc_format_ok(r.merged, r.merged_len))
        fprintf(stderr, "  merged.ics format\n");
    else
        out = malloc(r.merged_len + 1);
    if (out) {
        memcpy(out, r.merged, r.merged_len + 1);
        *len = r.merged_len;
    }
    tc_result_free(&r);
    return out;
}

/*
 * With libical: the UTC time of property kind of the VEVENT uid (its
 * master, or its override when override), read in the VTIMEZONE of the
 * calendar that its TZID parameter names. -1 when there is no such
 * property, -2 when it has no TZID, -3 when no VTIMEZONE has that TZID.
 */
static long long utc_of(icalcomponent *cal, const char *uid, int override, icalproperty_kind kind)
{
    for (icalcomponent *c = icalcomponent_get_first_component(cal, ICAL_VEVENT_COMPONENT); c;
         c = icalcomponent_get_next_component(cal, ICAL_VEVENT_COMPONENT)) {
        const char *u = icalcomponent_get_uid(c);
        int is_override = icalcomponent_get_first_property(c, ICAL_RECURRENCEID_PROPERTY) != NULL;
        if (!u || strcmp(u, uid) != 0 || is_override != override)
            continue;
        icalproperty *p = icalcomponent_get_first_property(c, kind);
        if (!p)
            return -1;
        icalparameter *tp = icalproperty_get_first_parameter(p, ICAL_TZID_PARAMETER);
        if (!tp)
            return -2;
        icaltimezone *z = icalcomponent_get_timezone(cal, icalparameter_get_tzid(tp));
        if (!z)
            return -3;
        struct icaltimetype t = icalvalue_get_datetime(icalproperty_get_value(p));
        return (long long)icaltime_as_timet_with_zone(t, z);
    }
    return -1;
}

/* Number of VTIMEZONEs, and 1 in *unique when their TZIDs differ. */
static int count_zones(icalcomponent *cal, int *unique)
{
    const char *seen[16];
    int n = 0;
    *unique = 1;
    for (icalcomponent *z = icalcomponent_get_first_component(cal, ICAL_VTIMEZONE_COMPONENT); z;
         z = icalcomponent_get_next_component(cal, ICAL_VTIMEZONE_COMPONENT)) {
        icalproperty *p = icalcomponent_get_first_property(z, ICAL_TZID_PROPERTY);
        const char *tzid = p ? icalproperty_get_tzid(p) : "";
        for (int i = 0; i < n && i < 16; i++)
            if (strcmp(seen[i], tzid) == 0)
                *unique = 0;
        if (n < 16)
            seen[n] = tzid;
        n++;
    }
    return n;
}

static icalcomponent *parse(const char *text)
{
    icalcomponent *c = text ? icalparser_parse_string(text) : NULL;
    CHECK(c != NULL);
    return c;
}

static void test_two_definitions_of_one_tzid_get_two_zones(void)
{
    char *a = request(VTZ_BERLIN(CTZ), "workshop@x", CTZ, "140000");
    char *b = request(VTZ_NEWYORK(CTZ), "budget@x", CTZ, "100000");
    struct cal_versions *m[2] = {tc_msg("Berlin", 1, T0, a, NULL, NULL),
                                 tc_msg("NewYork", 1, T0, b, NULL, NULL)};
    size_t len = 0;
    char *out = merge(m, 2, &len);
    icalcomponent *cal = parse(out);
    if (cal) {
        int unique;
        CHECK(count_zones(cal, &unique) == 2 && unique);
        CHECK(utc_of(cal, "workshop@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1300);
        CHECK(utc_of(cal, "budget@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1400);
        CHECK(utc_of(cal, "budget@x", 0, ICAL_DTEND_PROPERTY) ==
              utc_of(cal, "budget@x", 0, ICAL_DTSTART_PROPERTY) + 13 * 3600 + 59 * 60);
        icalcomponent_free(cal);
    }
    /* The first event in output order (by UID) keeps the name; the other
     * name is the old one plus a suffix. */
    CHECK(out && tc_has(out, len, "BEGIN:VTIMEZONE\r\nTZID:" CTZ "\r\n"));
    CHECK(out && tc_has(out, len, "BEGIN:VTIMEZONE\r\nTZID:" CTZ " ("));
    CHECK(out && tc_has(out, len, "DTSTART;TZID=" CTZ " ("));
    free(out);
    /* Event files keep the sender's name and definition. */
    struct tc_result r;
    CHECK(tc_resolve(m, 2, NULL, CAL_WANT_EVENTS, &r) == 0 && r.nevents == 2);
    for (size_t i = 0; i < r.nevents; i++) {
        CHECK(tc_has(r.events[i].data, r.events[i].len, "DTSTART;TZID=" CTZ ":20260312T"));
        CHECK(tc_has(r.events[i].data, r.events[i].len, "\r\nTZID:" CTZ "\r\n"));
        CHECK(!tc_has(r.events[i].data, r.events[i].len, CTZ " ("));
    }
    tc_result_free(&r);
    tc_free_all(m, 2);
    free(a);
    free(b);
}

static void test_identical_definitions_give_one_zone(void)
{
    char *a = request(VTZ_BERLIN(CTZ), "one@x", CTZ, "140000");
    char *b = request(VTZ_BERLIN(CTZ), "two@x", CTZ, "140000");
    char *c = request(VTZ_BERLIN_NOISY(CTZ), "three@x", CTZ, "140000");
    struct cal_versions *m[3] = {tc_msg("INBOX", 1, T0, a, NULL, NULL),
                                 tc_msg("INBOX", 2, T0, b, NULL, NULL),
                                 tc_msg("Other", 1, T0, c, NULL, NULL)};
    size_t len = 0;
    char *out = merge(m, 3, &len);
    icalcomponent *cal = parse(out);
    if (cal) {
        int unique;
        CHECK(count_zones(cal, &unique) == 1);
        CHECK(utc_of(cal, "one@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1300);
        CHECK(utc_of(cal, "two@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1300);
        CHECK(utc_of(cal, "three@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1300);
        icalcomponent_free(cal);
    }
    CHECK(out && !tc_has(out, len, CTZ " ("));
    CHECK(out && tc_count(out, len, "DTSTART;TZID=" CTZ ":20260312T140000\r\n") == 3);
    /* The third sender's text differs (its event file shows it); the
     * merge kept the first one in output order. */
    CHECK(out && !tc_has(out, len, "TZNAME:CEST"));
    struct tc_result r;
    CHECK(tc_resolve(m, 3, NULL, CAL_WANT_EVENTS, &r) == 0 && r.nevents == 3);
    const struct tc_event *third = tc_event(&r, "three@x");
    CHECK(third && tc_has(third->data, third->len, "TZNAME:CEST"));
    tc_result_free(&r);
    free(out);
    tc_free_all(m, 3);
    free(a);
    free(b);
    free(c);
}

static void test_three_definitions_of_one_tzid(void)
{
    char *a = request(VTZ_BERLIN(CTZ), "a@x", CTZ, "140000");
    char *b = request(VTZ_NEWYORK(CTZ), "b@x", CTZ, "100000");
    char *c = request(VTZ_TOKYO(CTZ), "c@x", CTZ, "230000");
    char *d = request(VTZ_NEWYORK(CTZ), "d@x", CTZ, "090000"); /* shares b's zone */
    struct cal_versions *m[4] = {
        tc_msg("INBOX", 1, T0, a, NULL, NULL), tc_msg("INBOX", 2, T0, b, NULL, NULL),
        tc_msg("INBOX", 3, T0, c, NULL, NULL), tc_msg("INBOX", 4, T0, d, NULL, NULL)};
    size_t len = 0, len2 = 0;
    char *out = merge(m, 4, &len);
    icalcomponent *cal = parse(out);
    if (cal) {
        int unique;
        CHECK(count_zones(cal, &unique) == 3 && unique);
        CHECK(utc_of(cal, "a@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1300);
        CHECK(utc_of(cal, "b@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1400);
        CHECK(utc_of(cal, "c@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1400);
        CHECK(utc_of(cal, "d@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1300);
        icalcomponent_free(cal);
    }
    CHECK(out && tc_count(out, len, "DTSTART;TZID=" CTZ ":") == 1);
    /* A definition's name does not depend on what else is merged: without
     * the Tokyo event, New York's zone has the same name. */
    struct cal_versions *m2[2] = {m[0], m[1]};
    char *out2 = merge(m2, 2, &len2);
    char *u = out ? tc_unfold(out, len) : NULL, *u2 = out2 ? tc_unfold(out2, len2) : NULL;
    const char *p = u ? strstr(u, "UID:b@x") : NULL, *q = p ? strstr(p, "DTSTART;") : NULL;
    const char *p2 = u2 ? strstr(u2, "UID:b@x") : NULL, *q2 = p2 ? strstr(p2, "DTSTART;") : NULL;
    CHECK(q && q2 && strcspn(q, "\r") == strcspn(q2, "\r") &&
          strncmp(q, q2, strcspn(q, "\r")) == 0);
    free(u);
    free(u2);
    free(out);
    free(out2);
    tc_free_all(m, 4);
    free(a);
    free(b);
    free(c);
    free(d);
}

#define QTZ "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"

static void test_quoted_tzid_parameter_is_renamed(void)
{
    /* Outlook writes the property value with its commas as they are. */
    char *a = request(VTZ_BERLIN(QTZ), "q1@x", "\"" QTZ "\"", "140000");
    char *b = request(VTZ_NEWYORK(QTZ), "q2@x", "\"" QTZ "\"", "100000");
    struct cal_versions *m[2] = {tc_msg("INBOX", 1, T0, a, NULL, NULL),
                                 tc_msg("INBOX", 2, T0, b, NULL, NULL)};
    size_t len = 0;
    char *out = merge(m, 2, &len);
    icalcomponent *cal = parse(out);
    if (cal) {
        int unique;
        CHECK(count_zones(cal, &unique) == 2 && unique);
        CHECK(utc_of(cal, "q1@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1300);
        CHECK(utc_of(cal, "q2@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1400);
        CHECK(utc_of(cal, "q2@x", 0, ICAL_DTEND_PROPERTY) > UTC_1400);
        icalcomponent_free(cal);
    }
    CHECK(out && tc_has(out, len, "DTSTART;TZID=\"" QTZ " ("));
    CHECK(out && tc_has(out, len, "DTSTART;TZID=\"" QTZ "\":"));
    free(out);
    tc_free_all(m, 2);
    free(a);
    free(b);
}

/* A New York weekly series with an EXDATE, a moved occurrence and a
 * cancelled one (the cancel becomes an EXDATE added to the master). */
static void test_exdate_and_recurrence_id_are_renamed(void)
{
    char *a = request(VTZ_BERLIN(CTZ), "a-first@x", CTZ, "140000");
    char series[4096], cancel[2048];
    snprintf(series, sizeof series,
             "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\n%s"
             "BEGIN:VEVENT\r\nUID:series@x\r\nDTSTAMP:20260301T000000Z\r\nSEQUENCE:0\r\n"
             "DTSTART;TZID=" CTZ ":20260312T100000\r\nDURATION:PT1H\r\n"
             "RRULE:FREQ=WEEKLY;COUNT=6\r\nEXDATE;TZID=" CTZ ":20260319T100000\r\n"
             "SUMMARY:weekly\r\nEND:VEVENT\r\n"
             "BEGIN:VEVENT\r\nUID:series@x\r\nDTSTAMP:20260301T000000Z\r\nSEQUENCE:0\r\n"
             "RECURRENCE-ID;TZID=" CTZ ":20260326T100000\r\n"
             "DTSTART;TZID=" CTZ ":20260326T110000\r\nDURATION:PT1H\r\n"
             "SUMMARY:moved\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
             VTZ_NEWYORK(CTZ));
    snprintf(cancel, sizeof cancel,
             "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:CANCEL\r\n%s"
             "BEGIN:VEVENT\r\nUID:series@x\r\nDTSTAMP:20260302T000000Z\r\nSEQUENCE:1\r\n"
             "RECURRENCE-ID;TZID=" CTZ ":20260402T100000\r\nDTSTART;TZID=" CTZ
             ":20260402T100000\r\nSTATUS:CANCELLED\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
             VTZ_NEWYORK(CTZ));
    struct cal_versions *m[3] = {tc_msg("INBOX", 1, T0, a, NULL, NULL),
                                 tc_msg("INBOX", 2, T0, series, NULL, NULL),
                                 tc_msg("INBOX", 3, T0 + 60, cancel, NULL, NULL)};
    size_t len = 0;
    char *out = merge(m, 3, &len);
    icalcomponent *cal = parse(out);
    if (cal) {
        int unique;
        CHECK(count_zones(cal, &unique) == 2 && unique);
        CHECK(utc_of(cal, "a-first@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1300);
        CHECK(utc_of(cal, "series@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1400);
        /* 19 March 10:00 EDT = 14:00Z; 26 March 10:00 and 11:00 EDT. */
        CHECK(utc_of(cal, "series@x", 0, ICAL_EXDATE_PROPERTY) == UTC_1400 + 7 * 86400);
        CHECK(utc_of(cal, "series@x", 1, ICAL_RECURRENCEID_PROPERTY) == UTC_1400 + 14 * 86400);
        CHECK(utc_of(cal, "series@x", 1, ICAL_DTSTART_PROPERTY) == UTC_1400 + 14 * 86400 + 3600);
        /* The cancelled 2 April, 10:00 EDT = 14:00Z. */
        long long apr2 = -1;
        for (icalcomponent *c = icalcomponent_get_first_component(cal, ICAL_VEVENT_COMPONENT); c;
             c = icalcomponent_get_next_component(cal, ICAL_VEVENT_COMPONENT)) {
            if (strcmp(icalcomponent_get_uid(c), "series@x") != 0 ||
                icalcomponent_get_first_property(c, ICAL_RECURRENCEID_PROPERTY))
                continue;
            int n = 0;
            for (icalproperty *p = icalcomponent_get_first_property(c, ICAL_EXDATE_PROPERTY); p;
                 p = icalcomponent_get_next_property(c, ICAL_EXDATE_PROPERTY), n++) {
                icalparameter *tp = icalproperty_get_first_parameter(p, ICAL_TZID_PARAMETER);
                icaltimezone *z =
                    tp ? icalcomponent_get_timezone(cal, icalparameter_get_tzid(tp)) : NULL;
                if (n == 1 && z)
                    apr2 = (long long)icaltime_as_timet_with_zone(icalproperty_get_exdate(p), z);
            }
            CHECK(n == 2);
        }
        CHECK(apr2 == UTC_1400 + 21 * 86400);
        icalcomponent_free(cal);
    }
    /* Only the first event still says the bare name. */
    CHECK(out && tc_count(out, len, "TZID=" CTZ ":") == 2); /* a-first's DTSTART and DTEND */
    CHECK(out && tc_count(out, len, "TZID=" CTZ " (") == 5);
    free(out);
    tc_free_all(m, 3);
    free(a);
}

/* A long name: the rewritten lines are refolded at 75 octets. */
static void test_renamed_lines_are_folded(void)
{
#define LONG CTZ " for the regional office in Sao Paulo and the branch office in Lisbon"
    char *a = request(VTZ_BERLIN(LONG), "f1@x", LONG, "140000");
    char *b = request(VTZ_NEWYORK(LONG), "f2@x", LONG, "100000");
    struct cal_versions *m[2] = {tc_msg("INBOX", 1, T0, a, NULL, NULL),
                                 tc_msg("INBOX", 2, T0, b, NULL, NULL)};
    size_t len = 0;
    char *out = merge(m, 2, &len); /* merge() checks the 75-octet folding */
    CHECK(out != NULL);
    icalcomponent *cal = parse(out);
    if (cal) {
        CHECK(utc_of(cal, "f1@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1300);
        CHECK(utc_of(cal, "f2@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1400);
        icalcomponent_free(cal);
    }
    CHECK(out && tc_has(out, len, "\r\nTZID:" LONG " ("));
    free(out);
    tc_free_all(m, 2);
    free(a);
    free(b);
#undef LONG
}

/* The new name is never a TZID an event already uses. */
static void test_new_name_never_collides_with_a_tzid_in_use(void)
{
    char *a = request(VTZ_BERLIN(CTZ), "c1@x", CTZ, "140000");
    char *b = request(VTZ_NEWYORK(CTZ), "c2@x", CTZ, "100000");
    struct cal_versions *m[3] = {tc_msg("INBOX", 1, T0, a, NULL, NULL),
                                 tc_msg("INBOX", 2, T0, b, NULL, NULL), NULL};
    size_t len = 0;
    char *out = merge(m, 2, &len);
    char *u = out ? tc_unfold(out, len) : NULL;
    const char *p = u ? strstr(u, "\r\nTZID:" CTZ " (") : NULL;
    char taken[128] = "";
    if (p)
        snprintf(taken, sizeof taken, "%.*s", (int)strcspn(p + 7, "\r"), p + 7);
    CHECK(taken[0] != '\0');
    /* A third sender happens to use exactly that name, for Tokyo. */
    char vtz[1024];
    snprintf(vtz, sizeof vtz, VTZ_TOKYO("%s"), taken);
    char *c = request(vtz, "c3@x", taken, "230000");
    m[2] = tc_msg("INBOX", 3, T0, c, NULL, NULL);
    size_t len3 = 0;
    char *out3 = merge(m, 3, &len3);
    icalcomponent *cal = parse(out3);
    if (cal) {
        int unique;
        CHECK(count_zones(cal, &unique) == 3 && unique);
        CHECK(utc_of(cal, "c1@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1300);
        CHECK(utc_of(cal, "c2@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1400);
        CHECK(utc_of(cal, "c3@x", 0, ICAL_DTSTART_PROPERTY) == UTC_1400);
        icalcomponent_free(cal);
    }
    free(u);
    free(out);
    free(out3);
    tc_free_all(m, 3);
    free(a);
    free(b);
    free(c);
}

/* The same mail in any order (and mailbox) gives the same bytes. */
static void test_merge_is_deterministic_across_input_orders(void)
{
    char *ics[3] = {request(VTZ_BERLIN(CTZ), "p1@x", CTZ, "140000"),
                    request(VTZ_NEWYORK(CTZ), "p2@x", CTZ, "100000"),
                    request(VTZ_TOKYO(CTZ), "p3@x", CTZ, "230000")};
    struct cal_versions *m[3];
    for (int i = 0; i < 3; i++)
        m[i] = tc_msg("INBOX", (uint32_t)i + 1, T0 + i, ics[i], NULL, NULL);
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                    {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    char *first = NULL;
    size_t first_len = 0;
    for (int k = 0; k < 6; k++) {
        struct cal_versions *p[3] = {m[perms[k][0]], m[perms[k][1]], m[perms[k][2]]};
        size_t len = 0;
        char *out = merge(p, 3, &len);
        CHECK(out != NULL);
        if (!first) {
            first = out;
            first_len = len;
            continue;
        }
        CHECK(out && len == first_len && memcmp(out, first, len) == 0);
        free(out);
    }
    CHECK(first && tc_count(first, first_len, "BEGIN:VTIMEZONE") == 3);
    free(first);
    tc_free_all(m, 3);
    for (int i = 0; i < 3; i++)
        free(ics[i]);
}

int main(void)
{
    RUN(test_two_definitions_of_one_tzid_get_two_zones);
    RUN(test_identical_definitions_give_one_zone);
    RUN(test_three_definitions_of_one_tzid);
    RUN(test_quoted_tzid_parameter_is_renamed);
    RUN(test_exdate_and_recurrence_id_are_renamed);
    RUN(test_renamed_lines_are_folded);
    RUN(test_new_name_never_collides_with_a_tzid_in_use);
    RUN(test_merge_is_deterministic_across_input_orders);
    return UNIT_DONE();
}
