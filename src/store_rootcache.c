/*
 * store_rootcache.c — the root's merged.ics kept in the cache across mounts.
 *
 * A remount of an account that did not change should not load and resolve
 * every parsed version again to rebuild a file it built before. So when the
 * store is freed, the root merged.ics it last built is saved with a key:
 * SHA-256 of the source, the filter and build (the versions shelf) and, per
 * mailbox, its listing (UIDVALIDITY, UIDs, dates, calendar parts: a message
 * never changes, RFC 3501 §2.3.1.1, so the listing names the versions and
 * the versions name the bytes). The first read of the root merged.ics after
 * a mount lists every mailbox, as a sync would (from the cached listing,
 * so only what changed is asked), and when the key is the same serves the
 * saved bytes; the mailboxes themselves are synced on their next access,
 * as before. Only complete snapshots are saved (synced online, no part
 * missing): what they show follows from their listings alone.
 *
 * The record is one pack on a shelf of its own ("r-" + the versions
 * shelf's hash) under the first mailbox's UIDVALIDITY directory, replaced
 * whole each time: the bytes, then the key and the mtime.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cache.h"
#include "log.h"
#include "opts.h"
#include "store_internal.h"

#define ROOT_SECTION "0"   /* sections are digits and dots */
#define ROOT_TAIL (32 + 8) /* after the bytes: key, mtime (the bytes stay in place) */

static void put(EVP_MD_CTX *x, const void *p, size_t n)
{
    EVP_DigestUpdate(x, p, n);
}

static void put_str(EVP_MD_CTX *x, const char *s)
{
    put(x, s ? s : "", strlen(s ? s : "") + 1);
}

static void put_u64(EVP_MD_CTX *x, uint64_t v)
{
    put(x, &v, sizeof v);
}

static void put_listing(EVP_MD_CTX *x, const struct mbox *m, const struct src_listing *l)
{
    put_str(x, m->path);
    put_str(x, m->raw);
    put_str(x, m->display);
    put_u64(x, l->uidvalidity);
    put_u64(x, l->count);
    for (size_t i = 0; i < l->count; i++) {
        const struct src_message *msg = &l->msgs[i];

        put_u64(x, msg->uid);
        put_u64(x, (uint64_t)msg->internaldate);
        put_u64(x, (uint64_t)msg->unreadable);
        put_u64(x, msg->parts.count);
        for (size_t p = 0; p < msg->parts.count; p++) {
            const struct mime_part *part = &msg->parts.parts[p];

            put_str(x, part->section);
            put_str(x, part->charset);
            put_u64(x, (uint64_t)part->encoding);
            put_u64(x, part->size);
        }
    }
}

/* The key of the root merged.ics made from these listings (one per mailbox of t). */
static int root_key(const struct store *s, const struct tree *t,
                    const struct src_listing *const *ls, unsigned char key[32])
{
    const struct opts *o = s->o;
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    unsigned n = 0;
    int ok;

    if (x == NULL)
        return -ENOMEM;
    ok = EVP_DigestInit_ex(x, EVP_sha256(), NULL) == 1;
    if (ok) {
        /* The source URL of every event names the account (SPEC §3). */
        put_u64(x, (uint64_t)o->kind);
        put_str(x, o->user);
        put_str(x, o->host);
        put_u64(x, o->port);
        put_str(x, o->maildir);
        put_str(x, s->versions_shelf);
        put_u64(x, t->nmboxes);
        for (size_t i = 0; i < t->nmboxes; i++)
            put_listing(x, t->mboxes[i], ls[i]);
        ok = EVP_DigestFinal_ex(x, key, &n) == 1 && n == 32;
    }
    EVP_MD_CTX_free(x);
    return ok ? 0 : -EIO;
}

static void shelf_name(const struct store *s, char *out, size_t outlen)
{
    /* versions_shelf is "v-<hash>": the same hash, another shelf. */
    snprintf(out, outlen, "r-%s", s->versions_shelf + 2);
}

