/*
 * cal_parse.c — calendar parts in, versions out (SPEC §3).
 *
 * One call parses one decoded part with libical, walks every calendar in
 * it (a bare component, one VCALENDAR, or several: libical's XROOT, notes
 * A1) and turns each component of a selected kind into a version: its
 * scheduling identity (UID, RECURRENCE-ID, SEQUENCE, DTSTAMP, METHOD) plus
 * its rendered text and the sender's VTIMEZONEs. The tree is freed before
 * returning; nothing of libical outlives the call (notes A4, A5).
 */
#include "cal_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

static void cal_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

struct cal_versions *cal_versions_new(const struct cal_origin *o)
{
    cal_tz_init();
    struct cal_versions *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->mailbox = strdup(o && o->mailbox ? o->mailbox : "");
    /* The URL becomes one content line: no CR, LF or other controls in it. */
    const char *url = o && o->source_url ? o->source_url : "";
    v->source_url = cal_sanitize(url, strlen(url));
    for (char *p = v->source_url; p && *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    if (!v->mailbox || !v->source_url) {
        cal_versions_free(v);
        return NULL;
    }
    if (o) {
        v->uid = o->uid;
        v->internaldate = o->internaldate;
    }
    return v;
}

static void cal_version_clear(struct cal_version *x)
{
    free(x->uid);
    free(x->rid_value);
    free(x->rid_tzid);
    free(x->text);
    for (size_t i = 0; i < x->ntz; i++)
        free(x->tzids[i]);
    free(x->tzids);
    free(x->tzdef);
    cal_win_free(&x->win);
    memset(x, 0, sizeof *x);
}

struct cal_versions *cal_versions_ref(struct cal_versions *v)
{
    if (v)
        atomic_fetch_add(&v->refs, 1);
    return v;
}

void cal_versions_free(struct cal_versions *v)
{
    if (!v || atomic_fetch_sub(&v->refs, 1) > 0)
        return;
    for (size_t i = 0; i < v->n; i++)
        cal_version_clear(&v->v[i]);
    free(v->v);
    for (size_t i = 0; i < v->nvtz; i++)
        cal_unintern(v->vtz[i]);
    free(v->vtz);
    free(v->vtz_len);
    free(v->parsed);
    free(v->mailbox);
    free(v->source_url);
    free(v);
}

void cal_versions_seal(struct cal_versions *v)
{
    if (v == NULL)
        return;
    free(v->parsed);
    v->parsed = NULL;
    v->nparsed = 0;
}

size_t cal_versions_count(const struct cal_versions *v)
{
    return v ? v->n : 0;
}

static unsigned cal_kind_of(icalcomponent_kind k)
{
    switch (k) {
    case ICAL_VEVENT_COMPONENT:
        return CAL_VEVENT;
    case ICAL_VTODO_COMPONENT:
        return CAL_VTODO;
    case ICAL_VJOURNAL_COMPONENT:
        return CAL_VJOURNAL;
    default:
        return 0;
    }
}

/* What one add_part call shares while it walks the calendars. */
struct cal_scan {
    struct cal_versions *v;
    const struct cal_filter *f;
    struct cal_stats *stats;
    unsigned kinds;
    int added;
    int usable;   /* components passed on (duplicates included) */
    int unusable; /* VEVENTs left out for want of a start (cal_is_unusable) */
};

/* Per calendar: TZID -> index in the message's VTIMEZONE pool (-1: none). */
struct cal_tzmap {
    struct cal_tzent {
        char *tzid;
        int def;
    } * e;
    size_t n;
};

static void cal_tzmap_free(struct cal_tzmap *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->e[i].tzid);
    free(m->e);
}

/*
 * Adds a VTIMEZONE text to the message's pool (deduplicated; the text
 * itself is shared process-wide, see cal_intern.c); index or -1. Frees text.
 */
