/*
 * cal_tz.c — time-zone repair: a TZID the sender gave no VTIMEZONE for gets
 * one when it names an IANA zone or a Windows zone (SPEC §3).
 *
 * libical's builtin-zone table is global and its lookups race (notes A3,
 * libical PR #1029), so every builtin-zone call in this program goes
 * through cal_tz_mutex, and cal_global_init() builds the table before
 * threads start. Repaired zones are cached by TZID text for the life of the
 * process; callers get immutable text or a private clone of the zone.
 */
#include "cal_internal.h"
#include "tzwin.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Unknown TZIDs remembered, so hostile mail cannot grow the cache forever. */
#define CAL_TZ_NEGATIVE_MAX 512

struct cal_tzfix {
    char *tzid;
    char *vtz; /* folded VTIMEZONE text, or NULL when not repairable */
    size_t vtz_len;
    icalcomponent *proto;      /* parsed VTIMEZONE to clone for conversions */
    struct cal_tzrules *rules; /* compiled from proto; shared read-only */
};

static pthread_mutex_t cal_tz_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t cal_tz_once = PTHREAD_ONCE_INIT;
static struct cal_tzfix **cal_tz_fixes;
static size_t cal_tz_nfixes, cal_tz_cap, cal_tz_negative;

static void cal_tz_build(void)
{
    pthread_mutex_lock(&cal_tz_mutex);
    (void)icaltimezone_get_builtin_timezone("UTC"); /* loads the zone table */
    (void)icaltimezone_get_utc_timezone();
    pthread_mutex_unlock(&cal_tz_mutex);
    tzwin_init();
}

void cal_tz_init(void)
{
    pthread_once(&cal_tz_once, cal_tz_build);
}

void cal_global_init(void)
{
    cal_tz_init();
}

/*
 * Only names shaped like IANA zones reach libical, which turns unknown
 * names into paths under the zoneinfo directory.
 */
static int cal_tz_iana_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || !(s[0] >= 'A' && s[0] <= 'Z') || s[n - 1] == '/')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-' || c == '+' || c == '/';
        if (!ok || (c == '/' && s[i + 1] == '/'))
            return 0;
    }
    return 1;
}

/* A clone of libical's builtin VTIMEZONE for an IANA name. Lock held. */
static icalcomponent *cal_tz_builtin(const char *name)
{
    if (!cal_tz_iana_ok(name))
        return NULL;
    icaltimezone *z = icaltimezone_get_builtin_timezone(name);
    icalcomponent *c = z ? icaltimezone_get_component(z) : NULL;
    return c ? icalcomponent_new_clone(c) : NULL;
}

/* Tries each space-separated candidate of a tzwin answer. Lock held. */
static icalcomponent *cal_tz_builtin_any(const char *cands)
{
    char name[80];
    while (*cands) {
        size_t n = strcspn(cands, " ");
        if (n < sizeof name) {
            memcpy(name, cands, n);
            name[n] = '\0';
            icalcomponent *c = cal_tz_builtin(name);
            if (c)
                return c;
        }
        cands += n;
        while (*cands == ' ')
            cands++;
    }
    return NULL;
}

/*
 * The VTIMEZONE a TZID stands for: a Windows id or Outlook display name;
 * UTC spelled several ways; an IANA name, possibly behind a vendor prefix
 * such as "/freeassociation.sourceforge.net/" or "/mozilla.org/20050126_1/".
 * Lock held.
 */
static icalcomponent *cal_tz_lookup(const char *tzid)
{
    const char *win = tzwin_to_iana(tzid);
    if (win)
        return cal_tz_builtin_any(win);
    if (strcmp(tzid, "UTC") == 0 || strcmp(tzid, "Z") == 0 || strcmp(tzid, "Etc/UTC") == 0 ||
        strcmp(tzid, "Coordinated Universal Time") == 0)
        return cal_tz_builtin("Etc/UTC");
    if (strcmp(tzid, "GMT") == 0)
        return cal_tz_builtin("Etc/GMT");
    icalcomponent *c = cal_tz_builtin(tzid);
    for (const char *p = strchr(tzid, '/'); !c && p; p = strchr(p + 1, '/'))
        c = cal_tz_builtin(p + 1);
    return c;
}

