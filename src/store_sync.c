/*
 * store_sync.c — bringing one mailbox up to date.
 *
 * A sync lists the mailbox (UIDs, dates, calendar parts), keeps the parsed
 * versions of messages it already knows (same UIDVALIDITY and UID: IMAP
 * messages never change, RFC 3501 §2.3.1.1), fetches and parses only the
 * parts of new messages, then renders a new snapshot and publishes it.
 * Readers keep using the old snapshot until the swap; paths whose bytes
 * changed are reported so the kernel's caches can be dropped.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "log.h"
#include "mime.h"
#include "names.h"
#include "opts.h"
#include "source.h"
#include "store_internal.h"

/* ---- reference counting ---------------------------------------------- */

static struct msgver *msgver_new(uint32_t uid, int64_t internaldate, const struct cal_origin *o)
{
    struct msgver *mv = calloc(1, sizeof *mv);

    if (mv == NULL)
        return NULL;
    atomic_init(&mv->refs, 1);
    mv->uid = uid;
    mv->internaldate = internaldate;
    if ((mv->v = cal_versions_new(o)) == NULL) {
        free(mv);
        return NULL;
    }
    return mv;
}

static void msgver_unref(struct msgver *mv)
{
    if (mv && atomic_fetch_sub(&mv->refs, 1) == 1) {
        cal_versions_free(mv->v);
        free(mv);
    }
}

static void snap_free(struct mbox_snap *snap)
{
    for (size_t i = 0; i < snap->nmsgs; i++)
        msgver_unref(snap->msgs[i]);
    free(snap->msgs);
    for (size_t i = 0; i < snap->nfiles; i++) {
        free(snap->files[i].name);
        blob_unref(snap->files[i].bytes);
    }
    free(snap->files);
    blob_unref(snap->merged);
    source_listing_free(&snap->listing);
    free(snap);
}

void mbox_snap_unref(struct mbox_snap *snap)
{
    if (snap && atomic_fetch_sub(&snap->refs, 1) == 1)
        snap_free(snap);
}

static struct mbox_snap *snap_ref(struct mbox_snap *snap)
{
    if (snap)
        atomic_fetch_add(&snap->refs, 1);
    return snap;
}

struct mbox *mbox_new(const char *raw, const char *display, const char *path)
{
    struct mbox *m = calloc(1, sizeof *m);

