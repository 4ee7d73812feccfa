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
 *
 * Next to it ("q-" shelf), when every mailbox has a HIGHESTMODSEQ: the key
 * again, a digest of what else it covers (account, filter, mailbox names)
 * and each mailbox's UIDVALIDITY, EXISTS and HIGHESTMODSEQ as its listing
 * had them. The same three from one EXAMINE mean the same listing (the
 * driver skips listing on the same ground), so the first read checks the
 * key with one EXAMINE per mailbox, reading no listing, while the saved
 * bytes are read; any difference falls back to listing as above.
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
#define STATE_MAGIC "ICFSRQ01"
#define STATE_HEAD (8 + 32 + 32 + 8) /* magic, key, head, count */
#define STATE_ENTRY 16               /* UIDVALIDITY, EXISTS, HIGHESTMODSEQ */

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

/* What the key covers besides the listings: the account, the filter and build, the names. */
static void put_head(EVP_MD_CTX *x, const struct store *s, const struct tree *t, int names)
{
    const struct opts *o = s->o;

    /* The source URL of every event names the account (SPEC §3). */
    put_u64(x, (uint64_t)o->kind);
    put_str(x, o->user);
    put_str(x, o->host);
    put_u64(x, o->port);
    put_str(x, o->maildir);
    put_str(x, s->versions_shelf);
    put_u64(x, t->nmboxes);
    for (size_t i = 0; names && i < t->nmboxes; i++) {
        put_str(x, t->mboxes[i]->path);
        put_str(x, t->mboxes[i]->raw);
        put_str(x, t->mboxes[i]->display);
    }
    if (names) /* what a listing holds may depend on it; the listings name it otherwise */
        put_str(x, o->search);
}

/*
 * SHA-256 of what the key covers. With listings (one per mailbox of t):
 * the key of the root merged.ics they make. Without: the digest of the
 * head with the names, which the states record is kept for.
 */
static int head_and_listings(const struct store *s, const struct tree *t,
                             const struct src_listing *const *ls, unsigned char out[32])
{
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    unsigned n = 0;
    int ok;

    if (x == NULL)
        return -ENOMEM;
    ok = EVP_DigestInit_ex(x, EVP_sha256(), NULL) == 1;
    if (ok) {
        put_head(x, s, t, ls == NULL);
        for (size_t i = 0; ls && i < t->nmboxes; i++)
            put_listing(x, t->mboxes[i], ls[i]);
        ok = EVP_DigestFinal_ex(x, out, &n) == 1 && n == 32;
    }
    EVP_MD_CTX_free(x);
    return ok ? 0 : -EIO;
}

static int root_key(const struct store *s, const struct tree *t,
                    const struct src_listing *const *ls, unsigned char key[32])
{
    return head_and_listings(s, t, ls, key);
}

static int head_digest(const struct store *s, const struct tree *t, unsigned char out[32])
{
    return head_and_listings(s, t, NULL, out);
}

/* Each listing's state (malloc'd, one per mailbox), or NULL when out of memory. */
static struct root_state *listing_states(const struct tree *t, const struct src_listing *const *ls)
{
    struct root_state *st = calloc(t->nmboxes, sizeof *st);

    for (size_t i = 0; st && i < t->nmboxes; i++) {
        const struct src_listing *l = ls[i];

        st[i].st.uidvalidity = l->uidvalidity;
        st[i].st.exists = l->exists;
        st[i].st.highestmodseq = l->highestmodseq;
        st[i].certain = l->highestmodseq != 0;
        for (size_t j = 0; j < l->count && st[i].certain; j++)
            st[i].certain = !l->msgs[j].unreadable;
    }
    return st;
}

static void shelf_name(const struct store *s, char *out, size_t outlen)
{
    /* versions_shelf is "v-<hash>": the same hash, another shelf. */
    snprintf(out, outlen, "r-%s", s->versions_shelf + 2);
}

static void state_shelf_name(const struct store *s, char *out, size_t outlen)
{
    snprintf(out, outlen, "q-%s", s->versions_shelf + 2);
}

int store_root_key(struct store *s, struct tree *t, struct mbox_snap **snaps, unsigned char key[32],
                   struct root_state **states)
{
    const struct src_listing **ls;
    int rc;

    *states = NULL;
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
    if (rc == 0)
        *states = listing_states(t, ls);
    free(ls);
    return rc;
}

static int state_same(const struct src_state *a, const struct src_state *b)
{
    return a->uidvalidity == b->uidvalidity && a->exists == b->exists &&
           a->highestmodseq == b->highestmodseq;
}

/* Whether a (may be NULL) and b, n states each, are the same. */
static int states_same(const struct root_state *a, const struct root_state *b, size_t n)
{
    for (size_t i = 0; a && i < n; i++)
        if (!state_same(&a[i].st, &b[i].st) || a[i].certain != b[i].certain)
            return 0;
    return a != NULL;
}