int store_root_key(struct store *s, struct tree *t, struct mbox_snap **snaps, unsigned char key[32])
{
    const struct src_listing **ls;
    int rc;

    if (s->cache == NULL || t->nmboxes == 0)
        return -ENOENT;
    for (size_t i = 0; i < t->nmboxes; i++)
        if (!snaps[i]->complete)
            return -ENOENT;
    if ((ls = calloc(t->nmboxes, sizeof *ls)) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < t->nmboxes; i++)
        ls[i] = &snaps[i]->listing;
    rc = root_key(s, t, ls, key);
    free(ls);
    return rc;
}

void store_root_keep(struct store *s, struct tree *t, const unsigned char key[32],
                     uint32_t anchor_uv, int saved)
{
    char *anchor = strdup(t->mboxes[0]->raw);

    if (anchor == NULL) {
        s->root_key_ok = 0;
        return;
    }
    if (!s->root_key_ok || memcmp(s->root_key, key, 32) != 0 || s->root_anchor == NULL ||
        strcmp(anchor, s->root_anchor) != 0 || s->root_anchor_uv != anchor_uv)
        s->root_saved = 0;
    free(s->root_anchor);
    s->root_anchor = anchor;
    s->root_anchor_uv = anchor_uv;
    memcpy(s->root_key, key, 32);
    s->root_key_ok = 1;
    s->root_saved = s->root_saved || saved;
}

void store_root_save(struct store *s)
{
    char shelf[32];
    struct cache_writer *w;
    char *rec;
    size_t len;

    if (s->cache == NULL || !s->root_key_ok || s->root_saved || s->root_merged == NULL)
        return;
    len = s->root_merged->len + ROOT_TAIL;
    if ((rec = malloc(len)) == NULL)
        return;
    memcpy(rec, s->root_merged->data, s->root_merged->len);
    memcpy(rec + s->root_merged->len, s->root_key, 32);
    memcpy(rec + s->root_merged->len + 32, &s->root_mtime, 8);
    shelf_name(s, shelf, sizeof shelf);
    /* The old record goes first: a crash in between leaves none, never a wrong one. */
    cache_drop_shelf(s->cache, s->root_anchor, s->root_anchor_uv, shelf);
    if ((w = cache_writer_begin(s->cache, s->root_anchor, s->root_anchor_uv, shelf)) != NULL) {
        int rc = cache_writer_add(w, 1, ROOT_SECTION, rec, len);

        /* commit frees w, and refuses what add could not write */
        if (cache_writer_commit(w) == 0 && rc == 0)
            s->root_saved = 1;
    }
    if (!s->root_saved)
        log_warn("cannot save the root merged.ics to the cache");
    free(rec);
}

/* ---- the first read after a mount -------------------------------------- */

/*
 * Lists each mailbox the way its sync would, starting from the cached
 * listing (first, the anchor's, already read: it is taken). One session
 * does it: an unchanged mailbox costs one EXAMINE, less than opening
 * another connection (TLS, LOGIN) would.
 */
