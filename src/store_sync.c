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
#include "names.h"
#include "opts.h"
#include "source.h"
#include "store_internal.h"

/* ---- reference counting ---------------------------------------------- */

struct msgver *msgver_new(uint32_t uid, int64_t internaldate, const struct cal_origin *o)
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

struct msgver *msgver_find(struct msgver *const *v, size_t n, uint32_t uid)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (v[mid]->uid == uid)
            return v[mid];
        if (v[mid]->uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
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
    pthread_mutex_destroy(&snap->merged_lock);
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
struct blob *store_reuse_or_new(const struct blob *old, struct blob *b, int *changed)
{
    if (b && blob_equal(old, b)) {
        blob_unref(b);
        return blob_ref((struct blob *)old);
    }
    *changed = 1;
    return b;
}

struct blob *store_blob_of(struct cal_rope *r)
{
    struct blob *b = blob_segs(r->seg, r->nseg, cal_hold_release, r->hold);

    free(r->seg);
    memset(r, 0, sizeof *r);
    return b;
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
 * Renders snap's event files from its versions. *changed says whether
 * anything differs from old; the changed paths are reported. merged.ics is
 * made of the event files' contents (their components and VTIMEZONEs), so
 * it changed exactly when one of them did: otherwise old's is shared, and
 * it is built on its first read (mbox_snap_merged), not here, since most
 * reads are of the root's merged.ics or of single event files.
 */
static int render(struct store *s, struct mbox *m, const struct mbox_snap *old,
                  struct mbox_snap *snap, int quiet, int *changed)
{
    struct cal_versions **vs = calloc(snap->nmsgs ? snap->nmsgs : 1, sizeof *vs);
    struct cal_result res = {0};
    int rc;

    if (vs == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < snap->nmsgs; i++)
        vs[i] = snap->msgs[i]->v;
    rc = cal_resolve(vs, snap->nmsgs, &s->o->filter, CAL_WANT_EVENTS, &res);
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
        f->bytes = store_blob_of(&res.events[i].bytes);
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
            /* Same bytes: share the old blob, nothing to invalidate. */
            blob_unref(snap->files[i].bytes);
            snap->files[i].bytes = blob_ref(of->bytes);
            continue;
        }
        *changed = 1;
        if (!quiet)
            store_notify(s, m->path, snap->files[i].name);
    }
    for (size_t i = 0; old && i < old->nfiles; i++)
        if (!find_file(snap, old->files[i].name)) {
            *changed = 1;
            store_notify(s, m->path, old->files[i].name);
        }
    for (size_t i = 0; i < snap->nfiles; i++)
        if (i == 0 || snap->files[i].mtime > snap->merged_mtime)
            snap->merged_mtime = snap->files[i].mtime;
    if (old == NULL || *changed || old->nfiles != snap->nfiles) {
        *changed = 1;
        if (!quiet)
            store_notify(s, m->path, NAME_MERGED);
    } else {
        /* Readers of old may be building it right now. */
        pthread_mutex_t *lock = (pthread_mutex_t *)&old->merged_lock;

        pthread_mutex_lock(lock);
        if (old->merged)
            snap->merged = blob_ref(old->merged);
        pthread_mutex_unlock(lock);
    }
out:
    cal_result_free(&res);
    return rc;
}

struct blob *mbox_snap_merged(struct store *s, struct mbox_snap *snap)
{
    struct cal_versions **vs;
    struct cal_result res = {0};
    struct blob *b = NULL;

    pthread_mutex_lock(&snap->merged_lock);
    if (snap->merged == NULL && (vs = calloc(snap->nmsgs ? snap->nmsgs : 1, sizeof *vs)) != NULL) {
        for (size_t i = 0; i < snap->nmsgs; i++)
            vs[i] = snap->msgs[i]->v;
        if (cal_resolve(vs, snap->nmsgs, &s->o->filter, CAL_WANT_MERGED, &res) == 0) {
            snap->merged = store_blob_of(&res.merged);
        }
        cal_result_free(&res);
        free(vs);
    }
    if (snap->merged)
        b = blob_ref(snap->merged);
    pthread_mutex_unlock(&snap->merged_lock);
    return b;
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
static int mbox_sync(struct store *s, struct mbox *m, int offline, int quiet, char *err,
                     size_t errlen)
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
    pthread_mutex_init(&snap->merged_lock, NULL);
    snap->uidvalidity = l.uidvalidity;
    snap->messages = (unsigned)l.count;
    for (size_t i = 0; i < l.count; i++)
        snap->unreadable += l.msgs[i].unreadable != 0;
    for (size_t i = 0; i < l.count; i++)
        newest = l.msgs[i].internaldate > newest ? l.msgs[i].internaldate : newest;
    if ((rc = collect_versions(s, m, old, &l, cache_bound(known, &l), snap, offline, err,
                               errlen)) != 0)
        goto out;
    /*
     * A quiet (hydrating) snapshot stands in for the last mount's, which
     * readers may be served while the first online sync runs: it must be
     * whole. With parts missing from the cache, the first sync starts from
     * nothing instead, as it did before.
     */
    for (size_t i = 0; quiet && i < snap->nmsgs; i++)
        if (snap->msgs[i]->incomplete) {
            rc = -EAGAIN;
            goto out;
        }
    if ((rc = render(s, m, old, snap, quiet, &changed)) != 0)
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
    snap->complete = !offline;
    for (size_t i = 0; i < snap->nmsgs; i++)
        snap->complete = snap->complete && !snap->msgs[i]->incomplete;
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

/*
 * A first snapshot of m from the disk cache alone (no source, no change
 * reported: nothing of m was served yet), unless m has one already. It is
 * not fresh: the next access syncs it, from it.
 */
void mbox_hydrate(struct store *s, struct mbox *m)
{
    char ignored[256];
    int have;

    pthread_mutex_lock(&m->sync_lock);
    pthread_mutex_lock(&m->lock);
    have = m->snap != NULL;
    pthread_mutex_unlock(&m->lock);
    if (!have)
        mbox_sync(s, m, 1, 1, ignored, sizeof ignored);
    pthread_mutex_unlock(&m->sync_lock);
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
        rc = mbox_sync(s, m, 0, 0, err, sizeof err);
    if (rc != 0 && rc != -ENOMEM && s->cache) {
        pthread_mutex_lock(&m->lock);
        int have = m->snap != NULL;
        pthread_mutex_unlock(&m->lock);
        char ignored[256];

        if (!have && mbox_sync(s, m, 1, 0, ignored, sizeof ignored) == 0)
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