/* Observances a repaired VTIMEZONE keeps at most, and onsets per rule. */
#define CAL_TZ_OBS_MAX 256
#define CAL_TZ_ONSETS_MAX 400
/* History before this is dropped from repaired zones (1970-01-01). */
#define CAL_TZ_FROM_YEAR 1970

static struct icalrecurrencetype cal_tz_rule(icalcomponent *obs, icalproperty **pp)
{
    struct icalrecurrencetype r;
    icalrecurrencetype_clear(&r);
    *pp = icalcomponent_get_first_property(obs, ICAL_RRULE_PROPERTY);
    if (*pp)
        r = icalproperty_get_rrule(*pp);
    return r;
}

static int cal_tz_offset(icalcomponent *obs, icalproperty_kind k)
{
    icalproperty *p = icalcomponent_get_first_property(obs, k);
    if (!p)
        return 0;
    return k == ICAL_TZOFFSETTO_PROPERTY ? icalproperty_get_tzoffsetto(p)
                                         : icalproperty_get_tzoffsetfrom(p);
}

/* Same rule apart from UNTIL/COUNT? */
static int cal_tz_same_rule(struct icalrecurrencetype a, struct icalrecurrencetype b)
{
    a.until = b.until = icaltime_null_time();
    a.count = b.count = 0;
    char *sa = icalrecurrencetype_as_string_r(&a);
    char *sb = icalrecurrencetype_as_string_r(&b);
    int same = sa && sb && strcmp(sa, sb) == 0;
    free(sa);
    free(sb);
    return same;
}

/* Replaces a bounded RRULE by the RDATEs it produces (local times). */
static void cal_tz_expand(icalcomponent *obs, icalproperty *rp, struct icalrecurrencetype r)
{
    icalproperty *dp = icalcomponent_get_first_property(obs, ICAL_DTSTART_PROPERTY);
    if (!dp)
        return;
    struct icaltimetype start = icalproperty_get_dtstart(dp);
    start.zone = NULL;
    if (!icaltime_is_null_time(r.until) && icaltime_is_utc(r.until)) {
        /* UNTIL is UTC; onsets are local times before the change, i.e. in
         * TZOFFSETFROM (as libical's own icaltimezone_expand_vtimezone). */
        icaltime_adjust(&r.until, 0, 0, 0, cal_tz_offset(obs, ICAL_TZOFFSETFROM_PROPERTY));
        r.until.zone = NULL;
    }
    icalrecur_iterator *it = icalrecur_iterator_new(r, start);
    if (!it)
        return;
    struct icaltimetype occ;
    for (int n = 0; n < CAL_TZ_ONSETS_MAX; n++) {
        occ = icalrecur_iterator_next(it);
        if (icaltime_is_null_time(occ))
            break;
        if (icaltime_compare(occ, start) == 0)
            continue;
        struct icaldatetimeperiodtype rd = {.time = occ, .period = icalperiodtype_null_period()};
        rd.time.zone = NULL;
        icalcomponent_add_property(obs, icalproperty_new_rdate(rd));
    }
    icalrecur_iterator_free(it);
    icalcomponent_remove_property(obs, rp);
    icalproperty_free(rp);
}

/* A sortable number for local date-time fields. */
static int64_t cal_tz_stamp(struct icaltimetype t)
{
    return ((((int64_t)t.year * 13 + t.month) * 32 + t.day) * 24 + t.hour) * 3600 + t.minute * 60 +
           t.second;
}

