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
#include <stdlib.h>
#include <string.h>

/* Unknown TZIDs remembered, so hostile mail cannot grow the cache forever. */
#define CAL_TZ_NEGATIVE_MAX 512

struct cal_tzfix {
    char *tzid;
    char *vtz; /* folded VTIMEZONE text, or NULL when not repairable */
    size_t vtz_len;
    icalcomponent *proto; /* parsed VTIMEZONE to clone for conversions */
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
