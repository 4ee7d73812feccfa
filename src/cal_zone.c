/*
 * cal_zone.c — UTC offsets from a VTIMEZONE without libical's expansion.
 *
 * libical expands a zone by walking each observance's RRULE from its
 * DTSTART with icalrecur_iterator, which in 3.0.16 goes through ICU for
 * every step (about 8 µs); Exchange zones start in 1601, so one conversion
 * cost 7 ms. Real VTIMEZONEs use yearly rules of one shape ("the last
 * Sunday of October at 03:00", RFC 5545 §3.6.5), which this computes
 * directly for the year asked. Anything else is left to libical (the
 * caller falls back when cal_tzrules_compile() returns NULL).
 */
#include "cal_internal.h"

#include <stdlib.h>
#include <string.h>

#define DAY 86400
#define OBS_MAX 1000

struct cal_tzobs {
    int64_t start; /* DTSTART as local wall time (fields read as UTC) */
    int from, to;  /* TZOFFSETFROM, TZOFFSETTO in seconds */
    int rule;      /* has a yearly RRULE */
    int interval;
    int month;
    int nmday;
    signed char mday[31]; /* BYMONTHDAY (negative counts from the end) */
    int wday;             /* BYDAY weekday, 0 = Sunday; -1 for none */
    int ord;              /* BYDAY ordinal; 0 for "every" */
    int64_t until;        /* last onset allowed (UTC), INT64_MAX for none */
    int count;
    int64_t *rdates; /* local wall times */
    size_t nrdates;
};

struct cal_tzrules {
    struct cal_tzobs *obs;
    size_t n;
};

static int64_t cal_secs(struct icaltimetype t)
{
    int64_t s = cal_days_from_civil(t.year, (unsigned)t.month, (unsigned)t.day) * DAY;
    return t.is_date ? s : s + t.hour * 3600 + t.minute * 60 + t.second;
}

static int cal_year_of(int64_t secs)
{
    int64_t days = secs >= 0 ? secs / DAY : -((-secs + DAY - 1) / DAY);
    /* civil year from days (H. Hinnant), enough of it for the year */
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    return (int)(yoe + era * 400 + (mp >= 10));
}

static int cal_dim(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : d[m - 1];
}

void cal_tzrules_free(struct cal_tzrules *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->obs[i].rdates);
    free(r->obs);
    free(r);
}

static int cal_arr_empty(const short *a)
{
    return a[0] == ICAL_RECURRENCE_ARRAY_MAX;
}

/* Takes a yearly rule of the supported shape; 0 when it is something else. */
static int cal_obs_rule(struct cal_tzobs *o, struct icalrecurrencetype r, struct icaltimetype st)
{
    if (r.freq != ICAL_YEARLY_RECURRENCE || r.rscale || !cal_arr_empty(r.by_second) ||
        !cal_arr_empty(r.by_minute) || !cal_arr_empty(r.by_hour) || !cal_arr_empty(r.by_year_day) ||
        !cal_arr_empty(r.by_week_no) || !cal_arr_empty(r.by_set_pos) || r.interval < 1)
        return 0;
    if (!cal_arr_empty(r.by_month) && r.by_month[1] != ICAL_RECURRENCE_ARRAY_MAX)
        return 0;
    if (!cal_arr_empty(r.by_day) && r.by_day[1] != ICAL_RECURRENCE_ARRAY_MAX)
        return 0;
    o->rule = 1;
    o->interval = r.interval;
    o->month = cal_arr_empty(r.by_month) ? st.month : r.by_month[0];
    if (o->month < 1 || o->month > 12)
        return 0;
    o->wday = -1;
    if (!cal_arr_empty(r.by_day)) {
        o->wday = (int)icalrecurrencetype_day_day_of_week(r.by_day[0]) - 1;
        o->ord = icalrecurrencetype_day_position(r.by_day[0]);
        if (o->wday < 0 || o->wday > 6 || o->ord < -5 || o->ord > 5)
            return 0;
    }
    for (int i = 0; i < 31 && r.by_month_day[i] != ICAL_RECURRENCE_ARRAY_MAX; i++) {
        if (r.by_month_day[i] == 0 || r.by_month_day[i] > 31 || r.by_month_day[i] < -31)
            return 0;
        o->mday[o->nmday++] = (signed char)r.by_month_day[i];
    }
    if (o->wday < 0 && !o->nmday)
        o->mday[o->nmday++] = (signed char)st.day;
    o->until = INT64_MAX;
    if (!icaltime_is_null_time(r.until)) {
        struct icaltimetype u = r.until;
        if (u.is_date) {
            u.is_date = 0;
            u.hour = 23;
            u.minute = u.second = 59;
        }
        o->until = cal_secs(u) - (icaltime_is_utc(r.until) ? 0 : o->from);
    }
    o->count = r.count;
    return 1;
}

