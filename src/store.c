/*
 * store.c — the tree of mailbox directories and the calls FUSE makes.
 *
 * The tree comes from the source's LIST, is rebuilt when older than ttl,
 * and maps paths to mailboxes: names are decoded from modified UTF-7, split
 * at the server's delimiter and made safe (names.c). A path ends in a
 * directory, in one of our own files (merged.ics, .status, .refresh,
 * displayname) or in an event file of the directory's mailbox.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "names.h"
#include "opts.h"
#include "source.h"
#include "store_internal.h"

/* ---- time and identity ------------------------------------------------ */

/* Fresh: synced less than ttl seconds ago (ttl 0: never fresh). */
int store_is_fresh(const struct store *s, const struct timespec *at, int attempted)
{
    struct timespec now;
    double age;

    if (!attempted || s->o->ttl == 0)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    age = (double)(now.tv_sec - at->tv_sec) + (double)(now.tv_nsec - at->tv_nsec) / 1e9;
    return age < (double)s->o->ttl;
}

/*
 * After n failed attempts in a row, wait this long before asking the
 * server again (1, 2, 4 ... 64 s), so a dead server is not hammered on
 * every access and readers do not wait a timeout each time.
 */
double store_retry_after(unsigned failures)
{
    return failures == 0 ? 0 : (double)(1u << (failures > 7 ? 6 : failures - 1));
}

double store_seconds_since(const struct timespec *t)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Under s->lock: the last LIST failed and its retry is not due yet. */
static int tree_backing_off(const struct store *s)
{
    return s->tree_failures &&
           store_seconds_since(&s->tree_at) < store_retry_after(s->tree_failures);
}

/*
 * Under s->lock: can a reader be answered without a LIST? Then *t is the
 * current tree with a reference, or NULL while a failed LIST backs off
 * and there is no tree at all (the reader gets EIO at once).
 */
static int tree_answer(struct store *s, int force, struct tree **t)
{
    if (force)
        return 0;
    if (s->tree ? !tree_backing_off(s) && !store_is_fresh(s, &s->tree_at, s->tree_attempted)
                : !tree_backing_off(s))
        return 0;
    *t = s->tree;
    if (*t)
        atomic_fetch_add(&(*t)->refs, 1);
    return 1;
}

int store_source_down(struct store *s, char *why, size_t whylen)
{
    int down;

    pthread_mutex_lock(&s->lock);
    down = tree_backing_off(s);
    if (down)
        snprintf(why, whylen, "%s", s->tree_error);
    pthread_mutex_unlock(&s->lock);
    return down;
}

/* A stable inode number for a path (FNV-1a); the root is 1. */
uint64_t store_ino(const char *path)
{
    uint64_t h = 0xcbf29ce484222325ull;

    if (strcmp(path, "/") == 0)
        return 1;
    for (; *path; path++)
        h = (h ^ (unsigned char)*path) * 0x100000001b3ull;
    return h < 2 ? h + 2 : h;
}

/* ---- the tree ------------------------------------------------------- */

static void dirnode_free(struct dirnode *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->nkids; i++)
        dirnode_free(d->kids[i]);
    free(d->kids);
    free(d->name);
    free(d->path);
    free(d);
}

void store_tree_unref(struct tree *t)
{
    if (t && atomic_fetch_sub(&t->refs, 1) == 1) {
        dirnode_free(t->root);
        free(t->mboxes);
        free(t);
    }
}

static struct dirnode *dirnode_new(const char *name, const char *parent_path)
{
    struct dirnode *d = calloc(1, sizeof *d);

    if (d == NULL)
        return NULL;
    d->name = strdup(name);
    if (parent_path == NULL)
        d->path = strdup("/");
    else if (asprintf(&d->path, "%s%s%s", parent_path, strcmp(parent_path, "/") ? "/" : "", name) <
             0)
        d->path = NULL;
    if (d->name == NULL || d->path == NULL) {
        dirnode_free(d);
        return NULL;
    }
    return d;
}

static struct dirnode *dirnode_child(const struct dirnode *d, const char *name)
{
    for (size_t i = 0; i < d->nkids; i++)
        if (strcmp(d->kids[i]->name, name) == 0)
            return d->kids[i];
    return NULL;
}

/* The child called name, made when missing. */
static struct dirnode *dirnode_get_child(struct dirnode *d, const char *name)
{
    struct dirnode *kid = dirnode_child(d, name), **kids;

