/*
 * fsops_inode.c — node ids for versions of paths.
 *
 * Two chained hash tables under one lock: every node by node id, and the
 * current node of each path by path. A node replaced by a newer version
 * leaves the path index but stays reachable by id until the kernel forgets
 * it and the files opened on it are closed. Node ids count up from 2 and
 * are never reused, so a stale id finds nothing instead of another file.
 */
#include "fsops_inode.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct fsino_table {
    pthread_mutex_t lock;
    struct fsino **by_id, **by_path; /* cap buckets each */
    size_t cap, count;
    uint64_t next_nodeid;
};

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static uint64_t path_hash(const char *path)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (; *path; path++)
        h = (h ^ (unsigned char)*path) * 0x100000001b3ull;
    return h;
}

uint64_t fsino_version_ino(const struct store_attr *a)
{
    uint64_t h;

    if (a->kind != STORE_FILE)
        return a->ino;
    h = mix(mix(a->ino, a->size), (uint64_t)a->mtime);
    return h < 2 ? h + 2 : h; /* 1 is the root's */
}

static struct fsino **id_slot(struct fsino_table *t, uint64_t nodeid)
{
    return &t->by_id[mix(0, nodeid) & (t->cap - 1)];
}

static struct fsino **path_slot(struct fsino_table *t, const char *path)
{
    return &t->by_path[path_hash(path) & (t->cap - 1)];
}

static struct fsino *find_id(struct fsino_table *t, uint64_t nodeid)
{
    struct fsino *n = *id_slot(t, nodeid);

    while (n && n->nodeid != nodeid)
        n = n->id_next;
    return n;
}

static struct fsino *find_path(struct fsino_table *t, const char *path)
{
    struct fsino *n = *path_slot(t, path);

    while (n && strcmp(n->path, path) != 0)
        n = n->path_next;
    return n;
}

static void unlink_path(struct fsino_table *t, struct fsino *n)
{
    struct fsino **p = path_slot(t, n->path);

    while (*p != n)
        p = &(*p)->path_next;
    *p = n->path_next;
    n->path_next = NULL;
    n->current = 0;
}

static void link_path(struct fsino_table *t, struct fsino *n)
{
    struct fsino **p = path_slot(t, n->path);

    n->path_next = *p;
    *p = n;
    n->current = 1;
}

static void node_free(struct fsino *n)
{
    blob_unref(n->bytes);
    free(n->path);
    free(n);
}

/* Frees n once nothing holds it (the root never goes). Lock held. */
static void maybe_free(struct fsino_table *t, struct fsino *n)
{
    struct fsino **p;

    if (n->nlookup || n->refs || n->nodeid == FSINO_ROOT)
        return;
    if (n->current)
        unlink_path(t, n);
    for (p = id_slot(t, n->nodeid); *p != n; p = &(*p)->id_next)
        ;
    *p = n->id_next;
    t->count--;
    node_free(n);
}

/* Doubles the buckets when the table is full; keeps the old ones on ENOMEM. */
static void grow(struct fsino_table *t)
{
    size_t cap = t->cap * 2;
    struct fsino **by_id = calloc(cap, sizeof *by_id), **by_path = calloc(cap, sizeof *by_path);
    struct fsino **old_id = t->by_id, **old_path = t->by_path;
    size_t old_cap = t->cap;

    if (by_id == NULL || by_path == NULL) {
        free(by_id);
        free(by_path);
        return;
    }
    t->by_id = by_id;
    t->by_path = by_path;
    t->cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        struct fsino *n = old_id[i], *next;

        for (; n; n = next) {
            struct fsino **slot = id_slot(t, n->nodeid);

            next = n->id_next;
            n->id_next = *slot;
            *slot = n;
            if (n->current)
                link_path(t, n);
        }
    }
    free(old_id);
    free(old_path);
}

static struct fsino *node_new(const char *path, const struct store_attr *a, struct blob *bytes)
{
    struct fsino *n = calloc(1, sizeof *n);

    if (n == NULL || (n->path = strdup(path)) == NULL) {
        free(n);
        return NULL;
    }
    n->kind = a->kind;
    n->size = a->kind == STORE_FILE ? bytes->len : 0;
    n->mtime = a->mtime;
    n->ino = fsino_version_ino(a);
    if (a->kind == STORE_FILE)
        n->bytes = blob_ref(bytes);
    return n;
}

/* Lock held. */
static void insert(struct fsino_table *t, struct fsino *n)
{
    struct fsino **slot;

    if (t->count >= t->cap)
        grow(t);
    slot = id_slot(t, n->nodeid);
    n->id_next = *slot;
    *slot = n;
    link_path(t, n);
    t->count++;
}

struct fsino_table *fsino_table_new(void)
{
    struct fsino_table *t = calloc(1, sizeof *t);
    struct store_attr root = {.kind = STORE_DIR, .ino = 1};
    struct fsino *n;

