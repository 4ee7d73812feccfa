/*
 * store_root.c — the root's merged.ics: every selected mailbox synced (on
 * up to `connections` threads, each sync holding one session) and merged
 * into one calendar, built again only when some mailbox's content changed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "opts.h"
#include "store_internal.h"

/* ---- the root's merged.ics -------------------------------------------- */

struct blob *store_empty_calendar(void)
{
    struct cal_result res = {0};
    struct blob *b;
    struct cal_filter none = {0};

    if (cal_resolve(NULL, 0, &none, CAL_WANT_MERGED, &res) != 0)
        return NULL;
    b = store_blob_of(&res.merged);
    cal_result_free(&res);
    return b;
}

/* Mixes (path, generation) pairs into one key for the cached root file. */
static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

struct sync_all {
    struct store *s;
    struct tree *t;
    struct mbox_snap **snaps;
    int *errs;
    int force;
    atomic_size_t next;
};

static void *sync_worker(void *arg)
{
    struct sync_all *a = arg;
    size_t i;

    while ((i = atomic_fetch_add(&a->next, 1)) < a->t->nmboxes)
        a->snaps[i] = mbox_get(a->s, a->t->mboxes[i], a->force, &a->errs[i]);
    return NULL;
}

/*
 * Snapshots of every mailbox of t, syncing those that need it on up to
 * `connections` threads at once (each sync holds one IMAP session).
 */
static void sync_all(struct store *s, struct tree *t, int force, struct mbox_snap **snaps,
                     int *errs)
{
    struct sync_all a = {.s = s, .t = t, .snaps = snaps, .errs = errs, .force = force};
    size_t nthreads = s->o->connections, started = 0;
    pthread_t threads[16];

    atomic_init(&a.next, 0);
    if (nthreads > t->nmboxes)
        nthreads = t->nmboxes;
    if (nthreads > 16)
        nthreads = 16;
    for (; started + 1 < nthreads; started++)
        if (pthread_create(&threads[started], NULL, sync_worker, &a) != 0)
            break;
    sync_worker(&a);
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
}

/*
 * Every selected mailbox merged into one calendar. Built again only when
 * some mailbox's content changed since the last build.
 */
int store_root_merged(struct store *s, struct tree *t, int force, struct blob **out, int64_t *mtime)
{
    struct mbox_snap **snaps = calloc(t->nmboxes ? t->nmboxes : 1, sizeof *snaps);
    int *errs = calloc(t->nmboxes ? t->nmboxes : 1, sizeof *errs);
    struct cal_versions **vs = NULL;
    struct cal_result res = {0};
    size_t nvs = 0;
    uint64_t key = t->nmboxes;
    unsigned char rkey[32];
    struct root_state *states = NULL;
    int rc = 0, have_key = 0, generation_same;

    if (snaps == NULL || errs == NULL) {
        free(snaps);
        free(errs);
        return -ENOMEM;
    }
    pthread_mutex_lock(&s->root_sync_lock);
    /* The first read after a mount: what the last mount saved, if nothing changed. */
    if (!force && s->root_merged == NULL && store_root_from_cache(s, t, out, mtime) == 0) {
        pthread_mutex_lock(&s->lock);
        s->root_merged = blob_ref(*out);
        s->root_mtime = *mtime;
        s->root_generation = 0; /* no snapshot yet: the next read syncs them */
        s->root_from_cache = 1;
        clock_gettime(CLOCK_MONOTONIC, &s->root_cached_at);
        pthread_mutex_unlock(&s->lock);
        goto out;
    }
    /* Until ttl passes, the saved root stands for the listings it was checked against. */
    pthread_mutex_lock(&s->lock);
    if (!force && s->root_from_cache && s->root_merged &&
        store_is_fresh(s, &s->root_cached_at, 1)) {
        *out = blob_ref(s->root_merged);
        *mtime = s->root_mtime;
        pthread_mutex_unlock(&s->lock);
        goto out;
    }
    s->root_from_cache = 0;
    pthread_mutex_unlock(&s->lock);
    sync_all(s, t, force, snaps, errs);
    for (size_t i = 0; i < t->nmboxes; i++) {
        if (snaps[i] == NULL) {
            rc = errs[i] == -ENOENT || errs[i] == 0 ? -EIO : errs[i];
            goto out;
        }
        key = mix(mix(key, store_ino(t->mboxes[i]->path)), snaps[i]->generation);
        nvs += snaps[i]->nmsgs;
    }
    pthread_mutex_lock(&s->lock);
    generation_same = s->root_merged && s->root_generation == key;
    pthread_mutex_unlock(&s->lock);
    /* Every read lands here: the listings are hashed only when something may have changed. */
    if (!generation_same)
        have_key = store_root_key(s, t, snaps, rkey, &states) == 0;
    pthread_mutex_lock(&s->lock);
    if (s->root_merged && (generation_same || (have_key && s->root_key_ok &&
                                               memcmp(s->root_key, rkey, sizeof rkey) == 0))) {
        /* Same generations, or the same listings (the root came from the cache). */
        s->root_generation = key;
        if (have_key) /* the mailbox states may have moved on (flags) */
            store_root_keep(s, t, rkey, s->root_anchor_uv, states, 0);
        states = NULL;
        *out = blob_ref(s->root_merged);
        *mtime = s->root_mtime;
        pthread_mutex_unlock(&s->lock);
        goto out;
    }
    pthread_mutex_unlock(&s->lock);
    if ((vs = calloc(nvs ? nvs : 1, sizeof *vs)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    nvs = 0;
    for (size_t i = 0; i < t->nmboxes; i++)
        for (size_t j = 0; j < snaps[i]->nmsgs; j++)
            vs[nvs++] = snaps[i]->msgs[j]->v;
    if ((rc = cal_resolve(vs, nvs, &s->o->filter, CAL_WANT_MERGED, &res)) != 0)
        goto out;
    pthread_mutex_lock(&s->lock);
    {
        int changed = 0;
        struct blob *b = store_reuse_or_new(s->root_merged, store_blob_of(&res.merged), &changed);

        if (b == NULL) {
            pthread_mutex_unlock(&s->lock);
            rc = -ENOMEM;
            goto out;
        }
        blob_unref(s->root_merged);
        s->root_merged = b;
        s->root_mtime = res.merged_mtime;
        s->root_generation = key;
        if (have_key)
            store_root_keep(s, t, rkey, snaps[0]->uidvalidity, states, 0);
        else
            s->root_key_ok = 0;
        states = NULL;
        *out = blob_ref(b);
        *mtime = s->root_mtime;
    }
    pthread_mutex_unlock(&s->lock);
    store_notify(s, "/", NAME_MERGED);
out:
    pthread_mutex_unlock(&s->root_sync_lock);
    cal_result_free(&res);
    free(vs);
    free(states);
    for (size_t i = 0; i < t->nmboxes; i++)
        mbox_snap_unref(snaps[i]);
    free(snaps);
    free(errs);
    return rc;
}
