/*
 * cal_time.c — time arithmetic for the calendar module: resolving a TZID
 * within one calendar (the sender's VTIMEZONE first, then a repaired one),
 * UTC seconds and sortable keys of times, and the bounded recurrence
 * expansion behind the after/before filter (RFC 5545 §3.8.5).
 *
 * Never calls libical getters that resolve zones on their own
 * (icalcomponent_get_dtstart & co. fall back to the racy builtin table,
 * notes A2/A3): values are read raw and zones come from cal_zone_find().
 */
#include "cal_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAY 86400

const char *cal_prop_tzid(icalproperty *p)
{
    icalparameter *par = icalproperty_get_first_parameter(p, ICAL_TZID_PARAMETER);
    const char *t = par ? icalparameter_get_tzid(par) : NULL;
    return t && *t ? t : NULL;
}

void cal_zctx_free(struct cal_zctx *z)
{
    for (size_t i = 0; i < z->n; i++) {
        struct cal_zone *zn = z->zones[i];
        free(zn->tzid);
        cal_tzrules_free(zn->own_rules);
        if (zn->own_lz && zn->lz)
            icaltimezone_free(zn->lz, 1);
        free(zn);
    }
    free(z->zones);
    z->zones = NULL;
    z->n = 0;
}

/* Most observances (STANDARD/DAYLIGHT) a sender's zone may have. */
#define CAL_ZONE_OBS_MAX 1000

/*
 * Whether libical may expand a sender's VTIMEZONE: it walks each
 * observance's RRULE with the iterator that spins for seconds on a
 * never-matching HOURLY or DAILY rule, bounded only by the year. Real
 * zones recur yearly (RFC 5545 §3.6.5).
 */
static int cal_zone_sane(icalcomponent *vtz)
{
    size_t n = 0;
    for (icalcomponent *c = icalcomponent_get_first_component(vtz, ICAL_ANY_COMPONENT); c;
         c = icalcomponent_get_next_component(vtz, ICAL_ANY_COMPONENT)) {
        if (++n > CAL_ZONE_OBS_MAX)
            return 0;
        for (icalproperty *p = icalcomponent_get_first_property(c, ICAL_RRULE_PROPERTY); p;
             p = icalcomponent_get_next_property(c, ICAL_RRULE_PROPERTY))
            if (icalproperty_get_rrule(p).freq != ICAL_YEARLY_RECURRENCE)
                return 0;
    }
    return 1;
}

/* Fills zn from the sender's VTIMEZONE, else from the repair cache. */
static void cal_zone_fill(struct cal_zctx *z, struct cal_zone *zn)
{
    icaltimezone *tz = z->container ? icalcomponent_get_timezone(z->container, zn->tzid) : NULL;
    icalcomponent *vtz = tz ? icaltimezone_get_component(tz) : NULL;
    if (vtz) {
        if ((zn->own_rules = cal_tzrules_compile(vtz)) != NULL) {
            zn->rules = zn->own_rules;
            return;
        }
        if (cal_zone_sane(vtz)) {
            zn->lz = tz;
            return;
        }
    }
    if ((zn->rules = cal_tz_repair_rules(zn->tzid)) != NULL)
        return;
    zn->lz = cal_tz_repair_zone(zn->tzid);
    zn->own_lz = 1;
}