static int list_all(struct store *s, struct tree *t, struct src_listing *first,
                    struct src_listing *ls)
{
    for (size_t i = 0; i < t->nmboxes; i++) {
        struct mbox *m = t->mboxes[i];
        struct src_listing cached = {0};
        char err[256];
        int rc = 0;

        if (i == 0) {
            cached = *first;
            memset(first, 0, sizeof *first);
        } else
            rc = cache_get_listing(s->cache, m->raw, &cached);
        if (rc == 0)
            rc = source_list_messages(s->src, m->raw, &cached, &ls[i], err, sizeof err);
        source_listing_free(&cached);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The saved record, read (and its checksum checked) while the mailboxes are listed. */
struct root_load {
    struct store *s;
    const char *anchor;
    uint32_t uidvalidity;
    char shelf[32];
    uint32_t uid;
    char *rec;
    size_t len;
    int rc;
};

static void *root_load(void *arg)
{
    struct root_load *rl = arg;

    rl->rc = cache_take_single(rl->s->cache, rl->anchor, rl->uidvalidity, rl->shelf, &rl->uid,
                               &rl->rec, &rl->len);
    return NULL;
}

/*
 * The mailboxes get their snapshots from the disk cache meanwhile, so that
 * their first sync after the root's ttl reuses the parsed versions in
 * memory, as if this mount had synced them.
 */
static void *hydrate_all(void *arg)
{
    struct store *s = arg;
    struct tree *t = s->hydrate_tree;

    /* Behind the reader that is being served the saved root right now. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
    for (size_t i = 0; i < t->nmboxes; i++)
        mbox_hydrate(s, t->mboxes[i]);
    return NULL;
}

void store_root_join(struct store *s)
{
    if (s->hydrating) {
        pthread_join(s->hydrator, NULL);
        s->hydrating = 0;
        store_tree_unref(s->hydrate_tree);
        s->hydrate_tree = NULL;
    }
}

int store_root_from_cache(struct store *s, struct tree *t, struct blob **out, int64_t *mtime)
{
    struct src_listing anchor = {0}, *ls = NULL;
    const struct src_listing **lp = NULL;
    struct root_load rl = {.s = s, .anchor = t->mboxes[0]->raw};
    unsigned char key[32];
    pthread_t loader;
    int loading, listed, rc = -ENOENT;
    char *rec;
    size_t len;

    if (s->cache == NULL || t->nmboxes == 0)
        return -ENOENT;
    /* Nothing saved (a first mount): no time spent listing twice. */
    if (cache_get_listing(s->cache, t->mboxes[0]->raw, &anchor) != 0)
        return -ENOENT;
    rl.uidvalidity = anchor.uidvalidity;
    shelf_name(s, rl.shelf, sizeof rl.shelf);
    if (!cache_has_shelf(s->cache, rl.anchor, rl.uidvalidity, rl.shelf)) {
        source_listing_free(&anchor);
        return -ENOENT;
    }
    /*
     * Reading megabytes and checking their SHA-256 is CPU and disk; listing
     * is mostly waiting on the server: the two overlap.
     */
    loading = pthread_create(&loader, NULL, root_load, &rl) == 0;
    ls = calloc(t->nmboxes, sizeof *ls);
    lp = calloc(t->nmboxes, sizeof *lp);
    listed = ls && lp && list_all(s, t, &anchor, ls) == 0;
    source_listing_free(&anchor);
    if (loading)
        pthread_join(loader, NULL);
    else if (listed)
        root_load(&rl);
    rec = rl.rec;
    len = rl.len;
    if (ls == NULL || lp == NULL || rl.rc == -ENOMEM) {
        rc = -ENOMEM;
        goto out;
    }
    if (!listed || rl.rc != 0 || rl.uid != 1 || len < ROOT_TAIL)
        goto out;
    for (size_t i = 0; i < t->nmboxes; i++)
        lp[i] = &ls[i];
    len -= ROOT_TAIL;
    if (root_key(s, t, lp, key) != 0 || memcmp(key, rec + len, 32) != 0)
        goto out;
    memcpy(mtime, rec + len + 32, sizeof *mtime);
    rec[len] = '\0';
    *out = blob_take(rec, len);
    rec = NULL;
    if (*out == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    /* What is on disk is what this build would make: remember it as built. */
    store_root_keep(s, t, key, ls[0].uidvalidity, 1);
    if (!s->hydrating) {
        atomic_fetch_add(&t->refs, 1);
        s->hydrate_tree = t;
        s->hydrating = pthread_create(&s->hydrator, NULL, hydrate_all, s) == 0;
        if (!s->hydrating) {
            store_tree_unref(t);
            s->hydrate_tree = NULL;
        }
    }
    rc = 0;
out:
    if (ls)
        for (size_t i = 0; i < t->nmboxes; i++)
            source_listing_free(&ls[i]);
    free(ls);
    free(lp);
    free(rec);
    return rc;
}
