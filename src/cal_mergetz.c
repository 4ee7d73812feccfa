/*
 * cal_mergetz.c — the VTIMEZONEs of a merged.ics (SPEC §2): one per TZID
 * definition. A TZID is a name chosen by the sender, not a zone: Outlook's
 * "Customized Time Zone" names whatever rules the sender's Windows had, so
 * two messages can use one name for two zones. Within a merge the first
 * definition (in output order) keeps the name; each different one gets the
 * name plus " (" 8 hex digits of a hash of its normalised text ")", and
 * the TZID parameters of the events using it are rewritten to match.
 * Text only; not thread-safe (one merge at a time per object).
 */
#include "cal_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CAL_MTZ_NONE SIZE_MAX

/* One TZID used by one event. */
struct cal_mtz_use {
    size_t ev;
    const char *tzid;
    const char *def; /* VTIMEZONE text, or NULL */
    size_t len;
    const struct cal_versions *from; /* what def is borrowed from, or NULL */
    size_t cls;                      /* index in classes, or CAL_MTZ_NONE (no definition) */
};

/* One distinct definition of one TZID. */
struct cal_mtz_cls {
    const char *tzid;
    const char *def; /* the first text of the class in output order */
    size_t len;
    const struct cal_versions *from;
    char *sig;  /* normalised text, NULL until needed */
    char *name; /* the new name, NULL when it keeps tzid */
};

struct cal_mergetz {
    struct cal_mtz_use *u;
    size_t nu, capu;
    struct cal_mtz_cls *c;
    size_t nc, capc;
    const struct cal_mtz_cls **order; /* sorted by the name they are emitted under */
};

struct cal_mergetz *cal_mergetz_new(void)
{
    return calloc(1, sizeof(struct cal_mergetz));
}

void cal_mergetz_free(struct cal_mergetz *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nc; i++) {
        free(m->c[i].sig);
        free(m->c[i].name);
    }
    free(m->c);
    free(m->u);
    free(m->order);
    free(m);
}

int cal_mergetz_use(struct cal_mergetz *m, size_t ev, const char *tzid, const char *def, size_t len,
                    const struct cal_versions *from)
{
    if (m->nu && ev < m->u[m->nu - 1].ev)
        return -EINVAL; /* events come in output order */
    if (m->nu == m->capu) {
        size_t cap = m->capu ? m->capu * 2 : 16;
        struct cal_mtz_use *u = realloc(m->u, cap * sizeof *u);
        if (!u)
            return -ENOMEM;
        m->u = u;
        m->capu = cap;
    }
    m->u[m->nu++] = (struct cal_mtz_use){ev, tzid, def, def ? len : 0, from, CAL_MTZ_NONE};
    return 0;
}

/* Length of the property name: up to the first ';' or ':'. */
static size_t cal_name_len(const char *line)
{
    return strcspn(line, ";:");
}

static int cal_name_is(const char *line, const char *name)
{
    size_t n = strlen(name);
    return cal_name_len(line) == n && strncasecmp(line, name, n) == 0;
}

/* ---- comparing definitions ---------------------------------------------- */

struct cal_strv {
    char **s;
    size_t n, cap;
    int oom;
};

static void cal_strv_add(struct cal_strv *v, const char *s, size_t n)
{
    if (v->oom)
        return;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        char **a = realloc(v->s, cap * sizeof *a);
        if (!a) {
            v->oom = 1;
            return;
        }
        v->s = a;
        v->cap = cap;
    }
    if (!(v->s[v->n] = strndup(s, n)))
        v->oom = 1;
    else
        v->n++;
}

static void cal_strv_free(struct cal_strv *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->s[i]);
    free(v->s);
    memset(v, 0, sizeof *v);
}

static int cal_strcmp_pp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The strings sorted, each followed by '\n', appended to b. */
static void cal_strv_join_sorted(struct cal_strv *v, struct cal_buf *b)
{
    if (v->n > 1)
        qsort(v->s, v->n, sizeof *v->s, cal_strcmp_pp);
    for (size_t i = 0; i < v->n; i++) {
        cal_buf_adds(b, v->s[i]);
        cal_buf_add(b, "\n", 1);
    }
}

/* Properties that never change what local time means in UTC: the name
 * itself (equal within a group, spelt with or without escapes), metadata
 * (RFC 5545 §3.8.3.3 TZURL, §3.8.7.3 LAST-MODIFIED), display texts
 * (§3.8.3.2 TZNAME, COMMENT) and extensions (X-LIC-LOCATION, Microsoft's
 * X-MICROSOFT-CDO-TZID and the like). */
