/*
 * cache_pack.c — fetched parts, in packs.
 *
 *   DIR/<sha256(mailbox)>/<uidvalidity>/pack-<time>-<pid>-<n>
 *
 * A pack has the header of every cache file (magic "ICFSPAK1", payload
 * length, SHA-256 of the payload) and a payload of records:
 *
 *   u32 uid, u16 section length, u64 data length, section, data
 *
 * (host byte order). A writer streams records into a temporary file as the
 * parts arrive, then fills in the header, fsyncs and renames: one fsync per
 * sync instead of one per part, and a pack is whole or absent. A pack that
 * fails its checksum is removed; its parts are fetched again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "cache_internal.h"
#include "log.h"
#include "source.h"

#define MAGIC_PACK "ICFSPAK1"
/* Packs a mailbox may gather before cache_compact() merges them. */
#define PACKS_BEFORE_COMPACT 8
#define RECORD_HEAD (4 + 2 + 8)
#define SECTION_MAX 63

struct cache_writer {
    char dir[4200];
    char tmp[4400];
    FILE *f;
    EVP_MD_CTX *sha;
    uint64_t len;
    unsigned records;
    int failed;
};

/* DIR/<mailbox>/<uidvalidity>[/<shelf>] */
static int pack_dir(const struct cache *c, const char *mailbox, uint32_t uidvalidity,
                    const char *shelf, char *out, size_t outlen)
{
    char mdir[4096];
    int n;

    if (shelf && (shelf[0] == '\0' ||
                  strspn(shelf, "abcdefghijklmnopqrstuvwxyz"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != strlen(shelf)))
        return -EINVAL;
    if (cache_mailbox_dir(c, mailbox, mdir, sizeof mdir) != 0)
        return -ENAMETOOLONG;
    n = shelf ? snprintf(out, outlen, "%s/%u/%s", mdir, uidvalidity, shelf)
              : snprintf(out, outlen, "%s/%u", mdir, uidvalidity);
    return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

struct cache_writer *cache_writer_begin(struct cache *c, const char *mailbox, uint32_t uidvalidity,
                                        const char *shelf)
{
    struct cache_writer *w = calloc(1, sizeof *w);

    if (w == NULL)
        return NULL;
    if (pack_dir(c, mailbox, uidvalidity, shelf, w->dir, sizeof w->dir) != 0 ||
        (w->sha = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(w->sha, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(w->sha);
        free(w);
        return NULL;
    }
    return w;
}

/* The temporary file, made at the first record (a sync may fetch nothing). */
static int writer_open(struct cache_writer *w)
{
    static const char zeros[CACHE_HEADER_LEN];
    int fd, rc;

    if ((rc = cache_make_dirs(w->dir)) != 0)
        return rc;
    snprintf(w->tmp, sizeof w->tmp, "%s/pack.tmp.%d.%u", w->dir, (int)getpid(),
             atomic_fetch_add(&cache_tmp_counter, 1));
    if ((fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
        return -errno;
    if ((w->f = fdopen(fd, "w")) == NULL) {
        rc = -errno;
        close(fd);
        unlink(w->tmp);
        return rc;
    }
    /* The header is written last, once length and checksum are known. */
    if (fwrite(zeros, 1, sizeof zeros, w->f) != sizeof zeros)
        return -EIO;
    return 0;
}

static int writer_put(struct cache_writer *w, const void *p, size_t n)
{
    if (fwrite(p, 1, n, w->f) != n || EVP_DigestUpdate(w->sha, p, n) != 1)
        return -EIO;
    w->len += n;
    return 0;
}

int cache_writer_add(struct cache_writer *w, uint32_t uid, const char *section, const char *data,
                     size_t len)
{
    struct iovec v = {(void *)data, len};

    return cache_writer_addv(w, uid, section, &v, 1);
}

int cache_writer_addv(struct cache_writer *w, uint32_t uid, const char *section,
                      const struct iovec *v, size_t nv)
{
    unsigned char head[RECORD_HEAD];
    uint16_t slen = (uint16_t)strlen(section);
    uint64_t dlen = 0;
    int rc = 0;

    for (size_t i = 0; i < nv; i++)
        dlen += v[i].iov_len;

    if (w->failed)
        return -EIO;
    if (slen == 0 || slen > SECTION_MAX || strspn(section, "0123456789.") != slen)
        return -EINVAL;
    if (w->f == NULL && (rc = writer_open(w)) != 0) {
        w->failed = 1;
        return rc;
    }
    memcpy(head, &uid, 4);
    memcpy(head + 4, &slen, 2);
    memcpy(head + 6, &dlen, 8);
    if ((rc = writer_put(w, head, sizeof head)) == 0)
        rc = writer_put(w, section, slen);
    for (size_t i = 0; rc == 0 && i < nv; i++)
        rc = writer_put(w, v[i].iov_base, v[i].iov_len);
    if (rc != 0) {
        w->failed = 1;
        return rc;
    }
    w->records++;
    return 0;
}

static void writer_free(struct cache_writer *w)
{
    if (w->f) {
        fclose(w->f);
        unlink(w->tmp);
    }
    EVP_MD_CTX_free(w->sha);
    free(w);
}

int cache_writer_commit(struct cache_writer *w)
{
    unsigned char header[CACHE_HEADER_LEN];
    unsigned int n = 32;
    char final[4400];
    int fd, rc = 0;

    if (w->f == NULL || w->failed) {
        rc = w->failed ? -EIO : 0;
        writer_free(w);
        return rc;
    }
    memcpy(header, MAGIC_PACK, 8);
    memcpy(header + 8, &w->len, 8);
    if (EVP_DigestFinal_ex(w->sha, header + 16, &n) != 1 || fflush(w->f) != 0)
        rc = -EIO;
    fd = fileno(w->f);
    if (rc == 0 && pwrite(fd, header, sizeof header, 0) != (ssize_t)sizeof header)
        rc = -EIO;
    /* fsync before rename: after a crash the name holds a whole pack or nothing. */
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    snprintf(final, sizeof final, "%s/pack-%lld-%d-%u", w->dir, (long long)time(NULL),
             (int)getpid(), atomic_fetch_add(&cache_tmp_counter, 1));
    if (rc == 0 && rename(w->tmp, final) != 0)
        rc = -errno;
    if (rc == 0) {
        fclose(w->f);
        w->f = NULL;
    }
    writer_free(w);
    return rc;
}

/* ---- reading ------------------------------------------------------------ */

/* Checks the header and the checksum of the whole payload, reading in chunks. */
static int pack_verify(FILE *f, uint64_t *len)
{
    unsigned char header[CACHE_HEADER_LEN], sum[32], buf[1 << 16];
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    uint64_t left;
    unsigned int n = 32;
    int rc = -1;

    if (sha == NULL || fread(header, 1, sizeof header, f) != sizeof header ||
        memcmp(header, MAGIC_PACK, 8) != 0 || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1)
        goto out;
    memcpy(len, header + 8, 8);
    if (*len > CACHE_ENTRY_MAX)
        goto out;
    for (left = *len; left > 0;) {
        size_t chunk = left < sizeof buf ? (size_t)left : sizeof buf;

        if (fread(buf, 1, chunk, f) != chunk || EVP_DigestUpdate(sha, buf, chunk) != 1)
            goto out;
        left -= chunk;
    }
    /* Nothing may follow the payload. */
    if (fgetc(f) != EOF || EVP_DigestFinal_ex(sha, sum, &n) != 1 ||
        memcmp(sum, header + 16, 32) != 0)
        goto out;
    rc = 0;
out:
    EVP_MD_CTX_free(sha);
    return rc;
}

/* Hands every record of a verified pack to fn; -EINVAL if they do not add up. */
static int pack_records(FILE *f, uint64_t len, cache_part_fn fn, void *ctx)
{
    unsigned char head[RECORD_HEAD];
    char section[SECTION_MAX + 1], *data = NULL;
    size_t cap = 0;
    int rc = 0;

    while (rc == 0 && len > 0) {
        uint32_t uid;
        uint16_t slen;
        uint64_t dlen;

        if (len < RECORD_HEAD || fread(head, 1, sizeof head, f) != sizeof head) {
            rc = -EINVAL;
            break;
        }
        memcpy(&uid, head, 4);
        memcpy(&slen, head + 4, 2);
        memcpy(&dlen, head + 6, 8);
        len -= RECORD_HEAD;
        if (slen == 0 || slen > SECTION_MAX || slen > len || dlen > len - slen) {
            rc = -EINVAL;
            break;
        }
        if (dlen + 1 > cap) {
            char *bigger = realloc(data, dlen + 1);

            if (bigger == NULL) {
                rc = -ENOMEM;
                break;
            }
            data = bigger;
            cap = dlen + 1;
        }
        if (fread(section, 1, slen, f) != slen || fread(data, 1, dlen, f) != dlen) {
            rc = -EINVAL;
            break;
        }
        section[slen] = '\0';
        data[dlen] = '\0';
        len -= slen + dlen;
        rc = fn(ctx, uid, section, data, dlen);
    }
    free(data);
    return rc;
}

/* Reads one pack: 0, the result of fn, or -EINVAL for a damaged pack. */
static int pack_read(const char *path, cache_part_fn fn, void *ctx)
{
    FILE *f = fopen(path, "re");
    uint64_t len;
    int rc;

    if (f == NULL)
        return 0; /* removed meanwhile */
    /* Packs are megabytes, read twice: large reads, not stdio's 4 KiB. */
    setvbuf(f, NULL, _IOFBF, 1u << 20);
    if (pack_verify(f, &len) != 0) {
        fclose(f);
        return -EINVAL;
    }
    fseek(f, CACHE_HEADER_LEN, SEEK_SET);
    rc = pack_records(f, len, fn, ctx);
    fclose(f);
    return rc;
}

/* A temporary file left by a process that is gone (killed mid-write). */
static int stale_tmp(const char *name)
{
    int pid;

    if (sscanf(name, "pack.tmp.%d.", &pid) != 1)
        return 0;
    return pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH;
}

/* Names of the packs in dir, sorted (oldest first); stale temporaries removed. */
static int list_packs(const char *dir, char ***names, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t cap = 0;

    *names = NULL;
    *n = 0;
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        char path[4400];

        if (strncmp(e->d_name, "pack.tmp.", 9) == 0 && stale_tmp(e->d_name)) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
            continue;
        }
        if (strncmp(e->d_name, "pack-", 5) != 0)
            continue;
        if (*n == cap) {
            char **bigger = realloc(*names, (cap = cap ? cap * 2 : 8) * sizeof *bigger);

            if (bigger == NULL)
                break;
            *names = bigger;
        }
        if (((*names)[*n] = strdup(e->d_name)) != NULL)
            (*n)++;
    }
    closedir(d);
    return 0;
}

static int compare_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int cache_each_part(struct cache *c, const char *mailbox, uint32_t uidvalidity, const char *shelf,
                    cache_part_fn fn, void *ctx)
{
    char dir[4200], **names;
    size_t n;
    int rc = 0;

    if (pack_dir(c, mailbox, uidvalidity, shelf, dir, sizeof dir) != 0)
        return 0;
    list_packs(dir, &names, &n);
    if (n > 1)
        qsort(names, n, sizeof *names, compare_name);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[4400];

        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rc = pack_read(path, fn, ctx);
        if (rc == -EINVAL) {
            log_warn("cache pack %s is damaged; its parts will be fetched again", path);
            unlink(path);
            rc = 0;
        }
    }
    free_names(names, n);
    return rc;
}

/* ---- compaction --------------------------------------------------------- */

struct compact_ctx {
    const struct src_listing *live;
    struct cache_writer *w;
};

static int copy_live(void *arg, uint32_t uid, const char *section, const char *data, size_t len)
{
    struct compact_ctx *cc = arg;

    if (source_listing_find(cc->live, uid) == NULL)
        return 0;
    return cache_writer_add(cc->w, uid, section, data, len);
}

void cache_compact(struct cache *c, const char *mailbox, uint32_t uidvalidity, const char *shelf,
                   const struct src_listing *live)
{
    char dir[4200], **names;
    struct compact_ctx cc = {.live = live};
    size_t n;

    if (pack_dir(c, mailbox, uidvalidity, shelf, dir, sizeof dir) != 0)
        return;
    list_packs(dir, &names, &n);
    if (n > PACKS_BEFORE_COMPACT &&
        (cc.w = cache_writer_begin(c, mailbox, uidvalidity, shelf)) != NULL) {
        /* The new pack is visible before the old ones go: a crash loses nothing. */
        int rc = cache_each_part(c, mailbox, uidvalidity, shelf, copy_live, &cc);

        if (rc != 0)
            writer_free(cc.w);
        else if (cache_writer_commit(cc.w) == 0) {
            for (size_t i = 0; i < n; i++) {
                char path[4400];

                snprintf(path, sizeof path, "%s/%s", dir, names[i]);
                unlink(path);
            }
        }
    }
    free_names(names, n);
}

void cache_drop_shelf(struct cache *c, const char *mailbox, uint32_t uidvalidity, const char *shelf)
{
    char dir[4200], **names;
    size_t n;

    if (shelf == NULL || pack_dir(c, mailbox, uidvalidity, shelf, dir, sizeof dir) != 0)
        return;
    list_packs(dir, &names, &n);
    for (size_t i = 0; i < n; i++) {
        char path[4400];

        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    free_names(names, n);
}

int cache_has_shelf(struct cache *c, const char *mailbox, uint32_t uidvalidity, const char *shelf)
{
    char dir[4200], **names;
    size_t count;

    if (shelf == NULL || pack_dir(c, mailbox, uidvalidity, shelf, dir, sizeof dir) != 0)
        return 0;
    list_packs(dir, &names, &count);
    free_names(names, count);
    return count > 0;
}

/*
 * The data is read in place (no copy after) a chunk at a time, each chunk
 * hashed while it is still in the CPU's cache: the payload is megabytes.
 */
int cache_take_single(struct cache *c, const char *mailbox, uint32_t uidvalidity, const char *shelf,
                      uint32_t *uid, char **data, size_t *len)
{
    char dir[4200], path[4400], **names, *buf = NULL;
    unsigned char header[CACHE_HEADER_LEN], head[RECORD_HEAD + SECTION_MAX], sum[32];
    unsigned int n = 32;
    size_t count;
    uint64_t plen, dlen;
    uint16_t slen;
    struct stat st;
    EVP_MD_CTX *x = NULL;
    int fd = -1;

    *data = NULL;
    if (shelf == NULL || pack_dir(c, mailbox, uidvalidity, shelf, dir, sizeof dir) != 0)
        return -ENOENT;
    list_packs(dir, &names, &count);
    if (count > 1)
        qsort(names, count, sizeof *names, compare_name);
    if (count)
        snprintf(path, sizeof path, "%s/%s", dir, names[count - 1]);
    free_names(names, count);
    if (count == 0 || (fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
        return -ENOENT;
    if (fstat(fd, &st) != 0 || st.st_size < CACHE_HEADER_LEN + RECORD_HEAD ||
        (uint64_t)st.st_size > CACHE_HEADER_LEN + CACHE_ENTRY_MAX ||
        cache_read_full(fd, header, sizeof header) != 0 ||
        cache_read_full(fd, head, RECORD_HEAD) != 0)
        goto damaged;
    memcpy(&plen, header + 8, 8);
    memcpy(uid, head, 4);
    memcpy(&slen, head + 4, 2);
    memcpy(&dlen, head + 6, 8);
    if (memcmp(header, MAGIC_PACK, 8) != 0 || plen != (uint64_t)st.st_size - CACHE_HEADER_LEN ||
        slen == 0 || slen > SECTION_MAX || plen != RECORD_HEAD + (uint64_t)slen + dlen ||
        cache_read_full(fd, head + RECORD_HEAD, slen) != 0)
        goto damaged; /* not one whole record */
    if ((buf = malloc(dlen + 1)) == NULL || (x = EVP_MD_CTX_new()) == NULL) {
        free(buf);
        close(fd);
        return -ENOMEM;
    }
    if (EVP_DigestInit_ex(x, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(x, head, RECORD_HEAD + slen) != 1)
        goto damaged;
    for (uint64_t at = 0; at < dlen;) {
        size_t chunk = dlen - at < (1u << 18) ? (size_t)(dlen - at) : (1u << 18);

        if (cache_read_full(fd, buf + at, chunk) != 0 || EVP_DigestUpdate(x, buf + at, chunk) != 1)
            goto damaged;
        at += chunk;
    }
    if (EVP_DigestFinal_ex(x, sum, &n) != 1 || memcmp(sum, header + 16, 32) != 0)
        goto damaged;
    EVP_MD_CTX_free(x);
    close(fd);
    buf[dlen] = '\0';
    *data = buf;
    *len = dlen;
    return 0;
damaged:
    EVP_MD_CTX_free(x);
    close(fd);
    free(buf);
    log_warn("cache pack %s is damaged or not what it should be; dropped", path);
    unlink(path);
    return -ENOENT;
}