void store_root_keep(struct store *s, struct tree *t, const unsigned char key[32],
                     uint32_t anchor_uv, struct root_state *states, int saved)
{
    char *anchor = strdup(t->mboxes[0]->raw);

    if (anchor == NULL || states == NULL || head_digest(s, t, s->root_head) != 0) {
        free(anchor);
        free(states);
        s->root_key_ok = 0;
        return;
    }
    if (!s->root_key_ok || memcmp(s->root_key, key, 32) != 0 || s->root_anchor == NULL ||
        strcmp(anchor, s->root_anchor) != 0 || s->root_anchor_uv != anchor_uv)
        s->root_saved = 0;
    if (!s->root_saved || !states_same(s->root_states, states, t->nmboxes))
        s->root_state_saved = 0;
    free(s->root_states);
    s->root_states = states;
    s->root_nstates = t->nmboxes;
    free(s->root_anchor);
    s->root_anchor = anchor;
    s->root_anchor_uv = anchor_uv;
    memcpy(s->root_key, key, 32);
    s->root_key_ok = 1;
    s->root_saved = s->root_saved || saved;
}

/*
 * Writes the only record of shelf, next to the first mailbox's cache. The
 * old record goes first: a crash in between leaves none, never a wrong one.
 */
static int save_record(struct store *s, const char *shelf, const struct iovec *v, size_t nv)
{
    struct cache_writer *w;
    int rc;

    cache_drop_shelf(s->cache, s->root_anchor, s->root_anchor_uv, shelf);
    if ((w = cache_writer_begin(s->cache, s->root_anchor, s->root_anchor_uv, shelf)) == NULL)
        return -EIO;
    rc = cache_writer_addv(w, 1, ROOT_SECTION, v, nv);
    /* commit frees w, and refuses what add could not write */
    if (cache_writer_commit(w) != 0 && rc == 0)
        rc = -EIO;
    return rc;
}

void store_root_save(struct store *s)
{
    char shelf[32], tail[ROOT_TAIL];
    struct iovec *v;
    const struct blob *b = s->root_merged;

    if (s->cache == NULL || !s->root_key_ok || s->root_saved || b == NULL)
        return;
    /* The record is the bytes then the tail: written from the segments, not copied. */
    if ((v = malloc((b->nseg + 1) * sizeof *v)) == NULL)
        return;
    memcpy(v, b->seg, b->nseg * sizeof *v);
    memcpy(tail, s->root_key, 32);
    memcpy(tail + 32, &s->root_mtime, 8);
    v[b->nseg].iov_base = tail;
    v[b->nseg].iov_len = ROOT_TAIL;
    shelf_name(s, shelf, sizeof shelf);
    s->root_saved = save_record(s, shelf, v, b->nseg + 1) == 0;
    if (!s->root_saved)
        log_warn("cannot save the root merged.ics to the cache");
    free(v);
}

/*
 * Saves the mailbox states of the saved root's key, when each of them
 * names its listing; the root record must be on disk already.
 */