/* The last onset of an observance (INT64_MAX when its rule is open-ended). */
static int64_t cal_tz_last_onset(icalcomponent *obs)
{
    icalproperty *rp;
    struct icalrecurrencetype r = cal_tz_rule(obs, &rp);
    if (rp && icaltime_is_null_time(r.until) && r.count == 0)
        return INT64_MAX;
    int64_t last = INT64_MIN;
    icalproperty *dp = icalcomponent_get_first_property(obs, ICAL_DTSTART_PROPERTY);
    if (dp)
        last = cal_tz_stamp(icalproperty_get_dtstart(dp));
    for (icalproperty *p = icalcomponent_get_first_property(obs, ICAL_RDATE_PROPERTY); p;
         p = icalcomponent_get_next_property(obs, ICAL_RDATE_PROPERTY)) {
        struct icaldatetimeperiodtype rd = icalproperty_get_rdate(p);
        int64_t t = cal_tz_stamp(icaltime_is_null_time(rd.time) ? rd.period.start : rd.time);
        if (t > last)
            last = t;
    }
    return last;
}

/*
 * Puts a builtin VTIMEZONE in the form every reader handles. libical writes
 * the full TZif history with RRULEs bounded by UTC UNTIL values (right by
 * RFC 5545 §3.6.5), which python-icalendar 4 with dateutil (khal, Debian
 * 12) rejects; and it splits today's rule at 2037 (the TZif v1 horizon).
 * So: the 2037 split is merged back into one open rule, other bounded
 * rules become RDATE lists, and observances over before 1970 are dropped,
 * except the one in force then. Lock held.
 */
