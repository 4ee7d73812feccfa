/*
 * fsops.c — FUSE low-level operations: node ids in, store calls, replies out.
 *
 * A file's node id names one version of its bytes (fsops_inode.c): the
 * kernel keeps attributes per node, so an open file whose bytes a sync has
 * replaced keeps answering fstat() with the size of the bytes it reads,
 * while the next lookup of the path gets a new node with the new bytes.
 * Open files hold a reference to the bytes they opened (fi->fh), so a read
 * never mixes two versions and never waits for the network. .status and
 * .refresh are made at open time and read with direct_io (their size is
 * unknown until then); every other file has an exact st_size.
 */
#include "fsops.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "blob.h"
#include "fsops_inode.h"
#include "fsops_readonly.h"
#include "log.h"
#include "store.h"

/* What readdir says for ".." when the parent's node is not known. */
#define UNKNOWN_INO 0xffffffffu

/* How long the kernel may trust a directory's name (files: 0, see lookup). */
#define DIR_ENTRY_TIMEOUT 1.0
/* Most segments a read replies with as they are (fuse_reply_iov adds its
 * header to them, and a writev takes IOV_MAX); more are copied. */
#define FSOPS_READ_IOV (IOV_MAX - 1)

/* A path whose kernel entry or attributes must go. */
struct inval {
    struct inval *next;
    char path[];
};

/* One entry of a directory listing, as readdir hands it out. */
struct listed {
    char *name;
    uint64_t ino;
    mode_t mode;
};

/*
 * An open file or directory. Kept on a list because the kernel drops
 * RELEASE requests still queued at unmount; fsops_free() then frees what is
 * left.
 */
struct handle {
    struct handle *prev, *next;
    struct fsino *node; /* a reference of ours */
    struct blob *bytes; /* files: the bytes this open reads */
    /* directories: the listing, taken at offset 0 so offsets stay valid */
    pthread_mutex_t lock;
    struct listed *ents;
    size_t nents, cap;
    int listed;
};

struct fsops {
    struct store *store;
    struct fsino_table *nodes;
    uid_t uid;
    gid_t gid;
    mode_t umask;
    struct fuse_session *se;
    pthread_mutex_t open_lock;
    struct handle *handles;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct inval *head, *tail;
    int stopping;
};

/* ---- options ------------------------------------------------------------ */