    if (kid)
        return kid;
    if ((kids = realloc(d->kids, (d->nkids + 1) * sizeof *kids)) == NULL)
        return NULL;
    d->kids = kids;
    if ((kid = dirnode_new(name, d->path)) == NULL)
        return NULL;
    d->kids[d->nkids++] = kid;
    return kid;
}

static int is_reserved_name(const char *name)
{
    return strcmp(name, NAME_MERGED) == 0 || strcmp(name, NAME_STATUS) == 0 ||
           strcmp(name, NAME_REFRESH) == 0 || strcmp(name, NAME_DISPLAYNAME) == 0;
}

/*
 * One directory name from one piece of a mailbox name: safe, and never one
 * of our own file names (those get their first byte escaped).
 */
static char *dir_component(const char *piece)
{
    char *name = name_safe_component(piece), *escaped;

    if (name == NULL || !is_reserved_name(name))
        return name;
    if (asprintf(&escaped, "%%%02X%s", (unsigned char)name[0], name + 1) < 0)
        escaped = NULL;
    free(name);
    return escaped;
}

/* The mailbox object for raw, from the registry or new (under s->lock). */
static struct mbox *registry_get(struct store *s, const char *raw, const char *display,
                                 const char *path)
{
    struct mbox **reg, *m;

    for (size_t i = 0; i < s->nregistry; i++)
        if (strcmp(s->registry[i]->raw, raw) == 0)
            return s->registry[i];
    if ((reg = realloc(s->registry, (s->nregistry + 1) * sizeof *reg)) == NULL)
        return NULL;
    s->registry = reg;
    if ((m = mbox_new(raw, display, path)) == NULL)
        return NULL;
    m->store = s;
    s->registry[s->nregistry++] = m;
    return m;
}

static int compare_dirnode(const void *a, const void *b)
{
    return strcmp((*(struct dirnode *const *)a)->name, (*(struct dirnode *const *)b)->name);
}

static void dirnode_sort(struct dirnode *d)
{
    if (d->nkids > 1)
        qsort(d->kids, d->nkids, sizeof *d->kids, compare_dirnode);
    for (size_t i = 0; i < d->nkids; i++)
        dirnode_sort(d->kids[i]);
}

/* Adds one mailbox to the tree; its directories are made as needed. */
static int tree_add(struct store *s, struct tree *t, const struct src_mailbox *mb)
{
    char *display = name_mailbox_decode(mb->name), *copy, *piece, *next;
    struct dirnode *d = t->root;
    int rc = 0;

    if (display == NULL && (display = strdup(mb->name)) == NULL)
        return -ENOMEM;
    if ((copy = strdup(display)) == NULL) {
        free(display);
        return -ENOMEM;
    }
    /*
     * A flat namespace (NIL delimiter) gives one directory per mailbox.
     * Empty pieces ("A..B", "A.") are kept (dir_component escapes them), so
     * two mailboxes never land on one directory.
     */
    for (piece = copy; piece && d; piece = next) {
        char *name;

        next = mb->delim ? strchr(piece, mb->delim) : NULL;
        if (next)
            *next++ = '\0';
        name = dir_component(piece);
        d = name ? dirnode_get_child(d, name) : NULL;
        free(name);
    }
    if (d == NULL)
        rc = -ENOMEM;
    else if (mb->selectable && d != t->root && d->mbox == NULL) {
        struct mbox **mboxes = realloc(t->mboxes, (t->nmboxes + 1) * sizeof *mboxes);

        pthread_mutex_lock(&s->lock);
        d->mbox = mboxes ? registry_get(s, mb->name, display, d->path) : NULL;
        pthread_mutex_unlock(&s->lock);
        if (mboxes)
            t->mboxes = mboxes;
        if (d->mbox == NULL)
            rc = -ENOMEM;
        else
            t->mboxes[t->nmboxes++] = d->mbox;
    }
    free(copy);
    free(display);
    return rc;
}

static int compare_mbox_path(const void *a, const void *b)
{
    return strcmp((*(struct mbox *const *)a)->path, (*(struct mbox *const *)b)->path);
}

static struct tree *tree_build(struct store *s, const struct src_mailbox *mb, size_t n)
{
    struct tree *t = calloc(1, sizeof *t);

