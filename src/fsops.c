/*
 * fsops.c — FUSE operations: paths in, store calls, errno values out.
 *
 * Open files hold a reference to the bytes they opened (fi->fh), so a read
 * never mixes two versions and never waits for the network. .status and
 * .refresh are made at open time and read with direct_io (their size is
 * unknown until then); every other file has an exact st_size.
 */
#include "fsops.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "blob.h"
#include "log.h"
#include "store.h"

/* A path whose cached pages and attributes the kernel must drop. */
struct inval {
    struct inval *next;
    char path[];
};

/*
 * An open file: the bytes it opened. Kept on a list because the kernel
 * drops RELEASE requests still queued at unmount; fsops_free() then frees
 * what is left.
 */
struct open_file {
    struct blob *bytes;
    struct open_file *prev, *next;
};

/* The size last told to the kernel for a path (by path hash). */
struct told_size {
    uint64_t path_hash;
    uint64_t size;
};

struct fsops {
    struct store *store;
    pthread_mutex_t told_lock;
    struct told_size *told; /* open addressing; path_hash 0 = empty */
    size_t ntold, told_cap;
    pthread_mutex_t open_lock;
    struct open_file *open_files;
    struct fuse *fuse;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct inval *head, *tail;
    int stopping;
};

static struct fsops *ctx_fsops(void)
{
    return fuse_get_context()->private_data;
}

/* ---- invalidation, on a thread of its own ------------------------------ */