static const struct fuse_opt fsops_opts[] = {
    {"uid=%u", offsetof(struct fsops_config, uid), 0},
    {"uid=", offsetof(struct fsops_config, set_uid), 1},
    {"gid=%u", offsetof(struct fsops_config, gid), 0},
    {"gid=", offsetof(struct fsops_config, set_gid), 1},
    {"umask=%o", offsetof(struct fsops_config, umask), 0},
    {"umask=", offsetof(struct fsops_config, set_umask), 1},
    /* Accepted by libfuse's high-level library, which this program used to
     * run on; its cache settings always overrode them. */
    FUSE_OPT_KEY("kernel_cache", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("auto_cache", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("noauto_cache", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("no_rofd_flush", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("entry_timeout=", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("attr_timeout=", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("negative_timeout=", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("ac_attr_timeout=", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("noforget", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("remember=", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_END,
};

int fsops_parse_args(struct fuse_args *args, struct fsops_config *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (fuse_opt_parse(args, c, fsops_opts, NULL) != 0) {
        snprintf(err, errlen, "cannot parse the uid=, gid= or umask= option");
        return -EINVAL;
    }
    if (c->set_umask && c->umask > 0777) {
        snprintf(err, errlen, "umask=%o: not a file mode mask", c->umask);
        return -EINVAL;
    }
    return 0;
}

void fsops_print_help(void)
{
    printf("    -o uid=N               owner of every file (default: who mounted)\n"
           "    -o gid=N               group of every file\n"
           "    -o umask=M             clear these mode bits (octal; files are 0444,\n"
           "                           directories 0555)\n"
           "    -o default_permissions let the kernel check those modes\n");
}

/* ---- invalidation, on a thread of its own ------------------------------ */

static void on_store_change(void *arg, const char *path)
{
    struct fsops *f = arg;
    size_t len = strlen(path);
    struct inval *iv = malloc(sizeof *iv + len + 1);

    if (iv == NULL)
        return; /* files: lookups revalidate anyway; directories: attr_timeout 0 */
    memcpy(iv->path, path, len + 1);
    iv->next = NULL;
    pthread_mutex_lock(&f->lock);
    if (f->tail)
        f->tail->next = iv;
    else
        f->head = iv;
    f->tail = iv;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

/*
 * A directory's listing changed: drop its attributes (mtime). A file
 * changed or went: drop its name, so that the kernel forgets the node of the
 * old version once no one has it open (the next lookup brings the new one;
 * without this the old node would wait for the next lookup of that path).
 */
static void invalidate(struct fsops *f, const char *path)
{
    enum store_kind kind = STORE_FILE;
    uint64_t id = fsino_current(f->nodes, path, NULL, &kind), parent;
    const char *slash = strrchr(path, '/');
    char dir[4096];

    if (id && kind == STORE_DIR) {
        fuse_lowlevel_notify_inval_inode(f->se, id, 0, 0);
        return;
    }
    if (slash == NULL || slash[1] == '\0' || (size_t)(slash - path) >= sizeof dir)
        return;
    if (slash == path) {
        strcpy(dir, "/");
    } else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    kind = STORE_FILE;
    parent = fsino_current(f->nodes, dir, NULL, &kind);
    if (parent && kind == STORE_DIR)
        fuse_lowlevel_notify_inval_entry(f->se, parent, slash + 1, strlen(slash + 1));
}

static void *invalidate_thread(void *arg)
{
    struct fsops *f = arg;

    pthread_mutex_lock(&f->lock);
    for (;;) {
        struct inval *iv;

        while (f->head == NULL && !f->stopping)
            pthread_cond_wait(&f->cond, &f->lock);
        if (f->head == NULL || f->stopping)
            break;
        iv = f->head;
        f->head = iv->next;
        if (f->head == NULL)
            f->tail = NULL;
        /* No lock held while the kernel may wait for a request in flight. */
        pthread_mutex_unlock(&f->lock);
        invalidate(f, iv->path);
        free(iv);
        pthread_mutex_lock(&f->lock);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

/* ---- attributes --------------------------------------------------------- */

static void fill_stat(const struct fsops *f, enum store_kind kind, uint64_t size, int64_t mtime,
                      uint64_t ino, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_uid = f->uid;
    st->st_gid = f->gid;
    st->st_mtime = st->st_ctime = st->st_atime = (time_t)mtime;
    if (kind == STORE_DIR) {
        st->st_mode = S_IFDIR | (0555 & ~f->umask);
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | (0444 & ~f->umask);
        st->st_nlink = 1;
        st->st_size = (off_t)size;
        st->st_blocks = (blkcnt_t)((size + 511) / 512);
    }
    /* Readers size their buffers by it (cat, cp): large reads, few requests. */
    st->st_blksize = 1 << 20;
}

/* The attributes of node n: its version's for files, the store's for directories. */
static int node_stat(struct fsops *f, const struct fsino *n, struct stat *st)
{
    struct store_attr a;
    int rc;

    if (n->kind != STORE_DIR) {
        fill_stat(f, n->kind, n->size, n->mtime, n->ino, st);
        return 0;
    }
    if ((rc = store_getattr(f->store, n->path, &a)) != 0)
        return rc;
    if (a.kind != STORE_DIR)
        return -ENOENT; /* a file by that name now: this directory is gone */
    fill_stat(f, STORE_DIR, 0, a.mtime, a.ino, st);
    return 0;
}

static int child_path(const struct fsino *parent, const char *name, char *out, size_t outlen)
{
    int n =
        snprintf(out, outlen, "%s/%s", strcmp(parent->path, "/") == 0 ? "" : parent->path, name);

    return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

/*
 * What path is now, and for a file its bytes (a reference for the caller).
 * The attributes and the bytes come from two calls: a sync in between
 * could pair one version's mtime with another's bytes, so ask again then.
 */
static int resolve(struct fsops *f, const char *path, struct store_attr *a, struct blob **bytes)
{
    int rc;

    *bytes = NULL;
    for (int tries = 0; tries < 3; tries++) {
        blob_unref(*bytes);
        *bytes = NULL;
        if ((rc = store_getattr(f->store, path, a)) != 0 || a->kind != STORE_FILE)
            return rc;
        if ((rc = store_open(f->store, path, bytes)) != 0)
            return rc;
        if ((*bytes)->len == a->size)
            return 0;
    }
    a->size = (*bytes)->len; /* still changing: the bytes are what counts */
    return 0;
}

/* ---- handles ------------------------------------------------------------ */

static struct handle *handle_new(struct fsops *f, struct fsino *node, struct blob *bytes)
{
    struct handle *h = calloc(1, sizeof *h);

    if (h == NULL)
        return NULL;
    h->node = node;
    h->bytes = bytes;
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_lock(&f->open_lock);
    h->next = f->handles;
    if (h->next)
        h->next->prev = h;
    f->handles = h;
    pthread_mutex_unlock(&f->open_lock);
    return h;
}

static void listing_clear(struct handle *h)
{
    for (size_t i = 0; i < h->nents; i++)
        free(h->ents[i].name);
    free(h->ents);
    h->ents = NULL;
    h->nents = h->cap = 0;
    h->listed = 0;
}

/* Closes h: drops its bytes and its reference to the node. */
static void handle_free(struct fsops *f, struct handle *h)
{
    pthread_mutex_lock(&f->open_lock);
    if (h->prev)
        h->prev->next = h->next;
    else
        f->handles = h->next;
    if (h->next)
        h->next->prev = h->prev;
    pthread_mutex_unlock(&f->open_lock);
    listing_clear(h);
    pthread_mutex_destroy(&h->lock);
    blob_unref(h->bytes);
    fsino_put(f->nodes, h->node);
    free(h);
}

static struct handle *fi_handle(const struct fuse_file_info *fi)
{
    return (struct handle *)(uintptr_t)fi->fh;
}

/* ---- operations --------------------------------------------------------- */

static struct fsops *req_fsops(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* Replies to req with the node of n, or with an error. */
static void reply_node(fuse_req_t req, struct fsops *f, struct fsino *n)
{
    struct fuse_entry_param e;
    int rc;

    memset(&e, 0, sizeof e);
    if ((rc = node_stat(f, n, &e.attr)) != 0) {
        fsino_forget(f->nodes, n->nodeid, 1);
        fuse_reply_err(req, -rc);
        return;
    }
    e.ino = n->nodeid;
    /*
     * Files: 0, so that every path walk asks again (a lookup is what finds a
     * new version); the kernel then sees a new node id and drops the old
     * name. Sizes change with syncs: attributes are never kept either
     * (fstat() of an open file asks its own node).
     */
    e.entry_timeout = n->kind == STORE_DIR ? DIR_ENTRY_TIMEOUT : 0;
    e.attr_timeout = 0;
    if (fuse_reply_entry(req, &e) != 0)
        fsino_forget(f->nodes, n->nodeid, 1); /* interrupted: the kernel did not count it */
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fsops *f = req_fsops(req);
    struct fsino *p = fsino_get(f->nodes, parent), *n = NULL;
    struct store_attr a;
    struct blob *b = NULL;
    char path[4096];
    int rc;

    if (p == NULL)
        rc = -ESTALE;
    else if (p->kind != STORE_DIR)
        rc = -ENOTDIR;
    else if ((rc = child_path(p, name, path, sizeof path)) == 0 &&
             (rc = resolve(f, path, &a, &b)) == 0 &&
             (n = fsino_lookup(f->nodes, path, &a, b)) == NULL)
        rc = -ENOMEM;
    blob_unref(b);
    fsino_put(f->nodes, p);
    if (rc != 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    reply_node(req, f, n);
    fsino_put(f->nodes, n);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    fsino_forget(req_fsops(req)->nodes, ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        fsino_forget(req_fsops(req)->nodes, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fsops *f = req_fsops(req);
    struct fsino *n = fsino_get(f->nodes, ino);
    struct stat st;
    int rc;

    if (n == NULL) {
        fuse_reply_err(req, ESTALE);
        return;
    }
    rc = node_stat(f, n, &st);
    /* fstat() of an open file: the size of the bytes that open reads. */
    if (rc == 0 && fi && fi->fh && n->kind == STORE_FILE && fi_handle(fi)->bytes) {
        st.st_size = (off_t)fi_handle(fi)->bytes->len;
        st.st_blocks = (blkcnt_t)((st.st_size + 511) / 512);
    }
    fsino_put(f->nodes, n);
    if (rc != 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, 0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fsops *f = req_fsops(req);
    struct fsino *n;
    struct handle *h;
    struct blob *b = NULL;
    int rc = 0;

    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if ((n = fsino_get(f->nodes, ino)) == NULL) {
        fuse_reply_err(req, ESTALE);
        return;
    }
    if (n->kind == STORE_DIR)
        rc = -EISDIR;
    else if (n->kind == STORE_FILE)
        b = fsino_bytes(f->nodes, n); /* this node's version, whatever synced since */
    else
        rc = store_open(f->store, n->path, &b); /* .status, .refresh: made now */
    if (rc == 0 && (h = handle_new(f, n, b)) == NULL) {
        blob_unref(b);
        rc = -ENOMEM;
    }
    if (rc != 0) {
        fsino_put(f->nodes, n);
        fuse_reply_err(req, -rc);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    /*
     * A file's node is one version of it (fsops_inode.c): its bytes never
     * change, so the kernel may keep them in its page cache across opens,
     * and a second read costs no request at all. .status and .refresh are
     * made at each open with a size unknown before: every read of them
     * comes to us, from the bytes this open holds.
     */
    fi->direct_io = n->kind != STORE_FILE;
    fi->keep_cache = n->kind == STORE_FILE;
    if (fuse_reply_open(req, fi) != 0)
        handle_free(f, h); /* interrupted: no RELEASE will come */
}

/*
 * Replies straight from the bytes, under a reference of its own: once the
 * kernel has the reply the reader may close the file, and the RELEASE (on
 * another thread) must not free the bytes before the reply returns. A
 * blob is a list of segments (see blob.h): a range of up to IOV_MAX - 1
 * goes out as they are (one writev, no copy), a range of more (a 1 MiB
 * read of merged.ics can span more components) is copied into one buffer.
 */
static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct blob *b = blob_ref(fi_handle(fi)->bytes);
    struct iovec *iov = NULL;
    size_t n = 0, niov = 0;
    char *buf;

    (void)ino;
    if (off >= 0 && (size_t)off < b->len) {
        n = b->len - (size_t)off;
        if (n > size)
            n = size;
    }
    if (n == 0)
        fuse_reply_buf(req, NULL, 0);
    else if (blob_iov(b, (size_t)off, n, &iov, &niov) != 0)
        fuse_reply_err(req, ENOMEM);
    else if (niov <= FSOPS_READ_IOV)
        fuse_reply_iov(req, iov, (int)niov);
    else if ((buf = malloc(n)) == NULL)
        fuse_reply_err(req, ENOMEM);
    else {
        blob_copy(b, (size_t)off, buf, n);
        fuse_reply_buf(req, buf, n);
        free(buf);
    }
    free(iov);
    blob_unref(b);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    handle_free(req_fsops(req), fi_handle(fi));
    fuse_reply_err(req, 0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fsops *f = req_fsops(req);
    struct fsino *n = fsino_get(f->nodes, ino);
    struct handle *h;

    if (n == NULL || n->kind != STORE_DIR) {
        fsino_put(f->nodes, n);
        fuse_reply_err(req, n ? ENOTDIR : ESTALE);
        return;
    }
    if ((h = handle_new(f, n, NULL)) == NULL) {
        fsino_put(f->nodes, n);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    if (fuse_reply_open(req, fi) != 0)
        handle_free(f, h);
}

static int listing_add(struct handle *h, const char *name, uint64_t ino, mode_t mode)
{
    struct listed *e;

    if (h->nents == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        struct listed *ents = realloc(h->ents, cap * sizeof *ents);

        if (ents == NULL)
            return -ENOMEM;
        h->ents = ents;
        h->cap = cap;
    }
    e = &h->ents[h->nents];
    if ((e->name = strdup(name)) == NULL)
        return -ENOMEM;
    e->ino = ino;
    e->mode = mode;
    h->nents++;
    return 0;
}

static int listing_fill(void *arg, const char *name, const struct store_attr *a)
{
    return listing_add(arg, name, fsino_version_ino(a), a->kind == STORE_DIR ? S_IFDIR : S_IFREG);
}

/* Takes the listing of h's directory: ".", "..", then what the store lists. */
static int listing_take(struct fsops *f, struct handle *h)
{
    const char *path = h->node->path, *slash = strrchr(path, '/');
    uint64_t up = UNKNOWN_INO;
    char parent[4096];
    int rc;

    listing_clear(h);
    if (slash && (size_t)(slash - path) < sizeof parent && strcmp(path, "/") != 0) {
        memcpy(parent, path, (size_t)(slash - path));
        parent[slash - path] = '\0';
        fsino_current(f->nodes, slash == path ? "/" : parent, &up, NULL);
    } else {
        up = h->node->ino;
    }
    if ((rc = listing_add(h, ".", h->node->ino, S_IFDIR)) != 0 ||
        (rc = listing_add(h, "..", up, S_IFDIR)) != 0 ||
        (rc = store_readdir(f->store, path, listing_fill, h)) != 0) {
        listing_clear(h);
        return rc;
    }
    h->listed = 1;
    return 0;
}

/*
 * Entry i has offset i + 1. The listing is taken at offset 0 (opendir,
 * rewinddir) and kept, so that offsets handed out stay valid while syncs
 * change the directory.
 */
static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct fsops *f = req_fsops(req);
    struct handle *h = fi_handle(fi);
    char *buf = malloc(size ? size : 1);
    size_t used = 0;
    int rc = 0;

    (void)ino;
    if (buf == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    pthread_mutex_lock(&h->lock);
    if (off == 0 || !h->listed)
        rc = listing_take(f, h);
    for (size_t i = off > 0 ? (size_t)off : 0; rc == 0 && i < h->nents; i++) {
        struct stat st = {.st_ino = h->ents[i].ino, .st_mode = h->ents[i].mode};
        size_t len =
            fuse_add_direntry(req, buf + used, size - used, h->ents[i].name, &st, (off_t)(i + 1));

        if (len > size - used)
            break;
        used += len;
    }
    pthread_mutex_unlock(&h->lock);
    if (rc != 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_buf(req, buf, used);
    free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    handle_free(req_fsops(req), fi_handle(fi));
    fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct statvfs sv;

    (void)ino;
    memset(&sv, 0, sizeof sv);
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_namemax = 255;
    sv.f_flag = ST_RDONLY;
    fuse_reply_statfs(req, &sv);
}

/* flush, fsync, fsyncdir: nothing is ever written. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    fuse_reply_err(req, 0);
}

/*
 * Runs after fuse_daemonize() forked: threads must start here, not
 * before (notes B8).
 */
static void op_init(void *data, struct fuse_conn_info *conn)
{
    struct fsops *f = data;

    /*
     * With direct_io every read() is a request: let one request carry up to
     * 1 MiB (the kernel's max_pages follows max_write) so a warm cat of a
     * large merged.ics costs a few round trips, not hundreds.
     */
    if (conn->max_write < (1u << 20))
        conn->max_write = 1u << 20;
    if (pthread_create(&f->thread, NULL, invalidate_thread, f) == 0)
        f->thread_started = 1;
    else
        log_warn("cannot start the invalidation thread; old versions wait for a lookup");
    store_on_change(f->store, on_store_change, f);
}

static void op_destroy(void *data)
{
    struct fsops *f = data;

    store_on_change(f->store, NULL, NULL);
    fsops_stop(f);
    if (f->thread_started)
        pthread_join(f->thread, NULL);
    f->thread_started = 0;
}

static const struct fuse_lowlevel_ops fsops_ops = {
    .init = op_init,
    .destroy = op_destroy,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .statfs = op_statfs,
    .flush = op_flush,
    .fsync = op_fsync,
    .fsyncdir = op_fsync,
};

/* ---- life ---------------------------------------------------------------- */

struct fsops *fsops_new(struct store *store, const struct fsops_config *c)
{
    struct fsops *f = calloc(1, sizeof *f);

    if (f == NULL)
        return NULL;
    if ((f->nodes = fsino_table_new()) == NULL) {
        free(f);
        return NULL;
    }
    f->store = store;
    f->uid = c && c->set_uid ? (uid_t)c->uid : getuid();
    f->gid = c && c->set_gid ? (gid_t)c->gid : getgid();
    f->umask = c && c->set_umask ? (mode_t)c->umask : 0;
    pthread_mutex_init(&f->lock, NULL);
    pthread_mutex_init(&f->open_lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    return f;
}

struct fuse_session *fsops_session_new(struct fsops *f, struct fuse_args *args)
{
    struct fuse_lowlevel_ops ops = fsops_ops;

    fsops_readonly_ops(&ops);
    f->se = fuse_session_new(args, &ops, sizeof ops, f);
    return f->se;
}

void fsops_stop(struct fsops *f)
{
    pthread_mutex_lock(&f->lock);
    f->stopping = 1;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

void fsops_free(struct fsops *f)
{
    if (f == NULL)
        return;
    while (f->handles)
        handle_free(f, f->handles);
    fsino_table_free(f->nodes);
    pthread_mutex_destroy(&f->open_lock);
    while (f->head) {
        struct inval *next = f->head->next;

        free(f->head);
        f->head = next;
    }
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f);
}
