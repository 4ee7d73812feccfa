/*
 * cal_resolve.c — versions of many messages in, event files out.
 *
 * Scheduling semantics of RFC 5546 §2.1.5: per (UID, RECURRENCE-ID) the
 * highest SEQUENCE wins, then the latest DTSTAMP, then the latest message;
 * a winning CANCEL removes what it cancels. Then the filters, then the
 * rendering of deterministic VCALENDAR bytes (SPEC §2). Works on text only.
 */
#include "cal_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Version order within one key: which one is newer (RFC 5546 §2.1.5). */
static int cal_order(const struct cal_version *a, const struct cal_version *b)
{
    if (a->sequence != b->sequence)
        return a->sequence < b->sequence ? -1 : 1;
    if (a->dtstamp != b->dtstamp)
        return a->dtstamp < b->dtstamp ? -1 : 1;
    if (a->msg->internaldate != b->msg->internaldate)
        return a->msg->internaldate < b->msg->internaldate ? -1 : 1;
    if (a->msg->uid != b->msg->uid)
        return a->msg->uid < b->msg->uid ? -1 : 1;
    int c = strcmp(a->msg->mailbox, b->msg->mailbox);
    if (c)
        return c;
    if (a->cancel != b->cancel)
        return a->cancel - b->cancel; /* a CANCEL wins an exact tie */
    return 0;
}

/* Total order for sorting: key, then age, then bytes (determinism). */
static int cal_sort_cmp(const void *pa, const void *pb)
{
    const struct cal_version *a = *(const struct cal_version *const *)pa;
    const struct cal_version *b = *(const struct cal_version *const *)pb;
    int c = strcmp(a->uid, b->uid);
    if (c)
        return c;
    if ((c = strcmp(a->rid, b->rid)) != 0)
        return c;
    if ((c = cal_order(a, b)) != 0)
        return c;
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    size_t n = a->len < b->len ? a->len : b->len;
    if ((c = memcmp(a->text, b->text, n)) != 0)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

/* One component as it goes into the output. */
struct cal_out {
    const struct cal_version *v;
    char *owned; /* text with EXDATEs added, if any */
    const char *text;
    size_t len;
};

struct cal_tzuse {
    const char *tzid;
    const char *def; /* VTIMEZONE text, or NULL when none could be found */
    size_t len;
    const struct cal_versions *from; /* the message def came from; NULL: repaired (static) */
};

/* One event (UID) on its way to a file. */
struct cal_ev {
    const char *uid;
    struct cal_out *comps;
    size_t ncomps;
    struct cal_tzuse *tz;
    size_t ntz;
    int64_t mtime;
};

static void cal_ev_free(struct cal_ev *e)
{
    for (size_t i = 0; i < e->ncomps; i++)
        free(e->comps[i].owned);
    free(e->comps);
    free(e->tz);
    memset(e, 0, sizeof *e);
}

static int cal_version_has_tz(const struct cal_version *v, struct cal_tzuse *u)
{
    for (size_t i = 0; i < v->ntz; i++) {
        if (strcmp(v->tzids[i], u->tzid) == 0) {
            if (v->tzdef[i] < 0)
                return 1;
            u->def = v->msg->vtz[v->tzdef[i]];
            u->len = v->msg->vtz_len[v->tzdef[i]];
            u->from = v->msg;
            return 2;
        }
    }
    return 0;
}

static int cal_tzuse_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cal_tzuse *)a)->tzid, ((const struct cal_tzuse *)b)->tzid);
}

/*
 * The VTIMEZONEs an event uses, sorted by TZID: the sender's definition
 * from the first component (in output order, then the applied cancels)
 * that has one, else a repaired zone, else none (left as written).
 */
