/*
 * cache.c — files under the cache directory:
 *
 *   DIR/<cache_sha256(mailbox)>/listing             the last listing of the mailbox
 *   DIR/<cache_sha256(mailbox)>/<uidvalidity>/<uid>-<section>   one fetched part
 *
 * Each file is: an 8-byte magic, the payload length (u64, host order), the
 * SHA-256 of the payload, the payload. The cache belongs to one machine, so
 * host byte order is fine; a file from elsewhere fails its checksum.
 */
#include "cache.h"
#include "cache_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "names.h"
#include "source.h"

#define MAGIC_LISTING "ICFSLST2"

atomic_uint cache_tmp_counter;

int cache_sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 32;

    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

/* mkdir -p with mode 0700 for every directory it makes. */
int cache_make_dirs(const char *path)
{
    char *copy = strdup(path);
    int rc = 0;

    if (copy == NULL)
        return -ENOMEM;
    for (char *p = copy + 1; rc == 0; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;

        *p = '\0';
        if (mkdir(copy, 0700) != 0 && errno != EEXIST)
            rc = -errno;
        *p = saved;
        if (saved == '\0')
            break;
    }
    free(copy);
    return rc;
}

char *cache_default_dir(const char *account)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char *safe = name_safe_component(account), *dir = NULL;
    int n;

    if (safe == NULL)
        return NULL;
    if (home == NULL || home[0] == '\0') {
        struct passwd *pw = getpwuid(getuid());

        home = pw ? pw->pw_dir : "/";
    }
    if (xdg && xdg[0] == '/')
        n = asprintf(&dir, "%s/imapcalfs/%s", xdg, safe);
    else
        n = asprintf(&dir, "%s/.cache/imapcalfs/%s", home, safe);
    free(safe);
    return n < 0 ? NULL : dir;
}

struct cache *cache_open(const char *dir, char *err, size_t errlen)
{
    struct cache *c;
    struct stat st;
    int rc;

    if (dir[0] != '/') {
        snprintf(err, errlen, "cache_dir %s: must be an absolute path", dir);
        return NULL;
    }
    if ((rc = cache_make_dirs(dir)) != 0) {
        snprintf(err, errlen, "cache_dir %s: %s", dir, strerror(-rc));
        return NULL;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "cache_dir %s: not a directory", dir);
        return NULL;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "cache_dir %s: owned by another user", dir);
        return NULL;
    }
    /*
     * Others could have planted files or links in a directory they may
     * write to: refuse it rather than write through them.
     */
    if (st.st_mode & 022) {
        snprintf(err, errlen, "cache_dir %s is writable by group or others; use a private one",
                 dir);
        return NULL;
    }
    /* Cached invitations are private mail: nobody else may read them. */
    if ((st.st_mode & 077) && chmod(dir, 0700) != 0) {
        snprintf(err, errlen, "cache_dir %s: cannot make it private: %s", dir, strerror(errno));
        return NULL;
    }
    if ((c = calloc(1, sizeof *c)) == NULL || (c->dir = strdup(dir)) == NULL) {
        free(c);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return c;
}

void cache_close(struct cache *c)
{
    if (c) {
        free(c->dir);
        free(c);
    }
}

/* DIR/<hex sha256 of mailbox> */
int cache_mailbox_dir(const struct cache *c, const char *mailbox, char *out, size_t outlen)
{
    unsigned char h[32];
    char hex[65];
    int n;

    if (cache_sha256(mailbox, strlen(mailbox), h) != 0)
        return -EIO;
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    n = snprintf(out, outlen, "%s/%s", c->dir, hex);
    return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

/* Writes magic + length + checksum + payload to path, atomically. */
static int write_entry(const char *path, const char *magic, const void *data, size_t len)
{
    unsigned char header[CACHE_HEADER_LEN];
    uint64_t len64 = len;
    char tmp[4400], *slash;
    int fd, rc = 0;

    memcpy(header, magic, 8);
    memcpy(header + 8, &len64, 8);
    if (cache_sha256(data, len, header + 16) != 0)
        return -EIO;
    if ((slash = strrchr(path, '/')) != NULL) {
        char dir[4096];

        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
        if ((rc = cache_make_dirs(dir)) != 0)
            return rc;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp.%d.%u", path, (int)getpid(),
             atomic_fetch_add(&cache_tmp_counter, 1));
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
        return -errno;
    for (size_t off = 0, total = CACHE_HEADER_LEN + len; off < total && rc == 0;) {
        const char *src = off < CACHE_HEADER_LEN ? (const char *)header + off
                                                 : (const char *)data + (off - CACHE_HEADER_LEN);
        size_t chunk = off < CACHE_HEADER_LEN ? CACHE_HEADER_LEN - off : total - off;
        ssize_t n = write(fd, src, chunk);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rc = n < 0 ? -errno : -EIO;
        else
            off += (size_t)n;
    }
    /* fsync before rename: after a crash the name points at whole bytes or nothing. */
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0)
        unlink(tmp);
    return rc;
}