static void on_store_change(void *arg, const char *path)
{
    struct fsops *f = arg;
    size_t len = strlen(path);
    struct inval *iv = malloc(sizeof *iv + len + 1);

    if (iv == NULL)
        return; /* the attribute timeout still bounds how stale the kernel is */
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

static void *invalidate_thread(void *arg)
{
    struct fsops *f = arg;

    pthread_mutex_lock(&f->lock);
    for (;;) {
        struct inval *iv;

        while (f->head == NULL && !f->stopping)
            pthread_cond_wait(&f->cond, &f->lock);
        if (f->head == NULL)
            break;
        iv = f->head;
        f->head = iv->next;
        if (f->head == NULL)
            f->tail = NULL;
        /* No lock held while the kernel may wait for an in-flight read. */
        pthread_mutex_unlock(&f->lock);
        fuse_invalidate_path(f->fuse, iv->path);
        free(iv);
        pthread_mutex_lock(&f->lock);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

/* ---- sizes the kernel holds --------------------------------------------- */

static uint64_t path_hash(const char *path)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (; *path; path++)
        h = (h ^ (unsigned char)*path) * 0x100000001b3ull;
    return h ? h : 1;
}

static struct told_size *told_slot(struct told_size *t, size_t cap, uint64_t h)
{
    size_t i = h & (cap - 1);

    while (t[i].path_hash && t[i].path_hash != h)
        i = (i + 1) & (cap - 1);
    return &t[i];
}

/*
 * Records size as what the kernel now believes of path; returns the size
 * it believed before (or `size` when it had none).
 */
static uint64_t told_swap(struct fsops *f, const char *path, uint64_t size)
{
    uint64_t h = path_hash(path), before = size;
    struct told_size *slot;

    pthread_mutex_lock(&f->told_lock);
    if (f->ntold * 2 >= f->told_cap) {
        size_t cap = f->told_cap ? f->told_cap * 2 : 1024;
        struct told_size *t = calloc(cap, sizeof *t);

        if (t == NULL) {
            pthread_mutex_unlock(&f->told_lock);
            return size;
        }
        for (size_t i = 0; i < f->told_cap; i++)
            if (f->told[i].path_hash)
                *told_slot(t, cap, f->told[i].path_hash) = f->told[i];
        free(f->told);
        f->told = t;
        f->told_cap = cap;
    }
    slot = told_slot(f->told, f->told_cap, h);
    if (slot->path_hash)
        before = slot->size;
    else
        f->ntold++;
    slot->path_hash = h;
    slot->size = size;
    pthread_mutex_unlock(&f->told_lock);
    return before;
}

/* ---- operations ------------------------------------------------------- */

static void fill_stat(const struct store_attr *a, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = a->ino;
    st->st_uid = getuid();
    st->st_gid = getgid();
    st->st_mtime = st->st_ctime = st->st_atime = (time_t)a->mtime;
    if (a->kind == STORE_DIR) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = (off_t)a->size;
        st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
    }
    /* Readers size their buffers by it (cat, cp): large reads, few requests. */
    st->st_blksize = 1 << 20;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    struct store_attr a;
    int rc;

    if ((rc = store_getattr(ctx_fsops()->store, path, &a)) != 0)
        return rc;
    /*
     * fstat() of an open file: the size of the bytes that file holds, even
     * when a sync has replaced them since (a web server sends st_size bytes).
     */
    if (fi && fi->fh && a.kind != STORE_DIR) {
        const struct open_file *of = (const struct open_file *)(uintptr_t)fi->fh;

        a.size = of->bytes->len;
    }
    if (a.kind == STORE_FILE)
        told_swap(ctx_fsops(), path, a.size);
    fill_stat(&a, st);
    return 0;
}

struct fill_ctx {
    void *buf;
    fuse_fill_dir_t fill;
};

static int fill_one(void *arg, const char *name, const struct store_attr *a)
{
    struct fill_ctx *c = arg;
    struct stat st;

    fill_stat(a, &st);
    return c->fill(c->buf, name, &st, 0, 0) ? -ENOMEM : 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    struct fill_ctx c = {buf, fill};
    int rc;

    (void)off;
    (void)fi;
    (void)flags;
    if (fill(buf, ".", NULL, 0, 0) || fill(buf, "..", NULL, 0, 0))
        return -ENOMEM;
    rc = store_readdir(ctx_fsops()->store, path, fill_one, &c);
    /* A full buffer is not an error: offset 0 mode returns what fits. */
    return rc == -ENOMEM ? 0 : rc;
}

static struct open_file *open_file_new(struct fsops *f, struct blob *b)
{
    struct open_file *of = calloc(1, sizeof *of);

    if (of == NULL)
        return NULL;
    of->bytes = b;
    pthread_mutex_lock(&f->open_lock);
    of->next = f->open_files;
    if (of->next)
        of->next->prev = of;
    f->open_files = of;
    pthread_mutex_unlock(&f->open_lock);
    return of;
}

static void open_file_free(struct fsops *f, struct open_file *of)
{
    pthread_mutex_lock(&f->open_lock);
    if (of->prev)
        of->prev->next = of->next;
    else
        f->open_files = of->next;
    if (of->next)
        of->next->prev = of->prev;
    pthread_mutex_unlock(&f->open_lock);
    blob_unref(of->bytes);
    free(of);
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    struct store_attr a;
    struct open_file *of;
    struct blob *b = NULL;
    int rc;

    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        return -EROFS;
    if ((rc = store_getattr(ctx_fsops()->store, path, &a)) != 0)
        return rc;
    if (a.kind == STORE_DIR)
        return -EISDIR;
    if ((rc = store_open(ctx_fsops()->store, path, &b)) != 0)
        return rc;
    if ((of = open_file_new(ctx_fsops(), b)) == NULL) {
        blob_unref(b);
        return -ENOMEM;
    }
    fi->fh = (uint64_t)(uintptr_t)of;
    /*
     * A sync may have changed the file between the kernel's last GETATTR and
     * this open: the kernel would then answer fstat() from its old size for
     * the rest of this jiffy. Drop its attributes now (attributes only: with
     * direct_io there are no cached pages to wait for).
     */
    if (a.kind == STORE_FILE && told_swap(ctx_fsops(), path, b->len) != b->len &&
        ctx_fsops()->fuse)
        fuse_invalidate_path(ctx_fsops()->fuse, path);
    /*
     * Every read comes to us, from the bytes this open holds. The kernel's
     * page cache is per inode and shared by all open files: a reader that
     * opened before a sync would fill it with old bytes that a reader
     * opening after it could then get, whole or mixed with new ones. The
     * bytes are in memory, so this costs a copy, not a fetch. (.status and
     * .refresh need it anyway: their size is unknown before they are made.)
     */
    fi->direct_io = 1;
    fi->keep_cache = 0;
    return 0;
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
                   struct fuse_file_info *fi)
{
    const struct blob *b = ((const struct open_file *)(uintptr_t)fi->fh)->bytes;
    size_t n;

    (void)path;
    if (off < 0 || (size_t)off >= b->len)
        return 0;
    n = b->len - (size_t)off;
    if (n > size)
        n = size;
    memcpy(buf, b->data + off, n);
    return (int)n;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    open_file_free(ctx_fsops(), (struct open_file *)(uintptr_t)fi->fh);
    fi->fh = 0;
    return 0;
}

static int op_statfs(const char *path, struct statvfs *sv)
{
    (void)path;
    memset(sv, 0, sizeof *sv);
    sv->f_bsize = 4096;
    sv->f_frsize = 4096;
    sv->f_namemax = 255;
    sv->f_flag = ST_RDONLY;
    return 0;
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    (void)datasync;
    (void)fi;
    return 0;
}

static int op_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    (void)fi;
    return 0;
}

/* Everything that would change the tree: this is a read-only filesystem. */
static int op_mkdir(const char *p, mode_t m)
{
    (void)p;
    (void)m;
    return -EROFS;
}

static int op_path(const char *p)
{
    (void)p;
    return -EROFS;
}