static int cal_ev_zones(struct cal_ev *e, const struct cal_version *const *cancels, size_t ncancels)
{
    size_t cap = 0;
    for (size_t i = 0; i < e->ncomps; i++)
        cap += e->comps[i].v->ntz;
    for (size_t i = 0; i < ncancels; i++)
        cap += cancels[i]->rid_tzid ? 1 : 0;
    if (!cap)
        return 0;
    if (!(e->tz = calloc(cap, sizeof *e->tz)))
        return -ENOMEM;
    for (size_t k = 0; k < e->ncomps + ncancels; k++) {
        const struct cal_version *v = k < e->ncomps ? e->comps[k].v : cancels[k - e->ncomps];
        size_t n = k < e->ncomps ? v->ntz : 1;
        for (size_t j = 0; j < n; j++) {
            const char *tzid = k < e->ncomps ? v->tzids[j] : v->rid_tzid;
            if (!tzid)
                continue;
            size_t t;
            for (t = 0; t < e->ntz && strcmp(e->tz[t].tzid, tzid) != 0; t++)
                ;
            if (t == e->ntz)
                e->tz[e->ntz++].tzid = tzid;
        }
    }
    for (size_t t = 0; t < e->ntz; t++) {
        struct cal_tzuse *u = &e->tz[t];
        for (size_t k = 0; k < e->ncomps + ncancels && !u->def; k++) {
            const struct cal_version *v = k < e->ncomps ? e->comps[k].v : cancels[k - e->ncomps];
            cal_version_has_tz(v, u);
        }
        if (!u->def)
            u->def = cal_tz_repair_text(u->tzid, &u->len);
    }
    if (e->ntz > 1)
        qsort(e->tz, e->ntz, sizeof *e->tz, cal_tzuse_cmp);
    return 0;
}

/* Adds "EXDATE" for a cancelled occurrence to the master (RFC 5545 §3.8.5.1). */
static int cal_add_exdate(struct cal_out *m, const struct cal_version *cancel)
{
    struct cal_buf b = {0};
    cal_buf_adds(&b, "EXDATE");
    if (cancel->rid_is_date) {
        cal_buf_adds(&b, ";VALUE=DATE");
    } else if (cancel->rid_tzid) {
        cal_buf_adds(&b, ";TZID=");
        cal_buf_add_param(&b, cancel->rid_tzid);
    }
    cal_buf_adds(&b, ":");
    cal_buf_adds(&b, cancel->rid_value);
    char *line = cal_buf_take(&b, NULL);
    if (!line)
        return -ENOMEM;
    if (cal_text_has_line(m->text, m->len, line)) {
        free(line); /* the organizer's newer master already excludes it */
        return 0;
    }
    size_t len;
    char *t = cal_text_insert_prop(m->text, m->len, line, &len);
    free(line);
    if (!t)
        return -ENOMEM;
    free(m->owned);
    m->owned = t;
    m->text = t;
    m->len = len;
    return 0;
}

static int cal_kept_by_match(const struct cal_ev *e, const struct cal_filter *f)
{
    for (size_t i = 0; i < f->nmatch; i++) {
        int ok = 0;
        for (size_t k = 0; k < e->ncomps && !ok; k++) {
            const struct cal_version *v = e->comps[k].v;
            if (v->match_id && v->match_id == f->match && v->match_n == f->nmatch &&
                i < CAL_MATCH_MAX)
                ok = (v->match_mask >> i) & 1;
            else
                ok = cal_text_match(v->text, v->len, f->match[i].property, &f->match[i].re);
        }
        if (!ok)
            return 0;
    }
    return 1;
}

static int cal_win_same(const struct cal_win *w, const struct cal_filter *f)
{
    return w->has_after == f->has_after && w->has_before == f->has_before &&
           (!f->has_after || w->after == f->after) && (!f->has_before || w->before == f->before);
}

/* Does the event keep an occurrence in the after/before window? The
 * master's occurrences count unless an override or a cancel took them. */
static int cal_kept_by_window(const struct cal_ev *e, const struct cal_version *const *cancels,
                              size_t ncancels, const struct cal_filter *f, int *rc)
{
    int keep = 0;
    for (size_t k = 0; k < e->ncomps && !keep; k++) {
        const struct cal_version *v = e->comps[k].v;
        struct cal_win tmp = {0};
        const struct cal_win *w = &v->win;
        if (!v->win_done || !cal_win_same(w, f)) {
            if (cal_window_from_text(v, f, &tmp) < 0) {
                *rc = -ENOMEM;
                return 0;
            }
            w = &tmp;
        }
        if (w->total == 0) {
            keep = 0;
        } else if (v->rid[0] || w->total == CAL_WIN_MANY) {
            keep = 1;
        } else {
            /* Master: subtract the instances overridden or cancelled. */
            unsigned gone = 0;
            for (unsigned i = 0; i < w->nkeys; i++) {
                int hit = 0;
                for (size_t j = 1; j < e->ncomps && !hit; j++)
                    hit = strcmp(e->comps[j].v->rid, w->keys[i]) == 0;
                for (size_t j = 0; j < ncancels && !hit; j++)
                    hit = strcmp(cancels[j]->rid, w->keys[i]) == 0;
                gone += hit;
            }
            keep = w->total > gone;
        }
        cal_win_free(&tmp);
    }
    return keep;
}