    if (m == NULL)
        return NULL;
    m->raw = strdup(raw);
    m->display = strdup(display);
    m->path = strdup(path);
    if (!m->raw || !m->display || !m->path) {
        free(m->raw);
        free(m->display);
        free(m->path);
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->sync_lock, NULL);
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void mbox_free(struct mbox *m)
{
    if (m == NULL)
        return;
    mbox_snap_unref(m->snap);
    pthread_mutex_destroy(&m->sync_lock);
    pthread_mutex_destroy(&m->lock);
    free(m->raw);
    free(m->display);
    free(m->path);
    free(m);
}

/* ---- the source URL of RFC 5092 ---------------------------------------- */

/* Appends s percent-encoded (RFC 3986: everything but unreserved and a few). */
static void url_append(char *out, size_t outlen, const char *s, const char *keep)
{
    size_t n = strlen(out);

    for (; *s && n + 4 < outlen; s++) {
        unsigned char ch = (unsigned char)*s;

        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~", ch) || (keep && strchr(keep, ch)))
            out[n++] = (char)ch;
        else
            n += (size_t)snprintf(out + n, outlen - n, "%%%02X", ch);
    }
    out[n] = '\0';
}

/* imap://user@host:port/Mailbox;UIDVALIDITY=v/;UID=u (RFC 5092 §6). */
static void source_url(const struct opts *o, const struct mbox *m, uint32_t uidvalidity,
                       uint32_t uid, char *out, size_t outlen)
{
    char tail[64];

    if (o->kind == OPTS_SRC_MAILDIR) {
        snprintf(out, outlen, "file://");
        url_append(out, outlen, o->maildir, "/");
        strncat(out, "#", outlen - strlen(out) - 1);
        url_append(out, outlen, m->display, "/");
    } else {
        snprintf(out, outlen, "imap://");
        url_append(out, outlen, o->user, NULL);
        strncat(out, "@", outlen - strlen(out) - 1);
        url_append(out, outlen, o->host, ":[]");
        snprintf(tail, sizeof tail, ":%u/", o->port);
        strncat(out, tail, outlen - strlen(out) - 1);
        url_append(out, outlen, m->display, "/");
    }
    snprintf(tail, sizeof tail, ";UIDVALIDITY=%u/;UID=%u", uidvalidity, uid);
    strncat(out, tail, outlen - strlen(out) - 1);
}

/* ---- fetching and parsing the parts of new messages ------------------ */

/* base64 of CAL_MAX_PART_BYTES, with room for line breaks. */
#define PART_MAX_ENCODED ((uint32_t)(CAL_MAX_PART_BYTES / 3 * 4 + CAL_MAX_PART_BYTES / 38 + 4096))

struct part_meta {
    struct msgver *mv;
    const struct mime_part *part;
    uint32_t uid;
};

struct fetch_ctx {
    struct store *s;
    struct mbox *m;
    uint32_t uidvalidity;
    struct cache_writer *writer; /* parts handed to on_part now come from the source */
    struct part_meta *meta;
    struct src_part_req *reqs;
    size_t n;
    unsigned char *seen; /* a part reported twice (after a reconnect) is parsed once */
};

/* Decodes one fetched part and parses it into its message's versions. */
static int on_part(void *arg, size_t i, const char *data, size_t len)
{
    struct fetch_ctx *c = arg;
    struct part_meta *pm = &c->meta[i];
    struct cal_stats *st = &pm->mv->stats;
    char err[256], *text = NULL;
    size_t tlen = 0;
    int rc;

    if (c->seen[i])
        return 0;
    c->seen[i] = 1;
    /* Kept as fetched: a remount parses it again without asking the server. */
    if (c->writer && cache_writer_add(c->writer, pm->uid, pm->part->section, data, len) != 0)
        log_warn("%s: cannot cache UID %u part %s", c->m->display, pm->uid, pm->part->section);
    rc = mime_decode_part(data, len, pm->part->encoding, pm->part->charset, &text, &tlen, err,
                          sizeof err);
    if (rc == -ENOMEM)
        return rc;
    if (rc != 0) {
        st->parts++;
        st->parts_bad++;
        log_warn("%s: UID %u part %s skipped: %s", c->m->display, pm->uid, pm->part->section, err);
        return 0;
    }
    rc = cal_versions_add_part(pm->mv->v, text, tlen, &c->s->o->filter, st, err, sizeof err);
    free(text);
    if (rc == -ENOMEM)
        return rc;
    if (rc < 0)
        log_warn("%s: UID %u part %s skipped: %s", c->m->display, pm->uid, pm->part->section, err);
    return 0;
}

/* Requests ordered by (uid, section), to match what the cache holds. */
static int compare_req(const void *a, const void *b, void *arg)
{
    const struct fetch_ctx *fc = arg;
    const struct part_meta *x = &fc->meta[*(const size_t *)a], *y = &fc->meta[*(const size_t *)b];

    if (x->uid != y->uid)
        return x->uid < y->uid ? -1 : 1;
    return strcmp(x->part->section, y->part->section);
}

struct cache_view {
    struct fetch_ctx *fc;
    size_t *order; /* request indices sorted by compare_req */
};

/* A cached part: if a request wants it, it is parsed like a fetched one. */
static int on_cached_part(void *arg, uint32_t uid, const char *section, const char *data,
                          size_t len)
{
    struct cache_view *v = arg;
    size_t lo = 0, hi = v->fc->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct part_meta *pm = &v->fc->meta[v->order[mid]];
        int c = pm->uid != uid ? (pm->uid < uid ? -1 : 1) : strcmp(pm->part->section, section);

        if (c == 0)
            return on_part(v->fc, v->order[mid], data, len);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0; /* an expunged message's part, or one no longer wanted */
}

/*
 * Serves what it can from the disk cache (one pass over its packs).
 * Requests it served are marked seen; *missing counts the rest.
 */
static int parts_from_cache(struct fetch_ctx *fc, size_t *missing)
{
    struct cache_view v = {fc, NULL};
    int rc = 0;

    *missing = fc->n;
    if (fc->s->cache == NULL || fc->n == 0)
        return 0;
    if ((v.order = malloc(fc->n * sizeof *v.order)) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < fc->n; i++)
        v.order[i] = i;
    qsort_r(v.order, fc->n, sizeof *v.order, compare_req, fc);
    rc = cache_each_part(fc->s->cache, fc->m->raw, fc->uidvalidity, NULL, on_cached_part, &v);
    free(v.order);
    *missing = 0;
    for (size_t i = 0; i < fc->n; i++)
        *missing += !fc->seen[i];
    return rc;
}

struct missing_view {
    struct fetch_ctx *fc;
    size_t *map; /* request index → index in fc */
};

static int on_missing_part(void *arg, size_t j, const char *data, size_t len)
{
    struct missing_view *v = arg;

    return on_part(v->fc, v->map[j], data, len);
}

/* Fetches, in one go, the parts the cache did not have. */
static int fetch_missing(struct fetch_ctx *fc, size_t nmissing, char *err, size_t errlen)
{
    struct src_part_req *reqs = calloc(nmissing, sizeof *reqs);
    struct missing_view v = {fc, calloc(nmissing, sizeof *v.map)};
    size_t j = 0;
    int rc = -ENOMEM;

    if (reqs && v.map) {
        for (size_t i = 0; i < fc->n; i++)
            if (!fc->seen[i]) {
                reqs[j] = fc->reqs[i];
                v.map[j++] = i;
            }
        /* What arrives goes to the cache as one pack (one fsync per sync). */
        if (fc->s->cache)
            fc->writer = cache_writer_begin(fc->s->cache, fc->m->raw, fc->uidvalidity, NULL);
        rc = source_fetch_parts(fc->s->src, fc->m->raw, fc->uidvalidity, reqs, j, on_missing_part,
                                &v, err, errlen);
        /* Even after a failure the parts that did arrive are good to keep. */
        if (fc->writer && cache_writer_commit(fc->writer) != 0)
            log_warn("%s: cannot write fetched parts to the cache", fc->m->display);
        fc->writer = NULL;
    }
    free(reqs);
    free(v.map);
    return rc;
}

/* Finds uid among the old snapshot's messages (sorted by uid). */
static struct msgver *old_msgver(const struct mbox_snap *old, uint32_t uid)
{
    size_t lo = 0, hi = old ? old->nmsgs : 0;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (old->msgs[mid]->uid == uid)
            return old->msgs[mid];
        if (old->msgs[mid]->uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/*
 * Fills snap->msgs for the listing: known messages are shared with the old
 * snapshot, new ones get fresh versions from their fetched parts.
 */
/* The old snapshot's versions of uid, when they are whole (else parse again). */
static struct msgver *reusable_msgver(const struct mbox_snap *old, uint32_t uid)
{
    struct msgver *mv = old_msgver(old, uid);

    return mv && !mv->incomplete ? mv : NULL;
}

/*
 * The highest UID the cache can hold anything of: a sync writes its listing
 * before it fetches, UIDs only grow (RFC 3501 §2.3.1.1), so a message still
 * listed that any earlier sync saw is in known. UINT32_MAX: no bound known
 * (no listing, e.g. a damaged one: the parts may still be good).
 */
static uint32_t cache_bound(const struct src_listing *known, const struct src_listing *l)
{
    uint32_t top = 0;

    if (known == NULL || known->uidvalidity != l->uidvalidity)
        return UINT32_MAX;
    for (size_t i = 0; i < known->count; i++)
        top = known->msgs[i].uid > top ? known->msgs[i].uid : top;
    return top;
}

static int collect_versions(struct store *s, struct mbox *m, const struct mbox_snap *old,
                            const struct src_listing *l, uint32_t cached_top,
                            struct mbox_snap *snap, int offline, char *err, size_t errlen)
{
    size_t ncached = 0;

    struct fetch_ctx fc = {.s = s, .m = m, .uidvalidity = l->uidvalidity};
    struct msgver **fresh = NULL;
    const struct src_message **fresh_msg = NULL;
    size_t nparts = 0, k = 0, nreqs = 0, nfresh = 0;
    int rc = 0;

    if (old && old->uidvalidity != l->uidvalidity) {
        log_info("%s: UIDVALIDITY changed (%u -> %u): reading it anew", m->display,
                 old->uidvalidity, l->uidvalidity);
        old = NULL;
    }
    for (size_t i = 0; i < l->count; i++)
        if (l->msgs[i].parts.count && !reusable_msgver(old, l->msgs[i].uid))
            nparts += l->msgs[i].parts.count;
    snap->msgs = calloc(l->count ? l->count : 1, sizeof *snap->msgs);
    fresh = calloc(l->count ? l->count : 1, sizeof *fresh);
    fresh_msg = calloc(l->count ? l->count : 1, sizeof *fresh_msg);
    fc.meta = calloc(nparts ? nparts : 1, sizeof *fc.meta);
    fc.reqs = calloc(nparts ? nparts : 1, sizeof *fc.reqs);
    fc.seen = calloc(nparts ? nparts : 1, 1);
    if (!snap->msgs || !fresh || !fresh_msg || !fc.meta || !fc.reqs || !fc.seen) {
        rc = -ENOMEM;
        goto out;
    }
    /* Messages known from the last sync keep their versions: IMAP messages never change. */
    for (size_t i = 0; i < l->count; i++) {
        const struct src_message *msg = &l->msgs[i];
        struct msgver *mv;
        char url[1024];
        struct cal_origin origin;

        if (msg->parts.count == 0)
            continue;
        if ((mv = reusable_msgver(old, msg->uid)) != NULL) {
            atomic_fetch_add(&mv->refs, 1);
            snap->msgs[snap->nmsgs++] = mv;
            continue;
        }
        source_url(s->o, m, l->uidvalidity, msg->uid, url, sizeof url);
        origin = (struct cal_origin){.mailbox = m->display,
                                     .uid = msg->uid,
                                     .internaldate = msg->internaldate,
                                     .source_url = url};
        if ((mv = msgver_new(msg->uid, msg->internaldate, &origin)) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        snap->msgs[snap->nmsgs++] = mv;
        fresh[nfresh] = mv;
        fresh_msg[nfresh++] = msg;
    }
    /*
     * New to this mount but parsed by an earlier one: no libical needed.
     * Messages past what the cache can know (fresh is in UID order) are not
     * looked for: an incremental sync then reads no pack at all.
     */
    while (ncached < nfresh && fresh[ncached]->uid <= cached_top)
        ncached++;
    if ((rc = store_versions_load(s, m, l->uidvalidity, fresh, ncached)) != 0)
        goto out;
    for (size_t i = 0; i < nfresh; i++) {
        const struct src_message *msg = fresh_msg[i];
        struct msgver *mv = fresh[i];

        if (mv->from_cache)
            continue;
        for (size_t p = 0; p < msg->parts.count; p++) {
            /* Too big to be an invitation once decoded: not worth the download. */
            if (msg->parts.parts[p].size > PART_MAX_ENCODED) {
                log_warn("%s: UID %u part %s skipped: %u bytes", m->display, msg->uid,
                         msg->parts.parts[p].section, msg->parts.parts[p].size);
                mv->stats.parts++;
                mv->stats.parts_bad++;
                continue;
            }
            fc.meta[k] = (struct part_meta){mv, &msg->parts.parts[p], msg->uid};
            fc.reqs[k] = (struct src_part_req){msg->uid, msg->parts.parts[p].section};
            k++;
        }
    }
    fc.n = k;
    nreqs = k;
    if (k && fc.meta[0].uid <= cached_top)
        rc = parts_from_cache(&fc, &nreqs);
    /* Offline, what the cache lacks is simply not shown yet. */
    if (rc == 0 && nreqs && !offline)
        rc = fetch_missing(&fc, nreqs, err, errlen);
    /*
     * A part the source could not deliver (unreadable answer) is skipped
     * for now; the message stays incomplete, so the next sync asks again.
     */
    for (size_t i = 0; rc == 0 && !offline && i < fc.n; i++)
        if (!fc.seen[i]) {
            fc.meta[i].mv->stats.parts++;
            fc.meta[i].mv->stats.parts_bad++;
            fc.meta[i].mv->incomplete = 1;
        }
    /* Complete versions only: offline ones may lack parts still to come. */
    if (rc == 0 && !offline)
        store_versions_save(s, m, l->uidvalidity, fresh, nfresh);
out:
    free(fresh);
    free(fresh_msg);
    free(fc.meta);
    free(fc.reqs);
    free(fc.seen);
    return rc;
}

/* ---- rendering -------------------------------------------------------- */

int store_compare_file(const void *a, const void *b)
{
    return strcmp(((const struct snap_file *)a)->name, ((const struct snap_file *)b)->name);
}

static const struct snap_file *find_file(const struct mbox_snap *snap, const char *name)
{
    struct snap_file key = {.name = (char *)name};

    if (snap == NULL || snap->nfiles == 0)
        return NULL;
    return bsearch(&key, snap->files, snap->nfiles, sizeof key, store_compare_file);
}

/* Keeps the old blob when the bytes are equal, so unchanged files stay put. */
struct blob *store_reuse_or_new(const struct blob *old, char *data, size_t len, int *changed)
{
    if (old && old->len == len && memcmp(old->data, data, len) == 0) {
        free(data);
        return blob_ref((struct blob *)old);
    }
    *changed = 1;
    return blob_take(data, len);
}

void store_notify(struct store *s, const char *dir, const char *name)
{
    char path[4096];

    if (s->changed == NULL)
        return;
    if (name == NULL)
        snprintf(path, sizeof path, "%s", dir);
    else
        snprintf(path, sizeof path, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, name);
    s->changed(s->changed_ctx, path);
}

/*
 * Renders snap's event files and merged.ics from its versions. *changed
 * says whether anything differs from old; the changed paths are reported.
 */
static int render(struct store *s, struct mbox *m, const struct mbox_snap *old,
                  struct mbox_snap *snap, int *changed)
{
    struct cal_versions **vs = calloc(snap->nmsgs ? snap->nmsgs : 1, sizeof *vs);
    struct cal_result res = {0};
    int rc;

    if (vs == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < snap->nmsgs; i++)
        vs[i] = snap->msgs[i]->v;
    rc = cal_resolve(vs, snap->nmsgs, &s->o->filter, CAL_WANT_EVENTS | CAL_WANT_MERGED, &res);
    free(vs);
    if (rc != 0)
        return rc;
    if ((snap->files = calloc(res.nevents ? res.nevents : 1, sizeof *snap->files)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < res.nevents; i++) {
        struct snap_file *f = &snap->files[snap->nfiles];

        if ((f->name = name_for_uid(res.events[i].uid, strlen(res.events[i].uid))) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        f->mtime = res.events[i].mtime;
        f->bytes = blob_take(res.events[i].data, res.events[i].len);
        res.events[i].data = NULL;
        snap->nfiles++;
        if (f->bytes == NULL) {
            rc = -ENOMEM;
            goto out;
        }
    }
    qsort(snap->files, snap->nfiles, sizeof *snap->files, store_compare_file);
    for (size_t i = 0; i < snap->nfiles; i++) {
        const struct snap_file *of = find_file(old, snap->files[i].name);

        if (of && blob_equal(of->bytes, snap->files[i].bytes)) {
            /* Same bytes: share the old buffer, nothing to invalidate. */
            blob_unref(snap->files[i].bytes);
            snap->files[i].bytes = blob_ref(of->bytes);
            continue;
        }
        *changed = 1;
        store_notify(s, m->path, snap->files[i].name);
    }
    for (size_t i = 0; old && i < old->nfiles; i++)
        if (!find_file(snap, old->files[i].name)) {
            *changed = 1;
            store_notify(s, m->path, old->files[i].name);
        }
    snap->merged_mtime = res.merged_mtime;
    {
        int merged_changed = 0;

        snap->merged = store_reuse_or_new(old ? old->merged : NULL, res.merged, res.merged_len,
                                          &merged_changed);
        if (merged_changed) {
            *changed = 1;
            store_notify(s, m->path, NAME_MERGED);
        }
    }
    res.merged = NULL;
    if (snap->merged == NULL)
        rc = -ENOMEM;
out:
    cal_result_free(&res);
    return rc;
}

static int64_t wall_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec;
}

/* Directory mtime: moves whenever the listing or a file in it changes. */
static int64_t dir_mtime(const struct mbox_snap *old, const struct mbox_snap *snap, int changed,
                         int64_t newest_message)
{
    int64_t t = snap->merged_mtime > newest_message ? snap->merged_mtime : newest_message;

    for (size_t i = 0; i < snap->nfiles; i++)
        if (snap->files[i].mtime > t)
            t = snap->files[i].mtime;
    if (old == NULL)
        return t;
    if (!changed)
        return old->dir_mtime;
    t = t > wall_now() ? t : wall_now();
    return t > old->dir_mtime ? t : old->dir_mtime + 1;
}

/* Same messages, same state: nothing to write to the cache. */
static int listing_same(const struct src_listing *a, const struct src_listing *b)
{
    if (a == NULL || a->uidvalidity != b->uidvalidity || a->count != b->count ||
        a->exists != b->exists || a->highestmodseq != b->highestmodseq)
        return 0;
    for (size_t i = 0; i < a->count; i++)
        if (a->msgs[i].uid != b->msgs[i].uid)
            return 0;
    return 1;
}

/*
 * One sync: list, fetch what is new, render, publish. offline: the source
 * is unreachable and nothing is in memory yet, so the snapshot is made from
 * the disk cache alone (listing and parts), to be served as stale.
 */
static int mbox_sync(struct store *s, struct mbox *m, int offline, char *err, size_t errlen)
{
    struct src_listing l = {0}, cached = {0};
    const struct src_listing *known = NULL;
    struct mbox_snap *old, *snap = NULL;
    int64_t newest = 0;
    int rc, changed = 0;

    pthread_mutex_lock(&m->lock);
    old = snap_ref(m->snap);
    pthread_mutex_unlock(&m->lock);
    /* After a remount the cache's listing lets the source send only changes. */
    if (old == NULL && s->cache && cache_get_listing(s->cache, m->raw, &cached) == 0)
        known = &cached;
    else if (old)
        known = &old->listing;
    if (offline) {
        if (known != &cached) {
            rc = -ENOENT;
            goto out;
        }
        l = cached;
        memset(&cached, 0, sizeof cached);
        known = &l;
    } else if ((rc = source_list_messages(s->src, m->raw, known, &l, err, errlen)) != 0)
        goto out;
    if (s->cache && known && known->uidvalidity != l.uidvalidity)
        cache_drop_other_uidvalidity(s->cache, m->raw, l.uidvalidity);
    if (s->cache && !listing_same(known, &l) && cache_put_listing(s->cache, m->raw, &l) != 0)
        log_warn("%s: cannot write its listing to the cache", m->display);
    if ((snap = calloc(1, sizeof *snap)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    atomic_init(&snap->refs, 1);
    snap->uidvalidity = l.uidvalidity;
    snap->messages = (unsigned)l.count;
    for (size_t i = 0; i < l.count; i++)
        snap->unreadable += l.msgs[i].unreadable != 0;
    for (size_t i = 0; i < l.count; i++)
        newest = l.msgs[i].internaldate > newest ? l.msgs[i].internaldate : newest;
    if ((rc = collect_versions(s, m, old, &l, cache_bound(known, &l), snap, offline, err,
                               errlen)) != 0 ||
        (rc = render(s, m, old, snap, &changed)) != 0)
        goto out;
    for (size_t i = 0; i < snap->nmsgs; i++) {
        const struct cal_stats *st = &snap->msgs[i]->stats;

        snap->stats.parts += st->parts;
        snap->stats.parts_bad += st->parts_bad;
        snap->stats.versions += st->versions;
        snap->stats.warnings += st->warnings;
    }
    if (old == NULL)
        changed = 1;
    snap->listing = l; /* the snapshot owns it now */
    memset(&l, 0, sizeof l);
    snap->generation = changed ? atomic_fetch_add(&s->next_generation, 1) + 1 : old->generation;
    snap->dir_mtime = dir_mtime(old, snap, changed, newest);
    log_debug("%s: synced, %zu messages, %zu with calendar data, %zu events", m->display,
              snap->listing.count, snap->nmsgs, snap->nfiles);
    pthread_mutex_lock(&m->lock);
    mbox_snap_unref(m->snap);
    m->snap = snap;
    if (!offline) {
        m->last_sync = wall_now();
        m->last_error[0] = '\0';
        m->failures = 0;
    }
    pthread_mutex_unlock(&m->lock);
    /* Parsing left many small blocks free: hand them back to the system. */
    if (changed)
        malloc_trim(0);
    /* Published, but m->sync_lock is still ours: nothing can replace it yet. */
    if (s->cache && !offline) {
        cache_compact(s->cache, m->raw, snap->uidvalidity, NULL, &snap->listing);
        cache_compact(s->cache, m->raw, snap->uidvalidity, s->versions_shelf, &snap->listing);
    }
    snap = NULL;
    if (changed && old)
        store_notify(s, m->path, NULL);
out:
    if (snap)
        mbox_snap_unref(snap);
    mbox_snap_unref(old);
    source_listing_free(&l);
    source_listing_free(&cached);
    return rc;
}

/* The source says m may have changed: the next access syncs it. */
static void on_push(void *arg)
{
    struct mbox *m = arg;

    pthread_mutex_lock(&m->lock);
    m->attempted = 0;
    m->failures = 0;
    pthread_mutex_unlock(&m->lock);
    store_notify(m->store, m->path, NULL);
    store_notify(m->store, "/", NAME_MERGED);
}

/* -o idle: a mailbox in use gets a watcher, up to STORE_MAX_WATCHES. */
static void maybe_watch(struct store *s, struct mbox *m)
{
    int rc;

    if (!s->o->idle || m->watched)
        return;
    m->watched = 1;
    if (atomic_fetch_add(&s->nwatched, 1) >= STORE_MAX_WATCHES) {
        log_info("%s: not watched with IDLE (already %d mailboxes)", m->display, STORE_MAX_WATCHES);
        return;
    }
    if ((rc = source_watch(s->src, m->raw, on_push, m)) != 0)
        log_warn("%s: cannot watch for changes: %s", m->display, strerror(-rc));
}

/* Under m->lock: may the current snapshot be served without a sync? */
static int mbox_fresh(const struct store *s, const struct mbox *m)
{
    if (m->snap == NULL)
        return 0;
    if (m->failures)
        return store_seconds_since(&m->synced_at) < store_retry_after(m->failures);
    return store_is_fresh(s, &m->synced_at, m->attempted);
}

/*
 * The mailbox's current snapshot, synced first when it is older than ttl
 * (or when force). While another thread syncs, a reader that has a
 * snapshot gets it at once rather than waiting for the network. When the
 * sync fails the old snapshot is served (stale) and the error kept for
 * .status; with nothing in memory the disk cache is served; with nothing at
 * all, -EIO.
 */
struct mbox_snap *mbox_get(struct store *s, struct mbox *m, int force, int *errp)
{
    struct mbox_snap *snap;
    char err[256], down[256];
    int rc;
    /*
     * The server failed to answer the mailbox list moments ago (and the
     * retry is not due yet): asking it again now would make this reader
     * wait another timeout for nothing. .refresh (force) still asks.
     */
    int unreachable = !force && store_source_down(s, down, sizeof down);

    pthread_mutex_lock(&m->lock);
    if (!force && mbox_fresh(s, m)) {
        snap = snap_ref(m->snap);
        pthread_mutex_unlock(&m->lock);
        return snap;
    }
    if (unreachable && m->snap) {
        snprintf(m->last_error, sizeof m->last_error, "%s", down);
        snap = snap_ref(m->snap); /* stale, and .status says why */
        pthread_mutex_unlock(&m->lock);
        return snap;
    }
    if (!force && m->snap && pthread_mutex_trylock(&m->sync_lock) != 0) {
        snap = snap_ref(m->snap); /* a sync is under way: serve what we have */
        pthread_mutex_unlock(&m->lock);
        return snap;
    }
    if (force || m->snap == NULL) {
        pthread_mutex_unlock(&m->lock);
        pthread_mutex_lock(&m->sync_lock);
        pthread_mutex_lock(&m->lock);
    }
    /* Another reader may have synced while we waited for the sync lock. */
    if (!force && (mbox_fresh(s, m) || (unreachable && m->snap))) {
        snap = snap_ref(m->snap);
        pthread_mutex_unlock(&m->lock);
        pthread_mutex_unlock(&m->sync_lock);
        return snap;
    }
    pthread_mutex_unlock(&m->lock);
    err[0] = '\0';
    if (unreachable) {
        rc = -EIO;
        snprintf(err, sizeof err, "%s", down);
    } else
        rc = mbox_sync(s, m, 0, err, sizeof err);
    if (rc != 0 && rc != -ENOMEM && s->cache) {
        pthread_mutex_lock(&m->lock);
        int have = m->snap != NULL;
        pthread_mutex_unlock(&m->lock);
        char ignored[256];

        if (!have && mbox_sync(s, m, 1, ignored, sizeof ignored) == 0)
            log_info("%s: serving the disk cache while the server is unreachable", m->display);
    }
    pthread_mutex_lock(&m->lock);
    if (!unreachable) {
        /* Only an attempt on the network counts for ttl and back-off. */
        clock_gettime(CLOCK_MONOTONIC, &m->synced_at);
        m->attempted = 1;
        m->failures = rc != 0 ? m->failures + 1 : 0;
    }
    if (rc != 0) {
        snprintf(m->last_error, sizeof m->last_error, "%s", err[0] ? err : strerror(-rc));
        if (!unreachable)
            log_warn("%s: sync failed: %s%s", m->display, m->last_error,
                     m->snap ? " (serving the cached copy)" : "");
    }
    snap = snap_ref(m->snap);
    pthread_mutex_unlock(&m->lock);
    if (rc == 0)
        maybe_watch(s, m);
    pthread_mutex_unlock(&m->sync_lock);
    if (snap == NULL)
        *errp = rc == -ENOENT ? -ENOENT : -EIO;
    return snap;
}