static int op_rename(const char *a, const char *b, unsigned int flags)
{
    (void)a;
    (void)b;
    (void)flags;
    return -EROFS;
}

static int op_link(const char *a, const char *b)
{
    (void)a;
    (void)b;
    return -EROFS;
}

static int op_chmod(const char *p, mode_t m, struct fuse_file_info *fi)
{
    (void)p;
    (void)m;
    (void)fi;
    return -EROFS;
}

static int op_chown(const char *p, uid_t u, gid_t g, struct fuse_file_info *fi)
{
    (void)p;
    (void)u;
    (void)g;
    (void)fi;
    return -EROFS;
}

static int op_truncate(const char *p, off_t o, struct fuse_file_info *fi)
{
    (void)p;
    (void)o;
    (void)fi;
    return -EROFS;
}

static int op_create(const char *p, mode_t m, struct fuse_file_info *fi)
{
    (void)p;
    (void)m;
    (void)fi;
    return -EROFS;
}

static int op_write(const char *p, const char *b, size_t s, off_t o, struct fuse_file_info *fi)
{
    (void)p;
    (void)b;
    (void)s;
    (void)o;
    (void)fi;
    return -EROFS;
}

static int op_utimens(const char *p, const struct timespec tv[2], struct fuse_file_info *fi)
{
    (void)p;
    (void)tv;
    (void)fi;
    return -EROFS;
}

static int op_mknod(const char *p, mode_t m, dev_t d)
{
    (void)p;
    (void)m;
    (void)d;
    return -EROFS;
}

static int op_setxattr(const char *p, const char *n, const char *v, size_t s, int f)
{
    (void)p;
    (void)n;
    (void)v;
    (void)s;
    (void)f;
    return -EROFS;
}

static int op_removexattr(const char *p, const char *n)
{
    (void)p;
    (void)n;
    return -EROFS;
}

/*
 * Runs after fuse_daemonize() forked: threads must start here, not
 * before (notes B8).
 */
static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    struct fsops *f = ctx_fsops();

    /*
     * With direct_io every read() is a request: let one request carry up to
     * 1 MiB (the kernel's max_pages follows max_write) so a warm cat of a
     * large merged.ics costs a few round trips, not hundreds.
     */
    if (conn->max_write < (1u << 20))
        conn->max_write = 1u << 20;
    cfg->use_ino = 1;
    /* Paths in every call: readdir needs one, and nothing here is ever unlinked. */
    cfg->nullpath_ok = 0;
    cfg->kernel_cache = 0;
    cfg->entry_timeout = 1;
    /* Sizes change with syncs: the kernel asks each time (fstat with the open file). */
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;
    f->fuse = fuse_get_context()->fuse;
    if (pthread_create(&f->thread, NULL, invalidate_thread, f) == 0)
        f->thread_started = 1;
    else
        log_warn("cannot start the invalidation thread; changes show after attr_timeout");
    store_on_change(f->store, on_store_change, f);
    return f;
}

static void op_destroy(void *data)
{
    struct fsops *f = data;

    store_on_change(f->store, NULL, NULL);
    pthread_mutex_lock(&f->lock);
    f->stopping = 1;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->lock);
    if (f->thread_started)
        pthread_join(f->thread, NULL);
    f->thread_started = 0;
}

static const struct fuse_operations fsops_ops = {
    .getattr = op_getattr,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .statfs = op_statfs,
    .fsync = op_fsync,
    .fsyncdir = op_fsync,
    .flush = op_flush,
    .mkdir = op_mkdir,
    .unlink = op_path,
    .rmdir = op_path,
    .symlink = op_link,
    .rename = op_rename,
    .link = op_link,
    .chmod = op_chmod,
    .chown = op_chown,
    .truncate = op_truncate,
    .create = op_create,
    .write = op_write,
    .utimens = op_utimens,
    .mknod = op_mknod,
    .setxattr = op_setxattr,
    .removexattr = op_removexattr,
    .init = op_init,
    .destroy = op_destroy,
};

const struct fuse_operations *fsops_operations(void)
{
    return &fsops_ops;
}

struct fsops *fsops_new(struct store *store)
{
    struct fsops *f = calloc(1, sizeof *f);

    if (f == NULL)
        return NULL;
    f->store = store;
    pthread_mutex_init(&f->lock, NULL);
    pthread_mutex_init(&f->open_lock, NULL);
    pthread_mutex_init(&f->told_lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    return f;
}

void fsops_free(struct fsops *f)
{
    if (f == NULL)
        return;
    while (f->open_files)
        open_file_free(f, f->open_files);
    pthread_mutex_destroy(&f->open_lock);
    pthread_mutex_destroy(&f->told_lock);
    free(f->told);
    while (f->head) {
        struct inval *next = f->head->next;

        free(f->head);
        f->head = next;
    }
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f);
}