/*
 * Resolves one UID: versions[0..n) sorted by RECURRENCE-ID then age.
 * Fills e (ncomps 0: nothing left, or filtered out).
 */
static int cal_resolve_uid(const struct cal_version *const *vs, size_t n,
                           const struct cal_filter *f, struct cal_ev *e)
{
    const struct cal_version **win = malloc(n * sizeof *win);
    const struct cal_version **cancels = malloc(n * sizeof *cancels);
    size_t nwin = 0, ncancels = 0;
    int rc = -ENOMEM;
    memset(e, 0, sizeof *e);
    e->uid = vs[0]->uid;
    if (!win || !cancels || !(e->comps = calloc(n, sizeof *e->comps)))
        goto out;
    /* The winner of each key is the last of its run; note whether a key
     * had versions other than its winning CANCEL (then the cancel changed
     * something and its message counts for mtime). */
    int *lost = calloc(n, sizeof *lost);
    if (!lost)
        goto out;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && strcmp(vs[j + 1]->rid, vs[i]->rid) == 0)
            j++;
        lost[nwin] = j > i;
        win[nwin++] = vs[j];
        i = j + 1;
    }
    const struct cal_version *master_cancel = !win[0]->rid[0] && win[0]->cancel ? win[0] : NULL;
    int changed_by_master_cancel = master_cancel && lost[0];
    for (size_t i = 0; i < nwin; i++) {
        const struct cal_version *w = win[i];
        if (w == master_cancel)
            continue;
        /* A whole-event CANCEL removes every key it is not older than. */
        if (master_cancel && cal_order(w, master_cancel) <= 0) {
            changed_by_master_cancel = 1;
            continue;
        }
        if (w->cancel) {
            if (lost[i] || (e->ncomps && !e->comps[0].v->rid[0]))
                cancels[ncancels++] = w;
            continue;
        }
        e->comps[e->ncomps].v = w;
        e->comps[e->ncomps].text = w->text;
        e->comps[e->ncomps].len = w->len;
        e->ncomps++;
    }
    free(lost);
    rc = 0;
    if (!e->ncomps)
        goto drop; /* everything cancelled */

    int has_master = !e->comps[0].v->rid[0];
    for (size_t i = 0; i < ncancels; i++) {
        if (has_master && (rc = cal_add_exdate(&e->comps[0], cancels[i])) < 0)
            goto out;
    }
    if (f->nmatch && !cal_kept_by_match(e, f))
        goto drop;
    if (f->has_after || f->has_before) {
        int keep = cal_kept_by_window(e, cancels, ncancels, f, &rc);
        if (rc < 0)
            goto out;
        if (!keep)
            goto drop;
    }
    if ((rc = cal_ev_zones(e, cancels, has_master ? ncancels : 0)) < 0)
        goto out;
    e->mtime = e->comps[0].v->msg->internaldate;
    for (size_t i = 1; i < e->ncomps; i++)
        if (e->comps[i].v->msg->internaldate > e->mtime)
            e->mtime = e->comps[i].v->msg->internaldate;
    for (size_t i = 0; i < ncancels; i++)
        if (cancels[i]->msg->internaldate > e->mtime)
            e->mtime = cancels[i]->msg->internaldate;
    if (changed_by_master_cancel && master_cancel->msg->internaldate > e->mtime)
        e->mtime = master_cancel->msg->internaldate;
    goto out;
drop:
    cal_ev_free(e);
out:
    free(win);
    free(cancels);
    if (rc < 0)
        cal_ev_free(e);
    return rc;
}

static void cal_add_header(struct cal_ropeb *b)
{
    cal_ropeb_adds(b, "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:" CAL_PRODID
                      "\r\nCALSCALE:GREGORIAN\r\n");
}

/* A component: its version's text (borrowed), or the copy made for it
 * (EXDATEs added), which the rope gets a copy of: merged.ics may use it too. */
static void cal_add_comp(struct cal_ropeb *b, const struct cal_out *c)
{
    if (c->owned) {
        struct cal_buf t = {0};
        cal_buf_add(&t, c->text, c->len);
        cal_ropeb_own(b, &t);
    } else {
        cal_ropeb_add(b, c->text, c->len);
        cal_ropeb_from(b, c->v->msg);
    }
}