    if (t == NULL || (t->root = dirnode_new("", NULL)) == NULL)
        goto fail;
    atomic_init(&t->refs, 1);
    for (size_t i = 0; i < n; i++)
        if (tree_add(s, t, &mb[i]) != 0)
            goto fail;
    dirnode_sort(t->root);
    if (t->nmboxes > 1)
        qsort(t->mboxes, t->nmboxes, sizeof *t->mboxes, compare_mbox_path);
    return t;
fail:
    if (t)
        store_tree_unref(t);
    return NULL;
}

/*
 * The current tree, from a new LIST when it is older than ttl (or force).
 * A failed LIST keeps the old tree (stale), and the next LIST waits for
 * the back-off; with no tree at all, *err = -EIO.
 */
struct tree *store_tree_get(struct store *s, int force, int *errp)
{
    struct src_mailbox *mb = NULL;
    struct tree *t = NULL;
    char err[256] = "";
    size_t n = 0;
    int rc;

    pthread_mutex_lock(&s->lock);
    if (tree_answer(s, force, &t)) {
        pthread_mutex_unlock(&s->lock);
        if (t == NULL)
            *errp = -EIO;
        return t;
    }
    pthread_mutex_unlock(&s->lock);

    pthread_mutex_lock(&s->tree_sync_lock);
    pthread_mutex_lock(&s->lock);
    if (tree_answer(s, force, &t)) {
        pthread_mutex_unlock(&s->lock);
        pthread_mutex_unlock(&s->tree_sync_lock);
        if (t == NULL)
            *errp = -EIO;
        return t;
    }
    pthread_mutex_unlock(&s->lock);
    rc = source_list_mailboxes(s->src, &mb, &n, err, sizeof err);
    if (rc == 0 && (t = tree_build(s, mb, n)) == NULL)
        rc = -ENOMEM;
    source_mailboxes_free(mb, n);
    pthread_mutex_lock(&s->lock);
    clock_gettime(CLOCK_MONOTONIC, &s->tree_at);
    s->tree_attempted = 1;
    if (rc == 0) {
        struct tree *old = s->tree;

        s->tree = t;
        s->tree_error[0] = '\0';
        s->tree_failures = 0;
        store_tree_unref(old);
    } else {
        s->tree_failures++;
        snprintf(s->tree_error, sizeof s->tree_error, "%s", err[0] ? err : strerror(-rc));
        log_warn("listing the mailboxes failed: %s", s->tree_error);
    }
    t = s->tree;
    if (t)
        atomic_fetch_add(&t->refs, 1);
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_unlock(&s->tree_sync_lock);
    if (t == NULL)
        *errp = -EIO;
    return t;
}

/* ---- path lookup ------------------------------------------------------ */

/*
 * Splits path into its directory (walked in t) and a last component that
 * is not a directory (*leaf, pointing into path; "" when path is the
 * directory itself). NULL when a directory on the way does not exist.
 */
static const struct dirnode *lookup(const struct tree *t, const char *path, const char **leaf)
{
    const struct dirnode *d = t->root;
    char name[1024];

    *leaf = "";
    while (*path == '/')
        path++;
    while (*path) {
        size_t len = strcspn(path, "/");
        const struct dirnode *kid;

        if (len >= sizeof name)
            return NULL;
        memcpy(name, path, len);
        name[len] = '\0';
        kid = dirnode_child(d, name);
        if (kid == NULL) {
            if (path[len] != '\0')
                return NULL;
            *leaf = path;
            return d;
        }
        d = kid;
        path += len;
        while (*path == '/')
            path++;
    }
    return d;
}

static int dir_attr(struct store *s, const struct dirnode *d, struct store_attr *a)
{
    a->kind = STORE_DIR;
    a->size = 0;
    a->ino = store_ino(d->path);
    a->mtime = s->mounted_at;
    if (d->mbox) {
        /* Only a mailbox someone has looked at is synced for its mtime. */
        pthread_mutex_lock(&d->mbox->lock);
        int seen = d->mbox->snap != NULL;
        pthread_mutex_unlock(&d->mbox->lock);
        if (seen) {
            int err = 0;
            struct mbox_snap *snap = mbox_get(s, d->mbox, 0, &err);

            if (snap) {
                a->mtime = snap->dir_mtime;
                mbox_snap_unref(snap);
            }
        }
    }
    return 0;
}

static void file_attr(struct store_attr *a, const char *path, const struct blob *b, int64_t mtime)
{
    a->kind = STORE_FILE;
    a->size = b->len;
    a->mtime = mtime;
    a->ino = store_ino(path);
}