static int cal_cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* One STANDARD or DAYLIGHT; 1 done, 0 skipped, -1 unsupported. */
static int cal_obs_compile(icalcomponent *c, struct cal_tzobs *o)
{
    icalproperty *ps = icalcomponent_get_first_property(c, ICAL_DTSTART_PROPERTY);
    icalproperty *pt = icalcomponent_get_first_property(c, ICAL_TZOFFSETTO_PROPERTY);
    icalproperty *pf = icalcomponent_get_first_property(c, ICAL_TZOFFSETFROM_PROPERTY);
    if (!ps || !pt)
        return 0; /* as libical: an observance without them is ignored */
    struct icaltimetype st = icalproperty_get_dtstart(ps);
    if (icaltime_is_null_time(st) || st.month < 1 || st.month > 12 || st.day < 1 || st.day > 31)
        return 0;
    memset(o, 0, sizeof *o);
    o->start = cal_secs(st);
    o->to = icalproperty_get_tzoffsetto(pt);
    o->from = pf ? icalproperty_get_tzoffsetfrom(pf) : o->to;
    int nrule = 0;
    for (icalproperty *p = icalcomponent_get_first_property(c, ICAL_RRULE_PROPERTY); p;
         p = icalcomponent_get_next_property(c, ICAL_RRULE_PROPERTY))
        if (nrule++ || !cal_obs_rule(o, icalproperty_get_rrule(p), st))
            return -1;
    size_t nr = 0;
    for (icalproperty *p = icalcomponent_get_first_property(c, ICAL_RDATE_PROPERTY); p;
         p = icalcomponent_get_next_property(c, ICAL_RDATE_PROPERTY))
        nr++;
    if (nr && !(o->rdates = malloc(nr * sizeof *o->rdates)))
        return -1;
    for (icalproperty *p = icalcomponent_get_first_property(c, ICAL_RDATE_PROPERTY);
         p && o->nrdates < nr; p = icalcomponent_get_next_property(c, ICAL_RDATE_PROPERTY)) {
        struct icaldatetimeperiodtype rd = icalproperty_get_rdate(p);
        struct icaltimetype t = icaltime_is_null_time(rd.time) ? rd.period.start : rd.time;
        if (icaltime_is_null_time(t))
            continue;
        if (t.is_date) { /* a DATE RDATE takes DTSTART's time of day */
            t.is_date = 0;
            t.hour = st.hour;
            t.minute = st.minute;
            t.second = st.second;
        }
        /* A UTC RDATE becomes wall time in the offset before the change. */
        o->rdates[o->nrdates++] = cal_secs(t) + (icaltime_is_utc(t) ? o->from : 0);
    }
    if (o->nrdates > 1)
        qsort(o->rdates, o->nrdates, sizeof *o->rdates, cal_cmp64);
    return 1;
}