/* One event file (SPEC §2): its zones, master first, then overrides. */
static int cal_render_event(const struct cal_ev *e, struct cal_rope *out)
{
    struct cal_ropeb b = {0};
    cal_add_header(&b);
    for (size_t i = 0; i < e->ntz; i++) {
        if (e->tz[i].def) {
            cal_ropeb_add(&b, e->tz[i].def, e->tz[i].len);
            cal_ropeb_from(&b, e->tz[i].from);
        }
    }
    for (size_t i = 0; i < e->ncomps; i++)
        cal_add_comp(&b, &e->comps[i]);
    cal_ropeb_adds(&b, "END:VCALENDAR\r\n");
    return cal_ropeb_take(&b, out);
}

/* merged.ics: every event, one VTIMEZONE per TZID definition, zones
 * sorted by TZID (cal_mergetz.c). */
static int cal_render_merged(const struct cal_ev *ev, size_t n, struct cal_rope *out)
{
    struct cal_mergetz *m = cal_mergetz_new();
    int ok = m != NULL;
    for (size_t i = 0; ok && i < n; i++)
        for (size_t t = 0; ok && t < ev[i].ntz; t++)
            ok = cal_mergetz_use(m, i, ev[i].tz[t].tzid, ev[i].tz[t].def, ev[i].tz[t].len,
                                 ev[i].tz[t].from) == 0;
    if (!ok || cal_mergetz_resolve(m) < 0) {
        cal_mergetz_free(m);
        return -ENOMEM;
    }
    struct cal_ropeb b = {0};
    cal_add_header(&b);
    cal_mergetz_add_zones(m, &b);
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < ev[i].ncomps; c++) {
            const struct cal_out *o = &ev[i].comps[c];
            cal_mergetz_add_comp(m, i, &b, o->text, o->len, o->owned ? NULL : o->v->msg);
        }
    }
    cal_ropeb_adds(&b, "END:VCALENDAR\r\n");
    cal_mergetz_free(m);
    return cal_ropeb_take(&b, out);
}

void cal_result_free(struct cal_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nevents; i++) {
        free(r->events[i].uid);
        cal_rope_free(&r->events[i].bytes);
    }
    free(r->events);
    cal_rope_free(&r->merged);
    memset(r, 0, sizeof *r);
}

int cal_resolve(struct cal_versions *const *msgs, size_t n, const struct cal_filter *f,
                unsigned want, struct cal_result *out)
{
    static const struct cal_filter none = {0};
    const struct cal_version **all = NULL;
    struct cal_ev *ev = NULL;
    size_t nall = 0, nev = 0, nuid = 0;
    int rc = -ENOMEM;

    cal_tz_init();
    memset(out, 0, sizeof *out);
    if (!f)
        f = &none;
    unsigned kinds = f->kinds ? f->kinds : CAL_VEVENT;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += msgs[i] ? msgs[i]->n : 0;
    if (total && !(all = malloc(total * sizeof *all)))
        goto out;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; msgs[i] && j < msgs[i]->n; j++)
            if (msgs[i]->v[j].kind & kinds)
                all[nall++] = &msgs[i]->v[j];
    if (nall > 1)
        qsort(all, nall, sizeof *all, cal_sort_cmp);

    for (size_t i = 0; i < nall; i++)
        nuid += i == 0 || strcmp(all[i]->uid, all[i - 1]->uid) != 0;
    if (nuid && !(ev = calloc(nuid, sizeof *ev)))
        goto out;
    for (size_t i = 0; i < nall;) {
        size_t j = i + 1;
        while (j < nall && strcmp(all[j]->uid, all[i]->uid) == 0)
            j++;
        if ((rc = cal_resolve_uid(all + i, j - i, f, &ev[nev])) < 0)
            goto out;
        if (ev[nev].ncomps)
            nev++;
        i = j;
    }

    if (want & CAL_WANT_EVENTS) {
        if (nev && !(out->events = calloc(nev, sizeof *out->events))) {
            rc = -ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < nev; i++) {
            struct cal_event_file *fe = &out->events[i];
            fe->uid = strdup(ev[i].uid);
            int rr = cal_render_event(&ev[i], &fe->bytes);
            fe->mtime = ev[i].mtime;
            out->nevents++;
            if (!fe->uid || rr < 0) {
                rc = -ENOMEM;
                goto out;
            }
        }
    }
    if (want & CAL_WANT_MERGED) {
        if (cal_render_merged(ev, nev, &out->merged) < 0) {
            rc = -ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < nev; i++)
            if (i == 0 || ev[i].mtime > out->merged_mtime)
                out->merged_mtime = ev[i].mtime;
    }
    rc = 0;
out:
    for (size_t i = 0; i < nuid && ev; i++)
        cal_ev_free(&ev[i]);
    free(ev);
    free(all);
    if (rc < 0)
        cal_result_free(out);
    return rc;
}