/* What a name in directory d is; fills a and, when wanted, the bytes. */
static int leaf_resolve(struct store *s, struct tree *t, const struct dirnode *d, const char *leaf,
                        struct store_attr *a, struct blob **bytes)
{
    int vdir = s->o->vdir, is_root = d == t->root, rc = 0, err = 0;
    struct blob *b = NULL;
    int64_t mtime = 0;
    char path[4096];

    snprintf(path, sizeof path, "%s%s%s", d->path, is_root ? "" : "/", leaf);
    if (strcmp(leaf, NAME_REFRESH) == 0 || (is_root && strcmp(leaf, NAME_STATUS) == 0)) {
        a->kind = STORE_DYNAMIC;
        a->size = 0;
        a->mtime = s->mounted_at;
        a->ino = store_ino(path);
        return 0;
    }
    if (strcmp(leaf, NAME_MERGED) == 0 && is_root) {
        if ((rc = store_root_merged(s, t, 0, &b, &mtime)) != 0)
            return rc;
    } else if (strcmp(leaf, NAME_MERGED) == 0 && !vdir && d->mbox == NULL) {
        if ((b = store_empty_calendar()) == NULL)
            return -ENOMEM;
        mtime = 0; /* it holds no message: stable across remounts */
    } else if (strcmp(leaf, NAME_DISPLAYNAME) == 0 && vdir && d->mbox) {
        if ((b = blob_new(d->mbox->display, strlen(d->mbox->display))) == NULL)
            return -ENOMEM;
        mtime = 0; /* the name does not come from any message */
    } else if (d->mbox) {
        struct mbox_snap *snap = mbox_get(s, d->mbox, 0, &err);

        if (snap == NULL)
            return err;
        if (strcmp(leaf, NAME_MERGED) == 0 && !vdir) {
            if ((b = mbox_snap_merged(s, snap)) == NULL) {
                mbox_snap_unref(snap);
                return -ENOMEM;
            }
            mtime = snap->merged_mtime;
        } else {
            struct snap_file key = {.name = (char *)leaf}, *f = NULL;

            if (snap->nfiles)
                f = bsearch(&key, snap->files, snap->nfiles, sizeof key, store_compare_file);
            if (f) {
                b = blob_ref(f->bytes);
                mtime = f->mtime;
            }
        }
        mbox_snap_unref(snap);
    }
    if (b == NULL)
        return -ENOENT;
    file_attr(a, path, b, mtime);
    if (bytes)
        *bytes = b;
    else
        blob_unref(b);
    return 0;
}

int store_getattr(struct store *s, const char *path, struct store_attr *out)
{
    int err = 0, rc;
    struct tree *t = store_tree_get(s, 0, &err);
    const struct dirnode *d;
    const char *leaf;

    if (t == NULL)
        return err;
    d = lookup(t, path, &leaf);
    if (d == NULL)
        rc = -ENOENT;
    else if (*leaf == '\0')
        rc = dir_attr(s, d, out);
    else
        rc = leaf_resolve(s, t, d, leaf, out, NULL);
    store_tree_unref(t);
    return rc;
}

int store_readdir(struct store *s, const char *path, store_fill_fn fill, void *ctx)
{
    int err = 0, rc = 0;
    struct tree *t = store_tree_get(s, 0, &err);
    const struct dirnode *d;
    struct mbox_snap *snap = NULL;
    struct store_attr a;
    const char *leaf;

    if (t == NULL)
        return err;
    d = lookup(t, path, &leaf);
    if (d == NULL || *leaf) {
        rc = d ? -ENOTDIR : -ENOENT;
        goto out;
    }
    /* Listing a mailbox needs its messages: sync first, fail before filling. */
    if (d->mbox && (snap = mbox_get(s, d->mbox, 0, &err)) == NULL) {
        rc = err;
        goto out;
    }
    for (size_t i = 0; i < d->nkids && rc == 0; i++) {
        dir_attr(s, d->kids[i], &a);
        rc = fill(ctx, d->kids[i]->name, &a);
    }
    if (rc == 0 && (!s->o->vdir || d == t->root) &&
        leaf_resolve(s, t, d, NAME_MERGED, &a, NULL) == 0)
        rc = fill(ctx, NAME_MERGED, &a);
    if (rc == 0 && s->o->vdir && d->mbox && leaf_resolve(s, t, d, NAME_DISPLAYNAME, &a, NULL) == 0)
        rc = fill(ctx, NAME_DISPLAYNAME, &a);
    for (size_t i = 0; snap && i < snap->nfiles && rc == 0; i++) {
        char fpath[4096];

        snprintf(fpath, sizeof fpath, "%s/%s", d->path, snap->files[i].name);
        file_attr(&a, fpath, snap->files[i].bytes, snap->files[i].mtime);
        rc = fill(ctx, snap->files[i].name, &a);
    }
out:
    mbox_snap_unref(snap);
    store_tree_unref(t);
    return rc;
}