static int cal_pool_add(struct cal_versions *v, char *text, size_t len)
{
    const char *shared;

    for (size_t i = 0; i < v->nvtz; i++) {
        if (v->vtz_len[i] == len && memcmp(v->vtz[i], text, len) == 0) {
            free(text);
            return (int)i;
        }
    }
    if (v->nvtz == v->capvtz) {
        size_t cap = v->capvtz ? v->capvtz * 2 : 4;
        const char **a = realloc(v->vtz, cap * sizeof *a);
        if (!a)
            goto fail;
        v->vtz = a;
        size_t *l = realloc(v->vtz_len, cap * sizeof *l);
        if (!l)
            goto fail;
        v->vtz_len = l;
        v->capvtz = cap;
    }
    if ((shared = cal_intern(text, len)) == NULL)
        goto fail;
    free(text);
    v->vtz[v->nvtz] = shared;
    v->vtz_len[v->nvtz] = len;
    return (int)v->nvtz++;
fail:
    free(text);
    return -1;
}

/*
 * The sender's VTIMEZONE for tzid in this calendar, as a pool index, or -1.
 * A TZID with neither a VTIMEZONE nor a repair is counted as a warning once
 * per calendar (SPEC §3).
 */
/*
 * A component holds only what RFC 5545 lets it hold: VEVENT and VTODO hold
 * VALARMs, which hold nothing; anything else nested by a sender is dropped
 * rather than rendered inside the event.
 */
static void cal_drop_foreign_children(icalcomponent *c)
{
    icalcomponent_kind kind = icalcomponent_isa(c);
    icalcomponent *child = icalcomponent_get_first_component(c, ICAL_ANY_COMPONENT), *next;

    for (; child; child = next) {
        next = icalcomponent_get_next_component(c, ICAL_ANY_COMPONENT);
        if ((kind == ICAL_VEVENT_COMPONENT || kind == ICAL_VTODO_COMPONENT) &&
            icalcomponent_isa(child) == ICAL_VALARM_COMPONENT) {
            cal_drop_foreign_children(child);
            continue;
        }
        icalcomponent_remove_component(c, child);
        icalcomponent_free(child);
    }
}

/* libical's serialisation, made valid UTF-8 (its unescaping can split a sequence). */
static char *cal_serialise_clean(icalcomponent *c)
{
    char *s = icalcomponent_as_ical_string_r(c), *clean;

    if (!s)
        return NULL;
    clean = cal_sanitize(s, strlen(s));
    free(s);
    return clean;
}

/*
 * A VTIMEZONE holds STANDARD and DAYLIGHT rules only (RFC 5545 §3.6.5).
 * Anything else a sender nested in it (a VEVENT, say) must not travel into
 * every file that uses the zone.
 */
static void cal_keep_only_rules(icalcomponent *vtz)
{
    icalcomponent *c = icalcomponent_get_first_component(vtz, ICAL_ANY_COMPONENT), *next;

    for (; c; c = next) {
        icalcomponent_kind k = icalcomponent_isa(c);

        next = icalcomponent_get_next_component(vtz, ICAL_ANY_COMPONENT);
        if (k != ICAL_XSTANDARD_COMPONENT && k != ICAL_XDAYLIGHT_COMPONENT) {
            icalcomponent_remove_component(vtz, c);
            icalcomponent_free(c);
            continue;
        }
        /* A rule holds properties only. */
        for (icalcomponent *g = icalcomponent_get_first_component(c, ICAL_ANY_COMPONENT), *gn; g;
             g = gn) {
            gn = icalcomponent_get_next_component(c, ICAL_ANY_COMPONENT);
            icalcomponent_remove_component(c, g);
            icalcomponent_free(g);
        }
    }
}

static int cal_tz_def(struct cal_scan *sc, struct cal_zctx *zc, struct cal_tzmap *m,
                      const char *tzid)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->e[i].tzid, tzid) == 0)
            return m->e[i].def;
    int def = -1;
    icaltimezone *tz = zc->container ? icalcomponent_get_timezone(zc->container, tzid) : NULL;
    icalcomponent *vtz = tz ? icaltimezone_get_component(tz) : NULL;
    if (vtz) {
        icalcomponent_strip_errors(vtz);
        cal_keep_only_rules(vtz);
        char *s = cal_serialise_clean(vtz);
        struct cal_buf b = {0};
        if (s)
            cal_buf_add_text(&b, s, strlen(s));
        free(s);
        size_t len;
        char *text = cal_buf_take(&b, &len);
        if (text)
            def = cal_pool_add(sc->v, text, len);
    } else if (!cal_tz_repair_text(tzid, NULL) && sc->stats) {
        sc->stats->warnings++;
    }
    struct cal_tzent *e = realloc(m->e, (m->n + 1) * sizeof *e);
    if (e) {
        m->e = e;
        if ((e[m->n].tzid = strdup(tzid)) != NULL)
            e[m->n++].def = def;
    }
    return def;
}