int cache_read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t r = read(fd, (char *)buf + got, len - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Reads and checks an entry; a bad one is removed. 0, -ENOENT, -ENOMEM. */
static int read_entry(const char *path, const char *magic, char **data, size_t *len)
{
    unsigned char header[CACHE_HEADER_LEN], sum[32];
    uint64_t len64;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    *data = NULL;
    if (fd < 0)
        return -ENOENT;
    if (fstat(fd, &st) != 0 || st.st_size < CACHE_HEADER_LEN ||
        cache_read_full(fd, header, CACHE_HEADER_LEN) != 0)
        goto corrupt;
    memcpy(&len64, header + 8, 8);
    if (memcmp(header, magic, 8) != 0 || len64 > CACHE_ENTRY_MAX ||
        (uint64_t)st.st_size != CACHE_HEADER_LEN + len64)
        goto corrupt;
    if ((*data = malloc(len64 + 1)) == NULL) {
        close(fd);
        return -ENOMEM;
    }
    if (cache_read_full(fd, *data, len64) != 0 || cache_sha256(*data, len64, sum) != 0 ||
        memcmp(sum, header + 16, 32) != 0)
        goto corrupt;
    close(fd);
    (*data)[len64] = '\0';
    *len = len64;
    return 0;
corrupt:
    close(fd);
    free(*data);
    *data = NULL;
    log_warn("cache entry %s is damaged; fetching it again", path);
    unlink(path);
    return -ENOENT;
}

/* ---- listings ---------------------------------------------------------- */

/* Fixed-size records: the listing is rewritten whole after each change. */
struct rec_head {
    uint32_t uidvalidity, exists, count, pad;
    uint64_t highestmodseq;
};

struct rec_msg {
    uint32_t uid, nparts;
    int64_t internaldate;
    uint32_t unreadable, pad;
};

struct rec_part {
    char section[64];
    char charset[40];
    uint32_t encoding, size;
};

int cache_put_listing(struct cache *c, const char *mailbox, const struct src_listing *l)
{
    char path[4200], dir[4096];
    size_t len = sizeof(struct rec_head), off;
    char *buf;
    int rc;

    if ((rc = cache_mailbox_dir(c, mailbox, dir, sizeof dir)) != 0)
        return rc;
    snprintf(path, sizeof path, "%s/listing", dir);
    for (size_t i = 0; i < l->count; i++)
        len += sizeof(struct rec_msg) + l->msgs[i].parts.count * sizeof(struct rec_part);
    if ((buf = calloc(1, len)) == NULL)
        return -ENOMEM;
    *(struct rec_head *)buf =
        (struct rec_head){l->uidvalidity, l->exists, (uint32_t)l->count, 0, l->highestmodseq};
    off = sizeof(struct rec_head);
    for (size_t i = 0; i < l->count; i++) {
        const struct src_message *m = &l->msgs[i];
        struct rec_msg rm = {m->uid, (uint32_t)m->parts.count, m->internaldate,
                             (uint32_t)m->unreadable, 0};

        memcpy(buf + off, &rm, sizeof rm);
        off += sizeof rm;
        for (size_t p = 0; p < m->parts.count; p++) {
            struct rec_part rp = {.encoding = (uint32_t)m->parts.parts[p].encoding,
                                  .size = m->parts.parts[p].size};

            memcpy(rp.section, m->parts.parts[p].section, sizeof rp.section);
            memcpy(rp.charset, m->parts.parts[p].charset, sizeof rp.charset);
            memcpy(buf + off, &rp, sizeof rp);
            off += sizeof rp;
        }
    }
    rc = write_entry(path, MAGIC_LISTING, buf, len);
    free(buf);
    return rc;
}

/* Parses a listing written by cache_put_listing; -ENOENT when it does not add up. */
static int decode_listing(const char *buf, size_t len, struct src_listing *out)
{
    struct rec_head h;
    size_t off = sizeof h;

    if (len < sizeof h)
        return -ENOENT;
    memcpy(&h, buf, sizeof h);
    if (h.count > len / sizeof(struct rec_msg))
        return -ENOENT;
    if ((out->msgs = calloc(h.count ? h.count : 1, sizeof *out->msgs)) == NULL)
        return -ENOMEM;
    out->uidvalidity = h.uidvalidity;
    out->exists = h.exists;
    out->highestmodseq = h.highestmodseq;
    for (uint32_t i = 0; i < h.count; i++) {
        struct src_message *m = &out->msgs[i];
        struct rec_msg rm;

        if (len - off < sizeof rm)
            return -ENOENT;
        memcpy(&rm, buf + off, sizeof rm);
        off += sizeof rm;
        if (rm.nparts > (len - off) / sizeof(struct rec_part) || rm.nparts > MIME_MAX_PARTS)
            return -ENOENT;
        m->uid = rm.uid;
        m->internaldate = rm.internaldate;
        m->unreadable = rm.unreadable != 0;
        out->count++;
        if (rm.nparts && (m->parts.parts = calloc(rm.nparts, sizeof *m->parts.parts)) == NULL)
            return -ENOMEM;
        for (uint32_t p = 0; p < rm.nparts; p++) {
            struct rec_part rp;

            memcpy(&rp, buf + off, sizeof rp);
            off += sizeof rp;
            rp.section[sizeof rp.section - 1] = '\0';
            rp.charset[sizeof rp.charset - 1] = '\0';
            memcpy(m->parts.parts[p].section, rp.section, sizeof rp.section);
            memcpy(m->parts.parts[p].charset, rp.charset, sizeof rp.charset);
            m->parts.parts[p].encoding = rp.encoding <= MIME_ENC_QP ? rp.encoding : MIME_ENC_7BIT;
            m->parts.parts[p].size = rp.size;
            m->parts.count++;
        }
    }
    return off == len ? 0 : -ENOENT;
}

int cache_get_listing(struct cache *c, const char *mailbox, struct src_listing *out)
{
    char path[4200], dir[4096], *buf;
    size_t len;
    int rc;

    memset(out, 0, sizeof *out);
    if (cache_mailbox_dir(c, mailbox, dir, sizeof dir) != 0)
        return -ENOENT;
    snprintf(path, sizeof path, "%s/listing", dir);
    if ((rc = read_entry(path, MAGIC_LISTING, &buf, &len)) != 0)
        return rc;
    rc = decode_listing(buf, len, out);
    free(buf);
    if (rc != 0)
        source_listing_free(out);
    return rc;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        char child[4096 + 512];

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        if (e->d_type == DT_DIR)
            remove_tree(child);
        else
            unlink(child);
    }
    closedir(d);
    rmdir(path);
}

void cache_drop_other_uidvalidity(struct cache *c, const char *mailbox, uint32_t uidvalidity)
{
    char dir[4096], keep[16];
    DIR *d;
    struct dirent *e;

    if (cache_mailbox_dir(c, mailbox, dir, sizeof dir) != 0 || (d = opendir(dir)) == NULL)
        return;
    snprintf(keep, sizeof keep, "%u", uidvalidity);
    while ((e = readdir(d)) != NULL) {
        char child[4096 + 512];

        if (e->d_type != DT_DIR || e->d_name[0] == '.' || strcmp(e->d_name, keep) == 0)
            continue;
        snprintf(child, sizeof child, "%s/%s", dir, e->d_name);
        log_info("dropping cached parts of %s under old UIDVALIDITY %s", mailbox, e->d_name);
        remove_tree(child);
    }
    closedir(d);
}