const struct cal_zone *cal_zone_find(struct cal_zctx *z, const char *tzid)
{
    if (!tzid)
        return NULL;
    for (size_t i = 0; i < z->n; i++)
        if (strcmp(z->zones[i]->tzid, tzid) == 0)
            return z->zones[i]->rules || z->zones[i]->lz ? z->zones[i] : NULL;
    struct cal_zone **a = realloc(z->zones, (z->n + 1) * sizeof *a);
    if (!a)
        return NULL;
    z->zones = a;
    struct cal_zone *zn = calloc(1, sizeof *zn);
    if (!zn || !(zn->tzid = strdup(tzid))) {
        free(zn);
        return NULL;
    }
    cal_zone_fill(z, zn);
    a[z->n++] = zn; /* remembered even when not found: looked up once */
    return zn->rules || zn->lz ? zn : NULL;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
int64_t cal_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void cal_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* The fields of t read as if they were UTC (libical has validated ranges). */
static int64_t cal_fields_secs(struct icaltimetype t)
{
    unsigned m = t.month >= 1 && t.month <= 12 ? (unsigned)t.month : 1;
    unsigned d = t.day >= 1 && t.day <= 31 ? (unsigned)t.day : 1;
    int64_t s = cal_days_from_civil(t.year, m, d) * DAY;
    if (!t.is_date)
        s += (int64_t)t.hour * 3600 + t.minute * 60 + t.second;
    return s;
}

static struct icaltimetype cal_secs_fields(int64_t s, int is_date)
{
    struct icaltimetype t = icaltime_null_time();
    int64_t days = s >= 0 ? s / DAY : -((-s + DAY - 1) / DAY);
    int64_t rem = s - days * DAY, y;
    unsigned m, d;
    cal_civil_from_days(days, &y, &m, &d);
    t.year = (int)y;
    t.month = (int)m;
    t.day = (int)d;
    t.is_date = is_date;
    if (!is_date) {
        t.hour = (int)(rem / 3600);
        t.minute = (int)(rem % 3600 / 60);
        t.second = (int)(rem % 60);
    }
    return t;
}

/* Offset east of UTC at local fields t in zone. */
static int cal_zone_offset(const struct cal_zone *zn, struct icaltimetype t)
{
    if (zn->rules)
        return cal_tzrules_offset(zn->rules, cal_fields_secs(t));
    int dst = 0;
    t.zone = NULL;
    return icaltimezone_get_utc_offset(zn->lz, &t, &dst);
}

/* Offset east of UTC at UTC seconds u in zone. */
static int cal_zone_offset_utc(const struct cal_zone *zn, int64_t u)
{
    if (zn->rules)
        return cal_tzrules_offset_utc(zn->rules, u);
    int dst = 0;
    struct icaltimetype t = cal_secs_fields(u, 0);
    return icaltimezone_get_utc_offset_of_utc_time(zn->lz, &t, &dst);
}

/* UTC seconds of local fields in zone (NULL: floating, read as UTC). */
static int64_t cal_local_utc(const struct cal_zone *zone, struct icaltimetype t)
{
    int64_t s = cal_fields_secs(t);
    if (zone && !t.is_date)
        s -= cal_zone_offset(zone, t);
    return s;
}

int64_t cal_time_utc(struct cal_zctx *z, struct icaltimetype t, const char *tzid)
{
    if (icaltime_is_null_time(t))
        return 0;
    if (t.is_date || icaltime_is_utc(t))
        return cal_fields_secs(t);
    return cal_local_utc(cal_zone_find(z, tzid), t);
}

static void cal_key_print(struct icaltimetype t, int utc, char out[CAL_KEY_MAX])
{
    unsigned y = t.year < 0 ? 0u : t.year > 9999 ? 9999u : (unsigned)t.year;
    unsigned mo = (unsigned)t.month % 100u, d = (unsigned)t.day % 100u;
    if (t.is_date) {
        snprintf(out, CAL_KEY_MAX, "%04u%02u%02u", y, mo, d);
        return;
    }
    snprintf(out, CAL_KEY_MAX, "%04u%02u%02uT%02u%02u%02u%s", y, mo, d, (unsigned)t.hour % 100u,
             (unsigned)t.minute % 100u, (unsigned)t.second % 100u, utc ? "Z" : "");
}

/* Key of local fields t in zone: UTC when the zone is known. */
static void cal_local_key(const struct cal_zone *zone, int utc, struct icaltimetype t,
                          char out[CAL_KEY_MAX])
{
    if (!t.is_date && zone) {
        t = cal_secs_fields(cal_local_utc(zone, t), 0);
        utc = 1;
    }
    cal_key_print(t, utc, out);
}

void cal_time_key(struct cal_zctx *z, struct icaltimetype t, const char *tzid,
                  char out[CAL_KEY_MAX])
{
    int utc = !t.is_date && icaltime_is_utc(t);
    cal_local_key(utc || t.is_date ? NULL : cal_zone_find(z, tzid), utc, t, out);
}

void cal_win_free(struct cal_win *w)
{
    free(w->keys);
    w->keys = NULL;
    w->nkeys = 0;
}

/* Is [s, s + dur) in the filter's window (an occurrence ending after
 * `after`, starting before `before`)? */
static int cal_in_window(const struct cal_win *w, int64_t s, int64_t dur)
{
    int64_t e = s + dur;
    return (!w->has_after || e > w->after) && (!w->has_before || s < w->before);
}

/* Counts one in-window occurrence; returns 1 when counting can stop. */
static int cal_win_add(struct cal_win *w, const char *key)
{
    if (w->total == CAL_WIN_MANY)
        return 1;
    for (unsigned i = 0; i < w->nkeys; i++)
        if (strcmp(w->keys[i], key) == 0)
            return 0; /* an RDATE repeating DTSTART, say */
    if (w->nkeys < CAL_WIN_KEYS) {
        if (!w->keys && !(w->keys = calloc(CAL_WIN_KEYS, CAL_KEY_MAX)))
            return w->total = CAL_WIN_MANY, 1; /* unknown: keep the event */
        snprintf(w->keys[w->nkeys++], CAL_KEY_MAX, "%s", key);
        w->total++;
        return 0;
    }
    w->total = CAL_WIN_MANY; /* more than we track: nothing can remove them all */
    return 1;
}

struct cal_expand {
    struct cal_win *w;
    const struct cal_zone *zone; /* of DTSTART; NULL for floating, DATE or UTC */
    int utc;
    int64_t dur;
    char (*ex)[CAL_KEY_MAX]; /* EXDATE keys */
    size_t nex;
};

static int cal_excluded(const struct cal_expand *x, const char *key, struct icaltimetype local)
{
    char date[CAL_KEY_MAX];
    local.is_date = 1;
    cal_key_print(local, 0, date);
    for (size_t i = 0; i < x->nex; i++)
        if (strcmp(x->ex[i], key) == 0 || strcmp(x->ex[i], date) == 0)
            return 1;
    return 0;
}

/* One instance given by local fields (in x->zone); 1 when counting can stop. */
static int cal_occurrence(struct cal_expand *x, struct icaltimetype local, int64_t dur)
{
    char key[CAL_KEY_MAX];
    int64_t s = cal_local_utc(x->zone, local);
    if (!cal_in_window(x->w, s, dur))
        return 0;
    cal_local_key(x->zone, x->utc, local, key);
    if (cal_excluded(x, key, local))
        return 0;
    return cal_win_add(x->w, key);
}

/*
 * How far past its starting point one rule is walked. libical's iterator
 * spins without bound inside one call on rules that never match (FREQ=
 * HOURLY;BYMONTH=2;BYMONTHDAY=30 took 10 s to reach its year-2582 stop), and
 * only UNTIL stops that inner loop; so every walk gets an UNTIL.
 */
static int64_t cal_freq_horizon(icalrecurrencetype_frequency freq)
{
    switch (freq) {
    case ICAL_HOURLY_RECURRENCE:
        return 366 * (int64_t)DAY;
    case ICAL_DAILY_RECURRENCE:
        return 20 * 366 * (int64_t)DAY;
    case ICAL_WEEKLY_RECURRENCE:
        return 100 * 366 * (int64_t)DAY;
    default:
        return 400 * 366 * (int64_t)DAY;
    }
}

/* Walks one RRULE from DTSTART (local fields), bounded in time and count. */
static int cal_expand_rule(struct cal_expand *x, struct icalrecurrencetype rule,
                           struct icaltimetype dt)
{
    struct cal_win *w = x->w;
    /* No real invitation repeats by the second or minute. */
    if (rule.freq == ICAL_SECONDLY_RECURRENCE || rule.freq == ICAL_MINUTELY_RECURRENCE ||
        rule.freq == ICAL_NO_RECURRENCE) {
        w->total = CAL_WIN_MANY;
        return 1;
    }
    if (!icaltime_is_null_time(rule.until) && icaltime_is_utc(rule.until)) {
        if (x->zone && !rule.until.is_date) {
            int64_t u = cal_fields_secs(rule.until);
            rule.until = cal_secs_fields(u + cal_zone_offset_utc(x->zone, u), 0);
        }
        rule.until.zone = NULL;
    }
    /* Jump close to the window instead of walking from a DTSTART years ago
     * (libical cannot do that for COUNT rules). Two days of slack cover any
     * UTC offset. */
    int64_t from = cal_fields_secs(dt);
    int jump = 0;
    if (rule.count == 0 && w->has_after && w->after - x->dur - 2 * DAY > from) {
        from = w->after - x->dur - 2 * DAY;
        jump = 1;
    }
    int64_t horizon = from + cal_freq_horizon(rule.freq);
    int by_cap = 1;
    if (w->has_before && w->before + 2 * DAY < horizon) {
        horizon = w->before + 2 * DAY;
        by_cap = 0;
    }
    int capped = 0;
    if (icaltime_is_null_time(rule.until) || cal_fields_secs(rule.until) > horizon) {
        rule.until = cal_secs_fields(horizon, dt.is_date);
        capped = by_cap;
    }
    icalrecur_iterator *it = icalrecur_iterator_new(rule, dt);
    if (!it)
        return 0;
    if (jump)
        icalrecur_iterator_set_start(it, cal_secs_fields(from, dt.is_date));
    int stop = 0, n, ended = 0;
    for (n = 0; n < CAL_RECUR_MAX && !stop; n++) {
        struct icaltimetype occ = icalrecur_iterator_next(it);
        if (icaltime_is_null_time(occ)) {
            ended = 1;
            break;
        }
        occ.zone = NULL;
        if (icaltime_compare(occ, dt) == 0)
            continue; /* DTSTART is counted on its own */
        stop = cal_occurrence(x, occ, x->dur);
    }
    icalrecur_iterator_free(it);
    /* Stopped by our own horizon or count rather than by the rule: more
     * instances may follow, so the event is certainly kept. */
    if (n == CAL_RECUR_MAX || (ended && capped && !(rule.count && n + 1 >= rule.count))) {
        w->total = CAL_WIN_MANY;
        return 1;
    }
    return stop;
}

int cal_window_compute(struct cal_zctx *z, icalcomponent *comp, const struct cal_filter *f,
                       struct cal_win *w)
{
    memset(w, 0, sizeof *w);
    w->has_after = f->has_after;
    w->after = f->after;
    w->has_before = f->has_before;
    w->before = f->before;

    icalproperty *ps = icalcomponent_get_first_property(comp, ICAL_DTSTART_PROPERTY);
    icalproperty *pe = icalcomponent_get_first_property(comp, ICAL_DTEND_PROPERTY);
    icalproperty *pdue = icalcomponent_get_first_property(comp, ICAL_DUE_PROPERTY);
    icalproperty *pdur = icalcomponent_get_first_property(comp, ICAL_DURATION_PROPERTY);
    if (!ps) {
        ps = pdue;
        pdue = NULL;
    }
    if (!ps) {
        w->total = CAL_WIN_MANY; /* undated: no date to filter on, so kept */
        return 0;
    }
    struct icaltimetype t0 = icalproperty_get_dtstart(ps);
    if (icalproperty_isa(ps) == ICAL_DUE_PROPERTY)
        t0 = icalproperty_get_due(ps);
    if (icaltime_is_null_time(t0)) {
        w->total = CAL_WIN_MANY;
        return 0;
    }
    const char *tz0 = cal_prop_tzid(ps);
    int64_t s0 = cal_time_utc(z, t0, tz0), dur;
    if (pe)
        dur = cal_time_utc(z, icalproperty_get_dtend(pe), cal_prop_tzid(pe)) - s0;
    else if (pdur)
        dur = icaldurationtype_as_int(icalproperty_get_duration(pdur));
    else if (pdue)
        dur = cal_time_utc(z, icalproperty_get_due(pdue), cal_prop_tzid(pdue)) - s0;
    else
        dur = t0.is_date ? DAY : 0;
    if (dur < 0)
        dur = 0;

    struct cal_expand x = {.w = w, .dur = dur};
    x.utc = !t0.is_date && icaltime_is_utc(t0);
    x.zone = x.utc || t0.is_date ? NULL : cal_zone_find(z, tz0);
    struct icaltimetype dt = t0;
    dt.zone = NULL;

    icalproperty *rr = icalcomponent_get_first_property(comp, ICAL_RRULE_PROPERTY);
    icalproperty *rd = icalcomponent_get_first_property(comp, ICAL_RDATE_PROPERTY);
    int override = icalcomponent_get_first_property(comp, ICAL_RECURRENCEID_PROPERTY) != NULL;
    if (override || (!rr && !rd)) {
        cal_occurrence(&x, dt, dur);
        return 0;
    }

    size_t nex = 0;
    for (icalproperty *p = icalcomponent_get_first_property(comp, ICAL_EXDATE_PROPERTY); p;
         p = icalcomponent_get_next_property(comp, ICAL_EXDATE_PROPERTY))
        nex++;
    if (nex && !(x.ex = calloc(nex, CAL_KEY_MAX)))
        return -ENOMEM;
    for (icalproperty *p = icalcomponent_get_first_property(comp, ICAL_EXDATE_PROPERTY);
         p && x.nex < nex; p = icalcomponent_get_next_property(comp, ICAL_EXDATE_PROPERTY))
        cal_time_key(z, icalproperty_get_exdate(p), cal_prop_tzid(p), x.ex[x.nex++]);

    int stop = cal_occurrence(&x, dt, dur);
    for (icalproperty *p = icalcomponent_get_first_property(comp, ICAL_RRULE_PROPERTY); p && !stop;
         p = icalcomponent_get_next_property(comp, ICAL_RRULE_PROPERTY))
        stop = cal_expand_rule(&x, icalproperty_get_rrule(p), dt);
    for (icalproperty *p = icalcomponent_get_first_property(comp, ICAL_RDATE_PROPERTY); p && !stop;
         p = icalcomponent_get_next_property(comp, ICAL_RDATE_PROPERTY)) {
        struct icaldatetimeperiodtype r = icalproperty_get_rdate(p);
        const char *tz = cal_prop_tzid(p);
        struct icaltimetype st = r.time;
        int64_t d = dur;
        if (icaltime_is_null_time(st)) {
            st = r.period.start;
            if (icaltime_is_null_time(st))
                continue;
            int64_t ps0 = cal_time_utc(z, st, tz);
            d = !icaltime_is_null_time(r.period.end) ? cal_time_utc(z, r.period.end, tz) - ps0
                                                     : icaldurationtype_as_int(r.period.duration);
            if (d < 0)
                d = 0;
        }
        /* An RDATE is in its own TZID (or UTC): re-base it on DTSTART's zone. */
        struct cal_expand y = x;
        int utc = !st.is_date && icaltime_is_utc(st);
        y.zone = utc || st.is_date ? NULL : cal_zone_find(z, tz);
        y.utc = utc;
        st.zone = NULL;
        stop = cal_occurrence(&y, st, d);
    }
    free(x.ex);
    return 0;
}