    if (t == NULL)
        return NULL;
    t->cap = 64;
    t->by_id = calloc(t->cap, sizeof *t->by_id);
    t->by_path = calloc(t->cap, sizeof *t->by_path);
    if (t->by_id == NULL || t->by_path == NULL || (n = node_new("/", &root, NULL)) == NULL) {
        free(t->by_id);
        free(t->by_path);
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    n->nodeid = FSINO_ROOT;
    n->nlookup = 1;
    insert(t, n);
    t->next_nodeid = FSINO_ROOT + 1;
    return t;
}

void fsino_table_free(struct fsino_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->cap; i++) {
        struct fsino *n = t->by_id[i], *next;

        for (; n; n = next) {
            next = n->id_next;
            node_free(n);
        }
    }
    free(t->by_id);
    free(t->by_path);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

struct fsino *fsino_get(struct fsino_table *t, uint64_t nodeid)
{
    struct fsino *n;

    pthread_mutex_lock(&t->lock);
    if ((n = find_id(t, nodeid)) != NULL)
        n->refs++;
    pthread_mutex_unlock(&t->lock);
    return n;
}

void fsino_put(struct fsino_table *t, struct fsino *n)
{
    if (n == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    n->refs--;
    maybe_free(t, n);
    pthread_mutex_unlock(&t->lock);
}

/*
 * Whether n (path's current node) is the version a and bytes describe;
 * what cannot be told without comparing the bytes is left to the caller
 * (returns -1 then). Lock held.
 */
static int same_version(const struct fsino *n, const struct store_attr *a, const struct blob *bytes)
{
    if (n->kind != a->kind)
        return 0;
    if (a->kind == STORE_DIR)
        return 1;
    if (n->mtime != a->mtime)
        return 0;
    if (a->kind == STORE_DYNAMIC)
        return 1;
    if (n->size != bytes->len)
        return 0;
    return n->bytes == bytes ? 1 : -1;
}

struct fsino *fsino_lookup(struct fsino_table *t, const char *path, const struct store_attr *a,
                           struct blob *bytes)
{
    struct fsino *cur, *n;
    struct blob *seen = NULL;
    int same, equal = 0;

    pthread_mutex_lock(&t->lock);
    cur = find_path(t, path);
    same = cur ? same_version(cur, a, bytes) : 0;
    if (same < 0) {
        /* Same length, other buffer (a re-render): compare without the lock. */
        seen = blob_ref(cur->bytes);
        pthread_mutex_unlock(&t->lock);
        equal = blob_equal(seen, bytes);
        pthread_mutex_lock(&t->lock);
        cur = find_path(t, path);
        same = cur ? same_version(cur, a, bytes) : 0;
        if (same < 0 && cur->bytes == seen)
            same = equal;
        if (same < 0)
            same = 0; /* changed again meanwhile: a new node is always correct */
        if (same && cur->bytes != bytes) {
            /* Keep the store's buffer, so the old one can go. */
            blob_unref(cur->bytes);
            cur->bytes = blob_ref(bytes);
        }
    }
    if (same) {
        cur->nlookup++;
        cur->refs++;
        pthread_mutex_unlock(&t->lock);
        blob_unref(seen);
        return cur;
    }
    n = node_new(path, a, bytes);
    if (n) {
        if (cur)
            unlink_path(t, cur); /* it lives on for those who hold it */
        n->nodeid = t->next_nodeid++;
        n->nlookup = 1;
        n->refs = 1;
        insert(t, n);
    }
    pthread_mutex_unlock(&t->lock);
    blob_unref(seen);
    return n;
}

void fsino_forget(struct fsino_table *t, uint64_t nodeid, uint64_t nlookup)
{
    struct fsino *n;

    pthread_mutex_lock(&t->lock);
    if ((n = find_id(t, nodeid)) != NULL) {
        n->nlookup = nlookup < n->nlookup ? n->nlookup - nlookup : 0;
        maybe_free(t, n);
    }
    pthread_mutex_unlock(&t->lock);
}

struct blob *fsino_bytes(struct fsino_table *t, struct fsino *n)
{
    struct blob *b;

    pthread_mutex_lock(&t->lock);
    b = blob_ref(n->bytes);
    pthread_mutex_unlock(&t->lock);
    return b;
}

uint64_t fsino_current(struct fsino_table *t, const char *path, uint64_t *ino,
                       enum store_kind *kind)
{
    struct fsino *n;
    uint64_t id = 0;

    pthread_mutex_lock(&t->lock);
    if ((n = find_path(t, path)) != NULL) {
        id = n->nodeid;
        if (ino)
            *ino = n->ino;
        if (kind)
            *kind = n->kind;
    }
    pthread_mutex_unlock(&t->lock);
    return id;
}

size_t fsino_count(struct fsino_table *t)
{
    size_t count;

    pthread_mutex_lock(&t->lock);
    count = t->count;
    pthread_mutex_unlock(&t->lock);
    return count;
}