void store_root_save_state(struct store *s)
{
    char shelf[32], *rec, *p;
    size_t n, len;
    uint64_t count;

    if (s->cache == NULL || !s->root_key_ok || !s->root_saved || s->root_state_saved ||
        s->root_states == NULL)
        return;
    n = s->root_nstates;
    for (size_t i = 0; i < n; i++)
        if (!s->root_states[i].certain)
            return;
    len = STATE_HEAD + n * STATE_ENTRY;
    if ((rec = malloc(len)) == NULL)
        return;
    count = n;
    memcpy(rec, STATE_MAGIC, 8);
    memcpy(rec + 8, s->root_key, 32);
    memcpy(rec + 40, s->root_head, 32);
    memcpy(rec + 72, &count, 8);
    p = rec + STATE_HEAD;
    for (size_t i = 0; i < n; i++, p += STATE_ENTRY) {
        const struct src_state *st = &s->root_states[i].st;

        memcpy(p, &st->uidvalidity, 4);
        memcpy(p + 4, &st->exists, 4);
        memcpy(p + 8, &st->highestmodseq, 8);
    }
    state_shelf_name(s, shelf, sizeof shelf);
    s->root_state_saved = save_record(s, shelf, &(struct iovec){rec, len}, 1) == 0;
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

/*
 * Serves rec (taken; len bytes, then the key and the mtime) as the root
 * merged.ics of t, whose key it was checked against: remembers it as built
 * and starts hydrating the mailboxes.
 */
static int serve_saved(struct store *s, struct tree *t, char *rec, size_t len,
                       const unsigned char key[32], struct root_state *states, struct blob **out,
                       int64_t *mtime)
{
    if (states == NULL) {
        free(rec);
        return -ENOMEM;
    }
    memcpy(mtime, rec + len + 32, sizeof *mtime);
    rec[len] = '\0';
    if ((*out = blob_take(rec, len)) == NULL) {
        free(states);
        return -ENOMEM;
    }
    /* What is on disk is what this build would make: remember it as built. */
    store_root_keep(s, t, key, states[0].st.uidvalidity, states, 1);
    if (!s->hydrating) {
        atomic_fetch_add(&t->refs, 1);
        s->hydrate_tree = t;
        s->hydrating = pthread_create(&s->hydrator, NULL, hydrate_all, s) == 0;
        if (!s->hydrating) {
            store_tree_unref(t);
            s->hydrate_tree = NULL;
        }
    }
    return 0;
}

/* The saved states of t's mailboxes (n of them) from a q- record, or NULL. */
static struct root_state *parse_states(const struct store *s, const struct tree *t, const char *rec,
                                       size_t len, unsigned char key[32])
{
    struct root_state *st;
    unsigned char head[32];
    uint64_t count;
    const char *p = rec + STATE_HEAD;

    if (len < STATE_HEAD || memcmp(rec, STATE_MAGIC, 8) != 0)
        return NULL;
    memcpy(&count, rec + 72, 8);
    if (count != t->nmboxes || len != STATE_HEAD + count * STATE_ENTRY ||
        head_digest(s, t, head) != 0 || memcmp(head, rec + 40, 32) != 0 ||
        (st = calloc(count, sizeof *st)) == NULL)
        return NULL;
    memcpy(key, rec + 8, 32);
    for (size_t i = 0; i < count; i++, p += STATE_ENTRY) {
        memcpy(&st[i].st.uidvalidity, p, 4);
        memcpy(&st[i].st.exists, p + 4, 4);
        memcpy(&st[i].st.highestmodseq, p + 8, 8);
        st[i].certain = 1;
    }
    return st;
}

/*
 * The quick check: the saved states against one EXAMINE per mailbox (the
 * first one's UIDVALIDITY finds the records), the saved bytes read
 * meanwhile. 0 (served), -ENOENT (nothing saved for this UIDVALIDITY),
 * -ENOMEM, or -EAGAIN: no states, or something changed; list instead.
 */
static int from_states(struct store *s, struct tree *t, struct blob **out, int64_t *mtime)
{
    struct root_load rl = {.s = s, .anchor = t->mboxes[0]->raw};
    struct root_state *st = NULL;
    struct src_state now;
    unsigned char key[32];
    char shelf[32], err[256], *srec = NULL;
    size_t slen = 0;
    uint32_t uid = 0;
    pthread_t loader;
    int loading, rc = -EAGAIN;

    if (source_mailbox_state(s->src, rl.anchor, &now, err, sizeof err) != 0 ||
        now.highestmodseq == 0)
        return -EAGAIN;
    rl.uidvalidity = now.uidvalidity;
    shelf_name(s, rl.shelf, sizeof rl.shelf);
    /* Every record of this key would be under this UIDVALIDITY (the key covers it). */
    if (!cache_has_shelf(s->cache, rl.anchor, rl.uidvalidity, rl.shelf))
        return -ENOENT;
    state_shelf_name(s, shelf, sizeof shelf);
    if (cache_take_single(s->cache, rl.anchor, rl.uidvalidity, shelf, &uid, &srec, &slen) != 0)
        return -EAGAIN;
    st = uid == 1 ? parse_states(s, t, srec, slen, key) : NULL;
    free(srec);
    if (st == NULL || !state_same(&st[0].st, &now)) {
        free(st);
        return -EAGAIN;
    }
    loading = pthread_create(&loader, NULL, root_load, &rl) == 0;
    for (size_t i = 1; i < t->nmboxes && rc == -EAGAIN; i++)
        if (source_mailbox_state(s->src, t->mboxes[i]->raw, &now, err, sizeof err) != 0 ||
            !state_same(&st[i].st, &now))
            rc = -ESTALE;
    if (loading)
        pthread_join(loader, NULL);
    else if (rc == -EAGAIN)
        root_load(&rl);
    if (rc == -EAGAIN && rl.rc == 0 && rl.uid == 1 && rl.len >= ROOT_TAIL &&
        memcmp(rl.rec + rl.len - ROOT_TAIL, key, 32) == 0) {
        rc = serve_saved(s, t, rl.rec, rl.len - ROOT_TAIL, key, st, out, mtime);
        if (rc == 0)
            s->root_state_saved = 1;
        return rc;
    }
    free(rl.rec);
    free(st);
    return rl.rc == -ENOMEM ? -ENOMEM : -EAGAIN;
}

int store_root_from_cache(struct store *s, struct tree *t, struct blob **out, int64_t *mtime)
{
    struct src_listing anchor = {0}, *ls = NULL;
    const struct src_listing **lp = NULL;
    struct root_load rl = {.s = s, .anchor = t->mboxes[0]->raw};
    unsigned char key[32];
    pthread_t loader;
    int loading, listed, rc;
    char *rec;
    size_t len;

    if (s->cache == NULL || t->nmboxes == 0)
        return -ENOENT;
    if ((rc = from_states(s, t, out, mtime)) != -EAGAIN)
        return rc;
    rc = -ENOENT;
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
    rc = serve_saved(s, t, rec, len, key, listing_states(t, lp), out, mtime);
    rec = NULL;
out:
    if (ls)
        for (size_t i = 0; i < t->nmboxes; i++)
            source_listing_free(&ls[i]);
    free(ls);
    free(lp);
    free(rec);
    return rc;
}