static int cal_tz_noise(const char *line, int depth)
{
    return (depth == 1 && cal_name_is(line, "TZID")) || cal_name_is(line, "LAST-MODIFIED") ||
           cal_name_is(line, "TZURL") || cal_name_is(line, "TZNAME") ||
           cal_name_is(line, "COMMENT") || strncasecmp(line, "X-", 2) == 0;
}

/*
 * A definition reduced to what decides its UTC offsets: unfolded, noise
 * dropped, property names in upper case, and the order of properties and
 * of STANDARD/DAYLIGHT rules made irrelevant by sorting (§3.6.5 gives them
 * no order). Equal signatures mean the same zone; different signatures may
 * still be the same zone, which costs one VTIMEZONE more, never a wrong
 * time. NULL on ENOMEM; caller frees.
 */
static char *cal_tz_signature(const char *def, size_t len)
{
    struct cal_lines l = {def, len, 0, {0}};
    struct cal_strv top = {0}, subs = {0}, cur = {0};
    struct cal_buf b = {0}, sub = {0};
    int depth = 0;
    size_t start;
    char *out = NULL;
    while (cal_lines_next(&l, &start)) {
        char *line = l.line.p;
        for (size_t i = 0, n = cal_name_len(line); i < n; i++)
            if (line[i] >= 'a' && line[i] <= 'z')
                line[i] = (char)(line[i] - 'a' + 'A');
        if (strncmp(line, "BEGIN:", 6) == 0) {
            if (++depth == 2)
                cal_strv_add(&cur, line, strlen(line));
        } else if (strncmp(line, "END:", 4) == 0) {
            if (depth-- == 2) {
                sub.len = 0;
                cal_strv_join_sorted(&cur, &sub);
                cal_strv_free(&cur);
                cal_strv_add(&subs, sub.p ? sub.p : "", sub.len);
            }
        } else if (depth >= 1 && !cal_tz_noise(line, depth)) {
            cal_strv_add(depth == 1 ? &top : &cur, line, strlen(line));
        }
    }
    if (l.line.oom || top.oom || subs.oom || cur.oom || sub.oom)
        goto out;
    cal_strv_join_sorted(&top, &b);
    cal_buf_add(&b, "--\n", 3);
    cal_strv_join_sorted(&subs, &b);
    out = cal_buf_take(&b, NULL);
out:
    cal_buf_free(&b);
    cal_buf_free(&sub);
    cal_buf_free(&l.line);
    cal_strv_free(&top);
    cal_strv_free(&subs);
    cal_strv_free(&cur);
    return out;
}

/* The class of first..nc that def belongs to, or nc when none; -ENOMEM.
 * The common case is the same interned text (one pointer) or the same
 * bytes, so every class is tried that way before any normalising. */
static long cal_mtz_find(struct cal_mergetz *m, size_t first, const char *def, size_t len,
                         char **sig)
{
    for (size_t k = first; k < m->nc; k++) {
        const struct cal_mtz_cls *c = &m->c[k];
        if (c->def == def || (c->len == len && memcmp(c->def, def, len) == 0))
            return (long)k;
    }
    for (size_t k = first; k < m->nc; k++) {
        struct cal_mtz_cls *c = &m->c[k];
        if (!c->sig && !(c->sig = cal_tz_signature(c->def, c->len)))
            return -ENOMEM;
        if (!*sig && !(*sig = cal_tz_signature(def, len)))
            return -ENOMEM;
        if (strcmp(c->sig, *sig) == 0)
            return (long)k;
    }
    return (long)m->nc;
}

/* ---- naming ------------------------------------------------------------- */

static const char *cal_mtz_emitted(const struct cal_mtz_cls *c)
{
    return c->name ? c->name : c->tzid;
}

/* Is the name a TZID some event uses, or a name given already? */
static int cal_mtz_taken(const struct cal_mergetz *m, const char *name)
{
    for (size_t i = 0; i < m->nu; i++)
        if (strcmp(m->u[i].tzid, name) == 0)
            return 1;
    for (size_t i = 0; i < m->nc; i++)
        if (m->c[i].name && strcmp(m->c[i].name, name) == 0)
            return 1;
    return 0;
}

/* The new name of a class: a hash of the signature, so one definition gets
 * one name whatever else is merged with it; a counter only when that name
 * is taken (a TZID spelt that way, or a hash collision). */
static int cal_mtz_name(struct cal_mergetz *m, struct cal_mtz_cls *c)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = c->sig; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    unsigned hash = (unsigned)(h >> 32) ^ (unsigned)h;
    size_t cap = strlen(c->tzid) + 40;
    char *name = malloc(cap);
    if (!name)
        return -ENOMEM;
    for (unsigned k = 1;; k++) {
        if (k == 1)
            snprintf(name, cap, "%s (%08x)", c->tzid, hash);
        else
            snprintf(name, cap, "%s (%08x-%u)", c->tzid, hash, k);
        if (!cal_mtz_taken(m, name))
            break;
    }
    c->name = name;
    return 0;
}