static int cal_strcmp_p(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Collects the TZID parameter of every property of c and its
 * subcomponents: icalcomponent_foreach_tzid() skips RECURRENCE-ID (notes A3).
 */
static int cal_collect_tzids(icalcomponent *c, char ***list, size_t *n)
{
    for (icalproperty *p = icalcomponent_get_first_property(c, ICAL_ANY_PROPERTY); p;
         p = icalcomponent_get_next_property(c, ICAL_ANY_PROPERTY)) {
        for (icalparameter *par = icalproperty_get_first_parameter(p, ICAL_TZID_PARAMETER); par;
             par = icalproperty_get_next_parameter(p, ICAL_TZID_PARAMETER)) {
            const char *t = icalparameter_get_tzid(par);
            if (!t || !*t)
                continue;
            int seen = 0;
            for (size_t i = 0; i < *n && !seen; i++)
                seen = strcmp((*list)[i], t) == 0;
            if (seen)
                continue;
            char **a = realloc(*list, (*n + 1) * sizeof *a);
            if (!a)
                return -ENOMEM;
            *list = a;
            if (!(a[*n] = strdup(t)))
                return -ENOMEM;
            (*n)++;
        }
    }
    for (icalcomponent *s = icalcomponent_get_first_component(c, ICAL_ANY_COMPONENT); s;
         s = icalcomponent_get_next_component(c, ICAL_ANY_COMPONENT))
        if (cal_collect_tzids(s, list, n) < 0)
            return -ENOMEM;
    return 0;
}

static int cal_drop_for_privacy(icalproperty_kind k)
{
    switch (k) {
    case ICAL_SUMMARY_PROPERTY:
    case ICAL_DESCRIPTION_PROPERTY:
    case ICAL_LOCATION_PROPERTY:
    case ICAL_ATTENDEE_PROPERTY:
    case ICAL_ATTACH_PROPERTY:
    case ICAL_COMMENT_PROPERTY:
    case ICAL_CONTACT_PROPERTY:
    case ICAL_RESOURCES_PROPERTY:
    case ICAL_URL_PROPERTY:
    case ICAL_GEO_PROPERTY:
    case ICAL_CATEGORIES_PROPERTY:
    case ICAL_CONFERENCE_PROPERTY:
    case ICAL_X_PROPERTY: /* X-ALT-DESC (HTML description), meeting links, ... */
        return 1;
    default:
        return 0;
    }
}

/*
 * privacy=busy (SPEC §1): SUMMARY "Busy"; DESCRIPTION, LOCATION, ATTENDEE,
 * ATTACH and COMMENT dropped, and with them the other places the same
 * details hide: contacts, links, X- properties (X-ALT-DESC carries the
 * description as HTML) and alarms (whose text repeats the summary).
 */
static void cal_apply_privacy(icalcomponent *c)
{
    icalcomponent *sub;
    while ((sub = icalcomponent_get_first_component(c, ICAL_ANY_COMPONENT)) != NULL) {
        icalcomponent_remove_component(c, sub);
        icalcomponent_free(sub);
    }
    /* Fetch next before removing current: the iterator lives in c (notes A2). */
    icalproperty *p = icalcomponent_get_first_property(c, ICAL_ANY_PROPERTY);
    while (p) {
        icalproperty *next = icalcomponent_get_next_property(c, ICAL_ANY_PROPERTY);
        if (cal_drop_for_privacy(icalproperty_isa(p))) {
            icalcomponent_remove_property(c, p);
            icalproperty_free(p);
        }
        p = next;
    }
    icalcomponent_add_property(c, icalproperty_new_summary("Busy"));
}

/* Removes what must never reach a file: METHOD (RFC 4791 §4.1, notes A2),
 * a stale X-IMAPCALFS-SOURCE, and libical's X-LIC-ERROR lines. */
static void cal_strip(icalcomponent *c)
{
    icalcomponent_strip_errors(c);
    icalproperty *p = icalcomponent_get_first_property(c, ICAL_ANY_PROPERTY);
    while (p) {
        icalproperty *next = icalcomponent_get_next_property(c, ICAL_ANY_PROPERTY);
        icalproperty_kind k = icalproperty_isa(p);
        const char *x = k == ICAL_X_PROPERTY ? icalproperty_get_x_name(p) : NULL;
        if (k == ICAL_METHOD_PROPERTY || (x && strcasecmp(x, "X-IMAPCALFS-SOURCE") == 0)) {
            icalcomponent_remove_property(c, p);
            icalproperty_free(p);
        }
        p = next;
    }
}

/* Serialises c as folded CRLF lines, plus X-IMAPCALFS-SOURCE (SPEC §2). */
static char *cal_render_component(icalcomponent *c, const char *source, size_t *len)
{
    cal_drop_foreign_children(c);
    char *s = cal_serialise_clean(c);
    if (!s)
        return NULL;
    struct cal_buf b = {0};
    cal_buf_add_text(&b, s, strlen(s));
    free(s);
    size_t n;
    char *text = cal_buf_take(&b, &n);
    if (!text || !source || !*source) {
        *len = n;
        return text;
    }
    cal_buf_adds(&b, "X-IMAPCALFS-SOURCE:");
    cal_buf_adds(&b, source);
    char *line = cal_buf_take(&b, NULL);
    char *out = line ? cal_text_insert_prop(text, n, line, len) : NULL;
    free(line);
    free(text);
    return out;
}

/* The match filters this component passes, as a bit mask. */
static uint64_t cal_match_mask(const char *text, size_t len, const struct cal_filter *f)
{
    uint64_t mask = 0;
    for (size_t i = 0; i < f->nmatch && i < CAL_MATCH_MAX; i++)
        if (cal_text_match(text, len, f->match[i].property, &f->match[i].re))
            mask |= (uint64_t)1 << i;
    return mask;
}

/* A UID for a component that has none (RFC 5545 requires one): a hash of
 * its text, so the same component always gets the same file. */
static char *cal_make_uid(icalcomponent *c)
{
    char *s = icalcomponent_as_ical_string_r(c);
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = s ? s : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    free(s);
    char buf[48];
    snprintf(buf, sizeof buf, "imapcalfs-%016llx", (unsigned long long)h);
    icalcomponent_add_property(c, icalproperty_new_uid(buf));
    return strdup(buf);
}

static int cal_same_identity(const struct cal_version *a, const struct cal_version *b)
{
    return a->sequence == b->sequence && a->dtstamp == b->dtstamp && a->cancel == b->cancel &&
           a->kind == b->kind && strcmp(a->rid, b->rid) == 0 && strcmp(a->uid, b->uid) == 0;
}

/* Turns one component into a version of this message. */
static int cal_add_component(struct cal_scan *sc, struct cal_zctx *zc, struct cal_tzmap *m,
                             icalcomponent *c, unsigned kind, int cancel)
{
    struct cal_versions *v = sc->v;
    const struct cal_filter *f = sc->f;
    struct cal_version x = {0};
    int rc = -ENOMEM;

    cal_strip(c);
    x.kind = kind;
    x.cancel = cancel;
    x.msg = v;
    icalproperty *p = icalcomponent_get_first_property(c, ICAL_UID_PROPERTY);
    const char *uid = p ? icalproperty_get_uid(p) : NULL;
    x.uid = uid && *uid ? strdup(uid) : cal_make_uid(c);
    if (!x.uid)
        goto out;
    if ((p = icalcomponent_get_first_property(c, ICAL_SEQUENCE_PROPERTY)) != NULL)
        x.sequence = icalproperty_get_sequence(p);
    if ((p = icalcomponent_get_first_property(c, ICAL_DTSTAMP_PROPERTY)) != NULL)
        x.dtstamp = cal_time_utc(zc, icalproperty_get_dtstamp(p), cal_prop_tzid(p));
    if ((p = icalcomponent_get_first_property(c, ICAL_RECURRENCEID_PROPERTY)) != NULL) {
        struct icaltimetype t = icalproperty_get_recurrenceid(p);
        if (!icaltime_is_null_time(t)) {
            const char *tz = cal_prop_tzid(p);
            cal_time_key(zc, t, tz, x.rid);
            x.rid_is_date = t.is_date;
            x.rid_value = icaltime_as_ical_string_r(t);
            if (!x.rid_value || (tz && !icaltime_is_utc(t) && !(x.rid_tzid = strdup(tz))))
                goto out;
        }
    }

    /* Google sends an inline part and invite.ics; Exchange rewrites one of
     * them. Identity is the scheduling key, not the bytes (SPEC §3). */
    for (size_t i = 0; i < v->n; i++) {
        if (cal_same_identity(&v->v[i], &x)) {
            rc = 0;
            goto out;
        }
    }

    if (cal_collect_tzids(c, &x.tzids, &x.ntz) < 0)
        goto out;
    if (x.ntz > 1)
        qsort(x.tzids, x.ntz, sizeof *x.tzids, cal_strcmp_p);
    if (x.ntz && !(x.tzdef = malloc(x.ntz * sizeof *x.tzdef)))
        goto out;
    for (size_t i = 0; i < x.ntz; i++)
        x.tzdef[i] = cal_tz_def(sc, zc, m, x.tzids[i]);

    if (f->has_after || f->has_before) {
        if (cal_window_compute(zc, c, f, &x.win) < 0)
            goto out;
        x.win_done = 1;
    }
    if (f->nmatch && f->privacy_busy) {
        /* Match what the sender wrote, not the "Busy" that is shown. */
        size_t len;
        char *pre = cal_render_component(c, NULL, &len);
        if (!pre)
            goto out;
        x.match_mask = cal_match_mask(pre, len, f);
        x.match_id = f->match;
        x.match_n = f->nmatch;
        free(pre);
    }
    if (f->privacy_busy)
        cal_apply_privacy(c);
    x.text = cal_render_component(c, v->source_url, &x.len);
    if (!x.text)
        goto out;

    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        struct cal_version *a = realloc(v->v, cap * sizeof *a);
        if (!a)
            goto out;
        v->v = a;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    sc->added++;
    if (sc->stats)
        sc->stats->versions++;
    return 0;
out:
    cal_version_clear(&x);
    return rc;
}

/*
 * A VEVENT with no usable DTSTART is no event: RFC 5546 requires one in
 * PUBLISH, REQUEST, ADD and COUNTER, RFC 5545 §3.6.1 whenever METHOD is
 * absent, and only a CANCEL may leave it out. libical keeps the component
 * when the DTSTART line did not parse (an X-LIC-ERROR instead), so such a
 * part would otherwise make a file that khal and others reject.
 */
static int cal_is_unusable(icalcomponent *c, unsigned kind, int cancel)
{
    if (kind != CAL_VEVENT || cancel)
        return 0;
    icalproperty *p = icalcomponent_get_first_property(c, ICAL_DTSTART_PROPERTY);
    return p == NULL || icaltime_is_null_time(icalproperty_get_dtstart(p));
}

/*
 * Every component of a selected kind directly inside container (a
 * VCALENDAR, libical's XROOT, or NULL for a bare component), per the
 * calendar's METHOD (RFC 5546 §1.4): REPLY, REFRESH, COUNTER and
 * DECLINECOUNTER are an attendee's answers and create nothing.
 */
static int cal_scan_calendar(struct cal_scan *sc, icalcomponent *container, icalcomponent *only)
{
    icalproperty_method method = ICAL_METHOD_NONE;
    icalproperty *mp = container && icalcomponent_isa(container) == ICAL_VCALENDAR_COMPONENT
                           ? icalcomponent_get_first_property(container, ICAL_METHOD_PROPERTY)
                           : NULL;
    if (mp)
        method = icalproperty_get_method(mp);
    if (method == ICAL_METHOD_REPLY || method == ICAL_METHOD_REFRESH ||
        method == ICAL_METHOD_COUNTER || method == ICAL_METHOD_DECLINECOUNTER)
        return 0;
    int cancel = method == ICAL_METHOD_CANCEL;
    struct cal_zctx zc = {.container = container};
    struct cal_tzmap m = {0};
    int rc = 0;
    if (only) {
        unsigned k = cal_kind_of(icalcomponent_isa(only));
        if ((k & sc->kinds) && cal_is_unusable(only, k, cancel))
            sc->unusable++;
        else if (k & sc->kinds) {
            sc->usable++;
            rc = cal_add_component(sc, &zc, &m, only, k, cancel);
        }
    } else {
        for (icalcomponent *c = icalcomponent_get_first_component(container, ICAL_ANY_COMPONENT);
             c && rc == 0; c = icalcomponent_get_next_component(container, ICAL_ANY_COMPONENT)) {
            unsigned k = cal_kind_of(icalcomponent_isa(c));
            if ((k & sc->kinds) && cal_is_unusable(c, k, cancel))
                sc->unusable++;
            else if (k & sc->kinds) {
                sc->usable++;
                rc = cal_add_component(sc, &zc, &m, c, k, cancel);
            }
        }
    }
    cal_tzmap_free(&m);
    cal_zctx_free(&zc);
    return rc;
}

/*
 * Gives back the spare room of v's arrays. Versions live as long as their
 * message is in a snapshot, and most messages carry one component: the
 * doubled capacity (four versions of some 200 bytes) was a third of the
 * parsed versions' memory at 10,000 messages.
 */
static void cal_versions_fit(struct cal_versions *v)
{
    if (v->cap > v->n && v->n > 0) {
        struct cal_version *a = realloc(v->v, v->n * sizeof *a);
        if (a) {
            v->v = a;
            v->cap = v->n;
        }
    }
    if (v->capvtz > v->nvtz && v->nvtz > 0) {
        const char **z = realloc(v->vtz, v->nvtz * sizeof *z);
        if (z)
            v->vtz = z;
        size_t *zl = realloc(v->vtz_len, v->nvtz * sizeof *zl);
        if (zl)
            v->vtz_len = zl;
        if (z || zl) /* the smaller of the two capacities */
            v->capvtz = v->nvtz;
    }
}

int cal_versions_add_part(struct cal_versions *v, const char *text, size_t len,
                          const struct cal_filter *f, struct cal_stats *stats, char *err,
                          size_t errlen)
{
    static const struct cal_filter none = {0};
    if (stats)
        stats->parts++;
    if (!v || (!text && len))
        return -EINVAL;
    if (!f)
        f = &none;
    /*
     * Google sends each invitation twice (inline text/calendar and
     * invite.ics) with the same decoded bytes. Parsing them again would add
     * nothing: every component has an identity already kept (below, SPEC
     * §3), and time zones are looked up only for added components. So the
     * same bytes are parsed once per message.
     */
    struct cal_part_digest d = {.len = len};
    unsigned mdlen = 0;
    int have_digest =
        EVP_Digest(len ? text : "", len, d.sha, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32;
    for (size_t i = 0; have_digest && i < v->nparsed; i++)
        if (v->parsed[i].len == len && memcmp(v->parsed[i].sha, d.sha, sizeof d.sha) == 0)
            return 0;
    if (len > CAL_MAX_PART_BYTES) {
        cal_seterr(err, errlen, "calendar part of %zu bytes is over the %u-byte limit", len,
                   CAL_MAX_PART_BYTES);
        goto bad;
    }
    /* libical serialises and frees recursively: refuse deep nesting first (notes A6). */
    if (cal_check_nesting(text, len, CAL_MAX_NESTING, err, errlen) < 0)
        goto bad;
    char *clean = cal_sanitize(text ? text : "", len);
    if (!clean)
        return -ENOMEM;
    /* U+FFFD: bytes that did not fit the part's charset (a wrong label)
     * were replaced while decoding; the events show, but .status says so. */
    int replaced = strstr(clean, "\xEF\xBF\xBD") != NULL;
    icalcomponent *root = icalparser_parse_string(clean);
    free(clean);
    if (!root) {
        cal_seterr(err, errlen, "not iCalendar data (or truncated: missing END lines)");
        goto bad;
    }
    struct cal_scan sc = {
        .v = v, .f = f, .stats = stats, .kinds = f->kinds ? f->kinds : CAL_VEVENT};
    int rc = 0;
    icalcomponent_kind k = icalcomponent_isa(root);
    if (k == ICAL_VCALENDAR_COMPONENT) {
        rc = cal_scan_calendar(&sc, root, NULL);
    } else if (k == ICAL_XROOT_COMPONENT) {
        /* Several calendars, or bare components, one after the other (notes A1). */
        for (icalcomponent *c = icalcomponent_get_first_component(root, ICAL_ANY_COMPONENT);
             c && rc == 0; c = icalcomponent_get_next_component(root, ICAL_ANY_COMPONENT)) {
            if (icalcomponent_isa(c) == ICAL_VCALENDAR_COMPONENT)
                rc = cal_scan_calendar(&sc, c, NULL);
            else if (cal_kind_of(icalcomponent_isa(c)))
                rc = cal_scan_calendar(&sc, root, c);
        }
    } else if (cal_kind_of(k)) {
        rc = cal_scan_calendar(&sc, NULL, root); /* a bare VEVENT */
    } else {
        icalcomponent_free(root);
        cal_seterr(err, errlen, "no VCALENDAR or calendar component in the part");
        goto bad;
    }
    icalcomponent_free(root);
    if (rc < 0)
        return rc;
    if (sc.unusable && sc.usable == 0) {
        /* Nothing usable: the part is skipped like one that does not parse. */
        cal_seterr(err, errlen, "no usable component (VEVENT without a valid DTSTART)");
        goto bad;
    }
    if (sc.unusable && stats)
        stats->warnings += (unsigned)sc.unusable;
    if (replaced && stats)
        stats->warnings++;
    if (have_digest) {
        struct cal_part_digest *a = realloc(v->parsed, (v->nparsed + 1) * sizeof *a);
        if (a) {
            v->parsed = a;
            a[v->nparsed++] = d;
        }
    }
    cal_versions_fit(v);
    return sc.added;
bad:
    if (stats)
        stats->parts_bad++;
    return -EINVAL;
}

int cal_window_from_text(const struct cal_version *v, const struct cal_filter *f, struct cal_win *w)
{
    /* Rebuild a small calendar of the component and its sender's zones. */
    struct cal_buf b = {0};
    cal_buf_adds(&b, "BEGIN:VCALENDAR\r\n");
    for (size_t i = 0; i < v->ntz; i++)
        if (v->tzdef[i] >= 0)
            cal_buf_add(&b, v->msg->vtz[v->tzdef[i]], v->msg->vtz_len[v->tzdef[i]]);
    cal_buf_add(&b, v->text, v->len);
    cal_buf_adds(&b, "END:VCALENDAR\r\n");
    char *s = cal_buf_take(&b, NULL);
    if (!s)
        return -ENOMEM;
    icalcomponent *cal = icalparser_parse_string(s);
    free(s);
    icalcomponent *c = NULL;
    if (cal)
        for (c = icalcomponent_get_first_component(cal, ICAL_ANY_COMPONENT);
             c && !cal_kind_of(icalcomponent_isa(c));
             c = icalcomponent_get_next_component(cal, ICAL_ANY_COMPONENT))
            ;
    int rc;
    if (c) {
        struct cal_zctx zc = {.container = cal};
        rc = cal_window_compute(&zc, c, f, w);
        cal_zctx_free(&zc);
    } else {
        memset(w, 0, sizeof *w);
        w->total = CAL_WIN_MANY;
        rc = 0;
    }
    if (cal)
        icalcomponent_free(cal);
    return rc;
}