/* Re-syncs everything under d (the whole account at the root). */
static void refresh_scope(struct store *s, struct tree **t, const struct dirnode *d)
{
    int err = 0, failed = 0;

    if (d == (*t)->root) {
        struct tree *fresh = store_tree_get(s, 1, &err);

        if (fresh) {
            store_tree_unref(*t);
            *t = fresh;
            d = fresh->root;
        }
        pthread_mutex_lock(&s->lock);
        failed = s->tree_failures > 0;
        pthread_mutex_unlock(&s->lock);
    }
    /*
     * One try per refresh: once the server has failed one request, the
     * others would only wait out the same timeout; .status tells.
     */
    for (size_t i = 0; i < (*t)->nmboxes && !failed; i++) {
        struct mbox *m = (*t)->mboxes[i];
        size_t plen = strlen(d->path);

        if (d != (*t)->root && (strncmp(m->path, d->path, plen) != 0 ||
                                (m->path[plen] != '\0' && m->path[plen] != '/')))
            continue;
        mbox_snap_unref(mbox_get(s, m, 1, &err));
        pthread_mutex_lock(&m->lock);
        failed = m->failures > 0;
        pthread_mutex_unlock(&m->lock);
    }
}

int store_open(struct store *s, const char *path, struct blob **out)
{
    int err = 0, rc;
    struct tree *t = store_tree_get(s, 0, &err);
    const struct dirnode *d;
    struct store_attr a;
    const char *leaf;

    if (t == NULL)
        return err;
    d = lookup(t, path, &leaf);
    if (d == NULL)
        rc = -ENOENT;
    else if (*leaf == '\0')
        rc = -EISDIR;
    else if (strcmp(leaf, NAME_REFRESH) == 0) {
        char *dpath = strdup(d->path);

        refresh_scope(s, &t, d);
        /* The tree may be new: find the directory again. */
        d = dpath ? lookup(t, dpath, &leaf) : NULL;
        free(dpath);
        *out = d ? store_status_text(s, t, d) : NULL;
        rc = *out ? 0 : -ENOENT;
    } else if (strcmp(leaf, NAME_STATUS) == 0 && d == t->root) {
        *out = store_status_text(s, t, NULL);
        rc = *out ? 0 : -ENOMEM;
    } else
        rc = leaf_resolve(s, t, d, leaf, &a, out);
    store_tree_unref(t);
    return rc;
}

/* ---- life cycle ------------------------------------------------------- */

struct store *store_new(struct source *src, const struct opts *o, struct cache *cache)
{
    struct store *s = calloc(1, sizeof *s);
    struct timespec now;

    if (s == NULL)
        return NULL;
    s->src = src;
    s->o = o;
    s->cache = cache;
    store_versions_shelf(o, s->versions_shelf, sizeof s->versions_shelf);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->tree_sync_lock, NULL);
    pthread_mutex_init(&s->root_sync_lock, NULL);
    atomic_init(&s->next_generation, 0);
    clock_gettime(CLOCK_REALTIME, &now);
    s->mounted_at = now.tv_sec;
    return s;
}

void store_on_change(struct store *s, store_changed_fn fn, void *ctx)
{
    s->changed = fn;
    s->changed_ctx = ctx;
}

void store_free(struct store *s)
{
    if (s == NULL)
        return;
    store_root_join(s);
    store_root_save(s);
    store_root_save_state(s);
    free(s->root_anchor);
    free(s->root_states);
    store_tree_unref(s->tree);
    for (size_t i = 0; i < s->nregistry; i++)
        mbox_free(s->registry[i]);
    free(s->registry);
    blob_unref(s->root_merged);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->tree_sync_lock);
    pthread_mutex_destroy(&s->root_sync_lock);
    free(s);
}