static int cal_use_cmp(const void *pa, const void *pb)
{
    const struct cal_mtz_use *a = *(const struct cal_mtz_use *const *)pa;
    const struct cal_mtz_use *b = *(const struct cal_mtz_use *const *)pb;
    int c = strcmp(a->tzid, b->tzid);
    if (c)
        return c;
    return a < b ? -1 : a > b; /* then output order */
}

static int cal_cls_cmp(const void *pa, const void *pb)
{
    const struct cal_mtz_cls *a = *(const struct cal_mtz_cls *const *)pa;
    const struct cal_mtz_cls *b = *(const struct cal_mtz_cls *const *)pb;
    return strcmp(cal_mtz_emitted(a), cal_mtz_emitted(b));
}

/* A new class; takes sig. */
static int cal_mtz_add_cls(struct cal_mergetz *m, const struct cal_mtz_use *u, char *sig)
{
    if (m->nc == m->capc) {
        size_t cap = m->capc ? m->capc * 2 : 8;
        struct cal_mtz_cls *c = realloc(m->c, cap * sizeof *c);
        if (!c)
            return -ENOMEM;
        m->c = c;
        m->capc = cap;
    }
    m->c[m->nc++] = (struct cal_mtz_cls){u->tzid, u->def, u->len, u->from, sig, NULL};
    return 0;
}

int cal_mergetz_resolve(struct cal_mergetz *m)
{
    struct cal_mtz_use **idx = m->nu ? malloc(m->nu * sizeof *idx) : NULL;
    char *sig = NULL;
    int rc = -ENOMEM;
    if (m->nu && !idx)
        return -ENOMEM;
    for (size_t i = 0; i < m->nu; i++)
        idx[i] = &m->u[i];
    if (m->nu > 1)
        qsort(idx, m->nu, sizeof *idx, cal_use_cmp);
    for (size_t g = 0; g < m->nu;) {
        size_t end = g + 1, first = m->nc;
        while (end < m->nu && strcmp(idx[end]->tzid, idx[g]->tzid) == 0)
            end++;
        for (size_t i = g; i < end; i++) {
            struct cal_mtz_use *u = idx[i];
            if (!u->def)
                continue;
            long k = cal_mtz_find(m, first, u->def, u->len, &sig);
            if (k < 0)
                goto out;
            if ((size_t)k == m->nc) {
                if (cal_mtz_add_cls(m, u, sig) < 0)
                    goto out;
                sig = NULL;
            }
            free(sig);
            sig = NULL;
            u->cls = (size_t)k;
        }
        /* A use without a definition reads the name's first one, as a
         * single-TZID merge always did. */
        for (size_t i = g; i < end; i++)
            if (!idx[i]->def && first < m->nc)
                idx[i]->cls = first;
        for (size_t k = first + 1; k < m->nc; k++) {
            struct cal_mtz_cls *c = &m->c[k];
            if (!c->sig && !(c->sig = cal_tz_signature(c->def, c->len)))
                goto out;
            if (cal_mtz_name(m, c) < 0)
                goto out;
        }
        g = end;
    }
    if (m->nc && !(m->order = malloc(m->nc * sizeof *m->order)))
        goto out;
    for (size_t k = 0; k < m->nc; k++)
        m->order[k] = &m->c[k];
    if (m->nc > 1)
        qsort(m->order, m->nc, sizeof *m->order, cal_cls_cmp);
    rc = 0;
out:
    free(sig);
    free(idx);
    return rc;
}

/* ---- output ------------------------------------------------------------- */

/* The zone under its new name: the TZID property (RFC 5545 §3.8.3.1) gets
 * the suffix after its value as written (escapes and all); other lines are
 * copied as they are. */
static void cal_mtz_add_renamed_zone(struct cal_buf *b, const struct cal_mtz_cls *c)
{
    struct cal_lines l = {c->def, c->len, 0, {0}};
    struct cal_buf tmp = {0};
    const char *suffix = c->name + strlen(c->tzid);
    int depth = 0;
    size_t start;
    while (cal_lines_next(&l, &start)) {
        const char *line = l.line.p;
        if (strncasecmp(line, "BEGIN:", 6) == 0) {
            depth++;
        } else if (strncasecmp(line, "END:", 4) == 0) {
            depth--;
        } else if (depth == 1 && cal_name_is(line, "TZID")) {
            tmp.len = 0;
            cal_buf_adds(&tmp, line);
            cal_buf_adds(&tmp, suffix);
            if (!tmp.oom) {
                cal_buf_add_line(b, tmp.p, tmp.len);
                continue;
            }
            b->oom = 1;
        }
        cal_buf_add(b, c->def + start, l.pos - start);
    }
    if (l.line.oom || tmp.oom)
        b->oom = 1;
    cal_buf_free(&l.line);
    cal_buf_free(&tmp);
}