struct cal_tzrules *cal_tzrules_compile(icalcomponent *vtz)
{
    struct cal_tzrules *r = calloc(1, sizeof *r);
    size_t cap = 0;
    if (!r)
        return NULL;
    for (icalcomponent *c = icalcomponent_get_first_component(vtz, ICAL_ANY_COMPONENT); c;
         c = icalcomponent_get_next_component(vtz, ICAL_ANY_COMPONENT)) {
        icalcomponent_kind k = icalcomponent_isa(c);
        if (k != ICAL_XSTANDARD_COMPONENT && k != ICAL_XDAYLIGHT_COMPONENT)
            continue;
        if (r->n == cap) {
            if (cap >= OBS_MAX)
                goto fail;
            cap = cap ? cap * 2 : 4;
            struct cal_tzobs *a = realloc(r->obs, cap * sizeof *a);
            if (!a)
                goto fail;
            r->obs = a;
        }
        int rc = cal_obs_compile(c, &r->obs[r->n]);
        if (rc < 0) {
            free(r->obs[r->n].rdates);
            goto fail;
        }
        r->n += (size_t)rc;
    }
    if (r->n)
        return r;
fail:
    cal_tzrules_free(r);
    return NULL;
}

/* The onset of a rule in year y (local wall time), or INT64_MIN. */
static int64_t cal_obs_onset(const struct cal_tzobs *o, int y)
{
    int dim = cal_dim(y, o->month), pick = 0, n = 0;
    int days[31];
    int64_t first = cal_days_from_civil(y, (unsigned)o->month, 1);
    int wd1 = (int)(((first % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
    for (int d = 1; d <= dim; d++) {
        if (o->wday >= 0 && (wd1 + d - 1) % 7 != o->wday)
            continue;
        if (o->nmday) {
            int hit = 0;
            for (int i = 0; i < o->nmday && !hit; i++)
                hit = o->mday[i] > 0 ? o->mday[i] == d : dim + 1 + o->mday[i] == d;
            if (!hit)
                continue;
        }
        days[n++] = d;
    }
    if (!n)
        return INT64_MIN;
    if (o->ord > 0)
        pick = o->ord <= n ? days[o->ord - 1] : 0;
    else if (o->ord < 0)
        pick = -o->ord <= n ? days[n + o->ord] : 0;
    else
        pick = days[0];
    if (!pick)
        return INT64_MIN;
    int64_t tod = ((o->start % DAY) + DAY) % DAY;
    return (first + pick - 1) * DAY + tod;
}

/* The latest onset of an observance at or before local time t. */
static int64_t cal_obs_last(const struct cal_tzobs *o, int64_t t)
{
    int64_t best = o->start <= t ? o->start : INT64_MIN;
    for (size_t lo = 0, hi = o->nrdates; lo < hi;) {
        size_t mid = (lo + hi) / 2;
        if (o->rdates[mid] <= t) {
            if (o->rdates[mid] > best)
                best = o->rdates[mid];
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (!o->rule || o->start > t)
        return best;
    int sy = cal_year_of(o->start), y = cal_year_of(t);
    if (o->until != INT64_MAX) {
        int uy = cal_year_of(o->until + o->from) + 1;
        if (uy < y)
            y = uy;
    }
    for (int k = 0; k < 3 * o->interval + 2 && y >= sy; k++, y--) {
        if ((y - sy) % o->interval)
            continue;
        if (o->count && (y - sy) / o->interval >= o->count)
            continue;
        int64_t on = cal_obs_onset(o, y);
        if (on == INT64_MIN || on < o->start || on > t)
            continue;
        if (o->until != INT64_MAX && on - o->from > o->until)
            continue;
        if (on > best)
            best = on;
        break;
    }
    return best;
}

int cal_tzrules_offset(const struct cal_tzrules *r, int64_t local)
{
    const struct cal_tzobs *best = NULL, *first = NULL;
    int64_t best_on = INT64_MIN;
    for (size_t i = 0; i < r->n; i++) {
        const struct cal_tzobs *o = &r->obs[i];
        int64_t on = cal_obs_last(o, local);
        if (on != INT64_MIN && (!best || on > best_on)) {
            best = o;
            best_on = on;
        }
        if (!first || o->start < first->start)
            first = o;
    }
    /* Before the first onset: the offset the first change starts from. */
    return best ? best->to : first->from;
}

int cal_tzrules_offset_utc(const struct cal_tzrules *r, int64_t utc)
{
    int off = cal_tzrules_offset(r, utc);
    return cal_tzrules_offset(r, utc + off);
}