static void cal_tz_simplify(icalcomponent *vtz)
{
    icalcomponent *obs[CAL_TZ_OBS_MAX];
    size_t n = 0;
    for (icalcomponent *c = icalcomponent_get_first_component(vtz, ICAL_ANY_COMPONENT);
         c && n < CAL_TZ_OBS_MAX; c = icalcomponent_get_next_component(vtz, ICAL_ANY_COMPONENT))
        obs[n++] = c;
    for (size_t i = 0; i < n; i++) {
        icalproperty *ap, *bp;
        struct icalrecurrencetype a = cal_tz_rule(obs[i], &ap);
        if (!ap || icaltime_is_null_time(a.until))
            continue;
        for (size_t j = 0; j < n; j++) {
            struct icalrecurrencetype b = obs[j] ? cal_tz_rule(obs[j], &bp) : a;
            if (!obs[j] || j == i || !bp || !icaltime_is_null_time(b.until) || b.count ||
                icalcomponent_isa(obs[i]) != icalcomponent_isa(obs[j]) ||
                cal_tz_offset(obs[i], ICAL_TZOFFSETTO_PROPERTY) !=
                    cal_tz_offset(obs[j], ICAL_TZOFFSETTO_PROPERTY) ||
                cal_tz_offset(obs[i], ICAL_TZOFFSETFROM_PROPERTY) !=
                    cal_tz_offset(obs[j], ICAL_TZOFFSETFROM_PROPERTY) ||
                !cal_tz_same_rule(a, b))
                continue;
            icalproperty *dp = icalcomponent_get_first_property(obs[j], ICAL_DTSTART_PROPERTY);
            int y = dp ? icalproperty_get_dtstart(dp).year : 0;
            if (y < a.until.year || y > a.until.year + 2)
                continue;
            a.until = icaltime_null_time();
            icalproperty_set_rrule(ap, a);
            icalcomponent_remove_component(vtz, obs[j]);
            icalcomponent_free(obs[j]);
            obs[j] = NULL;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        icalproperty *rp;
        if (!obs[i])
            continue;
        struct icalrecurrencetype r = cal_tz_rule(obs[i], &rp);
        if (rp && (!icaltime_is_null_time(r.until) || r.count))
            cal_tz_expand(obs[i], rp, r);
    }
    /* The observance with the last onset before 1970 is the one in force
     * then; older ones can go. */
    struct icaltimetype from = icaltime_null_time();
    from.year = CAL_TZ_FROM_YEAR;
    from.month = from.day = 1;
    int64_t cut = cal_tz_stamp(from), base_onset = INT64_MIN;
    size_t base = n;
    for (size_t i = 0; i < n; i++) {
        int64_t t = obs[i] ? cal_tz_last_onset(obs[i]) : INT64_MIN;
        if (obs[i] && t < cut && t > base_onset) {
            base = i;
            base_onset = t;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (obs[i] && i != base && cal_tz_last_onset(obs[i]) < cut) {
            icalcomponent_remove_component(vtz, obs[i]);
            icalcomponent_free(obs[i]);
        }
    }
}

/* The cache entry for a TZID, created on first use; NULL on ENOMEM. */
static const struct cal_tzfix *cal_tz_get(const char *tzid)
{
    struct cal_tzfix *fix = NULL;
    cal_tz_init();
    pthread_mutex_lock(&cal_tz_mutex);
    for (size_t i = 0; i < cal_tz_nfixes; i++) {
        if (strcmp(cal_tz_fixes[i]->tzid, tzid) == 0) {
            fix = cal_tz_fixes[i];
            goto out;
        }
    }
    icalcomponent *proto = cal_tz_lookup(tzid);
    if (!proto && cal_tz_negative >= CAL_TZ_NEGATIVE_MAX)
        goto out;
    if (cal_tz_nfixes == cal_tz_cap) {
        size_t cap = cal_tz_cap ? cal_tz_cap * 2 : 64;
        struct cal_tzfix **a = realloc(cal_tz_fixes, cap * sizeof *a);
        if (!a)
            goto fail;
        cal_tz_fixes = a;
        cal_tz_cap = cap;
    }
    fix = calloc(1, sizeof *fix);
    if (!fix || !(fix->tzid = strdup(tzid)))
        goto fail;
    if (proto) {
        /* libical names builtin zones "/freeassociation.sourceforge.net/X";
         * the event says tzid, so the VTIMEZONE must say it too. */
        cal_tz_simplify(proto);
        icalproperty *p = icalcomponent_get_first_property(proto, ICAL_TZID_PROPERTY);
        if (p)
            icalproperty_set_tzid(p, tzid);
        else
            icalcomponent_add_property(proto, icalproperty_new_tzid(tzid));
        char *s = icalcomponent_as_ical_string_r(proto);
        struct cal_buf b = {0};
        if (s)
            cal_buf_add_text(&b, s, strlen(s));
        free(s);
        fix->vtz = cal_buf_take(&b, &fix->vtz_len);
        if (!fix->vtz)
            goto fail;
        fix->proto = proto;
        fix->rules = cal_tzrules_compile(proto); /* NULL: libical's way */
    } else {
        cal_tz_negative++;
    }
    cal_tz_fixes[cal_tz_nfixes++] = fix;
out:
    pthread_mutex_unlock(&cal_tz_mutex);
    return fix;
fail:
    if (fix) {
        free(fix->tzid);
        free(fix->vtz);
        free(fix);
    }
    if (proto)
        icalcomponent_free(proto);
    pthread_mutex_unlock(&cal_tz_mutex);
    return NULL;
}

const char *cal_tz_repair_text(const char *tzid, size_t *len)
{
    const struct cal_tzfix *fix = cal_tz_get(tzid);
    if (!fix || !fix->vtz)
        return NULL;
    if (len)
        *len = fix->vtz_len;
    return fix->vtz;
}

const struct cal_tzrules *cal_tz_repair_rules(const char *tzid)
{
    const struct cal_tzfix *fix = cal_tz_get(tzid);
    return fix ? fix->rules : NULL;
}

icaltimezone *cal_tz_repair_zone(const char *tzid)
{
    const struct cal_tzfix *fix = cal_tz_get(tzid);
    if (!fix || !fix->proto)
        return NULL;
    /* Cloning reads the shared tree, so it happens under the lock too. */
    pthread_mutex_lock(&cal_tz_mutex);
    icalcomponent *c = icalcomponent_new_clone(fix->proto);
    pthread_mutex_unlock(&cal_tz_mutex);
    if (!c)
        return NULL;
    icaltimezone *z = icaltimezone_new();
    if (!z) {
        icalcomponent_free(c);
        return NULL;
    }
    if (!icaltimezone_set_component(z, c)) {
        icalcomponent_free(c);
        icaltimezone_free(z, 1);
        return NULL;
    }
    return z;
}