void cal_mergetz_add_zones(const struct cal_mergetz *m, struct cal_ropeb *b)
{
    for (size_t i = 0; i < m->nc; i++) {
        const struct cal_mtz_cls *c = m->order[i];
        if (c->name) {
            struct cal_buf t = {0};
            cal_mtz_add_renamed_zone(&t, c);
            cal_ropeb_own(b, &t);
        } else {
            cal_ropeb_add(b, c->def, c->len);
            cal_ropeb_from(b, c->from);
        }
    }
}

/* The new name of tzid among the uses u[u0..u1) of one event, or NULL. */
static const char *cal_mtz_renamed(const struct cal_mergetz *m, size_t u0, size_t u1,
                                   const char *tzid)
{
    for (size_t i = u0; i < u1; i++) {
        const struct cal_mtz_use *u = &m->u[i];
        if (u->cls != CAL_MTZ_NONE && m->c[u->cls].name && strcmp(u->tzid, tzid) == 0)
            return m->c[u->cls].name;
    }
    return NULL;
}

/*
 * The logical line with each TZID parameter (RFC 5545 §3.2.19, quoted or
 * not) that names a renamed zone rewritten, into out. 0 when nothing
 * changed (out untouched), 1 when out holds the new line.
 */
static int cal_mtz_rewrite_params(const struct cal_mergetz *m, size_t u0, size_t u1,
                                  const char *line, struct cal_buf *out)
{
    size_t n = strlen(line), p = cal_name_len(line), copied = 0;
    struct cal_buf val = {0};
    int changed = 0;
    while (p < n && line[p] == ';') {
        size_t ps = p + 1, eq = ps;
        while (eq < n && line[eq] != '=' && line[eq] != ';' && line[eq] != ':')
            eq++;
        if (eq >= n || line[eq] != '=') {
            p = eq; /* a parameter without a value: go on from ';' or ':' */
            continue;
        }
        size_t vs = eq + 1, ve = vs;
        int quoted = 0;
        for (; ve < n; ve++) {
            if (line[ve] == '"')
                quoted = !quoted;
            else if (!quoted && (line[ve] == ';' || line[ve] == ':'))
                break;
        }
        if (eq - ps == 4 && strncasecmp(line + ps, "TZID", 4) == 0) {
            val.len = 0;
            if (ve - vs >= 2 && line[vs] == '"' && line[ve - 1] == '"')
                cal_buf_add(&val, line + vs + 1, ve - vs - 2);
            else
                cal_buf_add(&val, line + vs, ve - vs);
            const char *to = cal_mtz_renamed(m, u0, u1, val.len ? val.p : "");
            if (to) {
                cal_buf_add(out, line + copied, vs - copied);
                cal_buf_add_param(out, to);
                copied = ve;
                changed = 1;
            }
        }
        p = ve;
    }
    if (changed)
        cal_buf_add(out, line + copied, n - copied);
    if (val.oom)
        out->oom = 1;
    cal_buf_free(&val);
    return changed;
}

void cal_mergetz_add_comp(const struct cal_mergetz *m, size_t ev, struct cal_ropeb *rb,
                          const char *text, size_t len, const struct cal_versions *from)
{
    size_t lo = 0, hi = m->nu;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->u[mid].ev < ev)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t u1 = lo;
    int renamed = 0;
    for (; u1 < m->nu && m->u[u1].ev == ev; u1++)
        renamed |= m->u[u1].cls != CAL_MTZ_NONE && m->c[m->u[u1].cls].name != NULL;
    if (!renamed && from) {
        cal_ropeb_add(rb, text, len);
        cal_ropeb_from(rb, from);
        return;
    }
    if (!renamed) {
        struct cal_buf copy = {0};
        cal_buf_add(&copy, text, len);
        cal_ropeb_own(rb, &copy);
        return;
    }
    /* Unfold, rewrite, refold at 75 octets; lines without a renamed TZID
     * keep their bytes. */
    struct cal_lines l = {text, len, 0, {0}};
    struct cal_buf tmp = {0}, out = {0}, *b = &out;
    size_t start;
    while (cal_lines_next(&l, &start)) {
        tmp.len = 0;
        if (cal_mtz_rewrite_params(m, lo, u1, l.line.p, &tmp) && !tmp.oom)
            cal_buf_add_line(b, tmp.p, tmp.len);
        else
            cal_buf_add(b, text + start, l.pos - start);
    }
    if (l.line.oom || tmp.oom)
        b->oom = 1;
    cal_buf_free(&l.line);
    cal_buf_free(&tmp);
    cal_ropeb_own(rb, &out);
}
