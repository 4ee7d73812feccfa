/*
 * maildir.c — the Maildir++ driver of source.h: a local tree such as mbsync,
 * offlineimap or Dovecot leave behind, read with the same semantics as
 * IMAP. The root's cur/ and new/ are INBOX; a folder ".A.B" is mailbox
 * "A.B" with delimiter '.' (names stay in modified UTF-7, as on IMAP).
 *
 * UIDs: from Dovecot's dovecot-uidlist, or from mbsync's ",U=N" file names
 * with its .uidvalidity file; otherwise the messages are numbered in name
 * order and UIDVALIDITY is a hash of all names, so any change makes the
 * store read the folder anew instead of trusting shifted numbers.
 * INTERNALDATE is the file's mtime (what Dovecot uses). Nothing is written.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "opts.h"
#include "source.h"

/* Largest message read whole (a Maildir file is trusted less than that). */
#define MAILDIR_MAX_MESSAGE (256u << 20)

struct md_src {
    char *root;
    char *patterns;
};

struct md_file {
    uint32_t uid;
    char *path;
    char *base; /* name without the ":2,FLAGS" info */
    int64_t mtime;
};

/* dir + "/" + name into path; -1 when it does not fit. */
static int join(char *path, size_t size, const char *dir, const char *name)
{
    int n = snprintf(path, size, "%s/%s", dir, name);

    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static struct md_src *md_of(struct source *s)
{
    return s->impl;
}

/* Directory of mailbox name: the root for INBOX, else root/.name */
static char *folder_dir(const struct md_src *md, const char *name)
{
    char *dir;

    if (strcmp(name, "INBOX") == 0)
        return strdup(md->root);
    if (name[0] == '.' || strstr(name, "/") || strstr(name, ".."))
        return NULL; /* not a name this driver ever listed */
    return asprintf(&dir, "%s/.%s", md->root, name) < 0 ? NULL : dir;
}

static int is_maildir(const char *dir)
{
    char path[4096];
    struct stat st;

    if (join(path, sizeof path, dir, "cur") != 0)
        return 0;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* IMAP LIST wildcards: '*' matches anything, '%' anything but the delimiter. */
static int pattern_match(const char *p, const char *s)
{
    if (*p == '\0')
        return *s == '\0';
    if (*p == '*' || *p == '%') {
        for (const char *t = s;; t++) {
            if (pattern_match(p + 1, t))
                return 1;
            if (*t == '\0' || (*p == '%' && *t == '.'))
                return 0;
        }
    }
    return *p == *s && pattern_match(p + 1, s + 1);
}

static int matches_any(const char *patterns, const char *name)
{
    char *copy = strdup(patterns), *save = NULL;
    int hit = 0;

    for (char *p = copy ? strtok_r(copy, ":", &save) : NULL; p && !hit;
         p = strtok_r(NULL, ":", &save))
        hit = pattern_match(p, name);
    free(copy);
    return hit;
}

static int add_mailbox(struct src_mailbox **out, size_t *n, const char *name)
{
    struct src_mailbox *mb = realloc(*out, (*n + 1) * sizeof *mb);

    if (mb == NULL)
        return -ENOMEM;
    *out = mb;
    if ((mb[*n].name = strdup(name)) == NULL)
        return -ENOMEM;
    mb[*n].delim = '.';
    mb[*n].selectable = 1;
    (*n)++;
    return 0;
}

static int compare_mailbox(const void *a, const void *b)
{
    return strcmp(((const struct src_mailbox *)a)->name, ((const struct src_mailbox *)b)->name);
}

static int md_list_mailboxes(struct source *s, struct src_mailbox **out, size_t *n, char *err,
                             size_t errlen)
{
    struct md_src *md = md_of(s);
    DIR *d = opendir(md->root);
    struct dirent *e;
    int rc = 0;

    *out = NULL;
    *n = 0;
    if (d == NULL) {
        snprintf(err, errlen, "maildir %s: %s", md->root, strerror(errno));
        return -EIO;
    }
    if (is_maildir(md->root) && matches_any(md->patterns, "INBOX"))
        rc = add_mailbox(out, n, "INBOX");
    while (rc == 0 && (e = readdir(d)) != NULL) {
        char path[4096];

        if (e->d_name[0] != '.' || strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (join(path, sizeof path, md->root, e->d_name) != 0)
            continue;
        if (is_maildir(path) && matches_any(md->patterns, e->d_name + 1))
            rc = add_mailbox(out, n, e->d_name + 1);
    }
    closedir(d);
    if (rc != 0) {
        source_mailboxes_free(*out, *n);
        *out = NULL;
        *n = 0;
        return rc;
    }
    qsort(*out, *n, sizeof **out, compare_mailbox);
    return 0;
}

/* ---- messages and their UIDs ------------------------------------------ */

static void files_free(struct md_file *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(f[i].path);
        free(f[i].base);
    }
    free(f);
}

static int scan_subdir(const char *dir, const char *sub, struct md_file **files, size_t *n,
                       size_t *cap)
{
    char path[4096];
    DIR *d;
    struct dirent *e;

    if (join(path, sizeof path, dir, sub) != 0)
        return -ENAMETOOLONG;
    if ((d = opendir(path)) == NULL)
        return errno == ENOENT ? 0 : -EIO;
    while ((e = readdir(d)) != NULL) {
        struct md_file *f;
        struct stat st;

        if (e->d_name[0] == '.')
            continue;
        if (*n == *cap) {
            size_t c = *cap ? *cap * 2 : 64;
            struct md_file *nf = realloc(*files, c * sizeof *nf);

            if (nf == NULL)
                goto nomem;
            *files = nf;
            *cap = c;
        }
        f = &(*files)[*n];
        memset(f, 0, sizeof *f);
        if (asprintf(&f->path, "%s/%s", path, e->d_name) < 0)
            goto nomem;
        if ((f->base = strndup(e->d_name, strcspn(e->d_name, ":"))) == NULL) {
            free(f->path);
            goto nomem;
        }
        if (stat(f->path, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(f->path);
            free(f->base);
            continue;
        }
        f->mtime = st.st_mtime;
        (*n)++;
    }
    closedir(d);
    return 0;
nomem:
    closedir(d);
    return -ENOMEM;
}

static int compare_base(const void *a, const void *b)
{
    return strcmp(((const struct md_file *)a)->base, ((const struct md_file *)b)->base);
}

static int compare_uid(const void *a, const void *b)
{
    uint32_t x = ((const struct md_file *)a)->uid, y = ((const struct md_file *)b)->uid;

    return x < y ? -1 : x > y;
}

/* UIDs from Dovecot's dovecot-uidlist: "3 V<uidvalidity> N<next> ..." then "<uid> ... :<base>". */
static int uids_from_dovecot(const char *dir, struct md_file *files, size_t n, uint32_t *validity)
{
    char path[4096], *line = NULL;
    size_t cap = 0, assigned = 0;
    FILE *f;

    if (join(path, sizeof path, dir, "dovecot-uidlist") != 0)
        return -1;
    if ((f = fopen(path, "re")) == NULL)
        return -1;
    if (getline(&line, &cap, f) < 0 || line[0] != '3' || strstr(line, " V") == NULL) {
        free(line);
        fclose(f);
        return -1;
    }
    *validity = (uint32_t)strtoul(strstr(line, " V") + 2, NULL, 10);
    while (getline(&line, &cap, f) > 0) {
        char *colon = strchr(line, ':');
        uint32_t uid = (uint32_t)strtoul(line, NULL, 10);
        struct md_file key;
        struct md_file *hit;

        if (colon == NULL || uid == 0)
            continue;
        colon[1 + strcspn(colon + 1, "\n")] = '\0';
        key.base = colon + 1;
        hit = n ? bsearch(&key, files, n, sizeof key, compare_base) : NULL; /* files may be NULL */
        if (hit && hit->uid == 0) {
            hit->uid = uid;
            assigned++;
        }
    }
    free(line);
    fclose(f);
    return assigned == n && *validity ? 0 : -1;
}

/* mbsync: ",U=<uid>" in each name and "<uidvalidity>\n<maxuid>" in .uidvalidity. */
static int uids_from_mbsync(const char *dir, struct md_file *files, size_t n, uint32_t *validity)
{
    char path[4096];
    FILE *f;
    unsigned long v = 0;

    if (join(path, sizeof path, dir, ".uidvalidity") != 0)
        return -1;
    if ((f = fopen(path, "re")) == NULL)
        return -1;
    if (fscanf(f, "%lu", &v) != 1 || v == 0 || v > UINT32_MAX) {
        fclose(f);
        return -1;
    }
    fclose(f);
    for (size_t i = 0; i < n; i++) {
        const char *u = strstr(files[i].base, ",U=");

        if (u == NULL || (files[i].uid = (uint32_t)strtoul(u + 3, NULL, 10)) == 0)
            return -1;
    }
    *validity = (uint32_t)v;
    return 0;
}

/* No UID store: number in name order; UIDVALIDITY hashes every name. */
static void uids_by_order(struct md_file *files, size_t n, uint32_t *validity)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++) {
        files[i].uid = (uint32_t)i + 1;
        for (const char *p = files[i].base; *p; p++)
            h = (h ^ (unsigned char)*p) * 16777619u;
        h = (h ^ '\n') * 16777619u;
    }
    *validity = h ? h : 1;
}

/* Every message file of a folder, sorted by UID, with UIDVALIDITY. */
static int folder_files(const char *dir, struct md_file **out, size_t *n, uint32_t *validity)
{
    size_t cap = 0;
    int rc;

    *out = NULL;
    *n = 0;
    if ((rc = scan_subdir(dir, "cur", out, n, &cap)) != 0 ||
        (rc = scan_subdir(dir, "new", out, n, &cap)) != 0) {
        files_free(*out, *n);
        *out = NULL;
        *n = 0;
        return rc;
    }
    if (*n > 1)
        qsort(*out, *n, sizeof **out, compare_base);
    for (size_t i = 0; i < *n; i++)
        (*out)[i].uid = 0;
    if (uids_from_dovecot(dir, *out, *n, validity) != 0) {
        for (size_t i = 0; i < *n; i++)
            (*out)[i].uid = 0;
        if (uids_from_mbsync(dir, *out, *n, validity) != 0)
            uids_by_order(*out, *n, validity);
    }
    if (*n > 1)
        qsort(*out, *n, sizeof **out, compare_uid);
    return 0;
}

/* The whole file in a malloc'd buffer; refuses files beyond the cap. */
static int read_file(const char *path, char **buf, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    size_t got = 0;

    *buf = NULL;
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0 || st.st_size < 0 || (uint64_t)st.st_size > MAILDIR_MAX_MESSAGE) {
        close(fd);
        return -EFBIG;
    }
    if ((*buf = malloc((size_t)st.st_size + 1)) == NULL) {
        close(fd);
        return -ENOMEM;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, *buf + got, (size_t)st.st_size - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    (*buf)[got] = '\0';
    *len = got;
    return 0;
}

/* Messages already known (same UIDVALIDITY) are copied, not read again. */
static int md_list_messages(struct source *s, const char *mailbox, const struct src_listing *known,
                            struct src_listing *out, char *err, size_t errlen)
{
    char *dir = folder_dir(md_of(s), mailbox);
    struct md_file *files = NULL;
    size_t n = 0;
    int rc;

    memset(out, 0, sizeof *out);
    if (dir == NULL || !is_maildir(dir)) {
        snprintf(err, errlen, "mailbox %s is gone", mailbox);
        free(dir);
        return -ENOENT;
    }
    rc = folder_files(dir, &files, &n, &out->uidvalidity);
    free(dir);
    if (rc != 0) {
        snprintf(err, errlen, "reading mailbox %s: %s", mailbox, strerror(-rc));
        return rc;
    }
    if (known && known->uidvalidity != out->uidvalidity)
        known = NULL;
    out->exists = (uint32_t)n;
    if ((out->msgs = calloc(n ? n : 1, sizeof *out->msgs)) == NULL) {
        files_free(files, n);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct src_message *m = &out->msgs[out->count];
        const struct src_message *k = source_listing_find(known, files[i].uid);
        char *buf;
        size_t len;

        if (k) {
            if (source_message_copy(k, m) != 0) {
                files_free(files, n);
                return -ENOMEM;
            }
            out->count++;
            continue;
        }
        if (read_file(files[i].path, &buf, &len) != 0)
            continue; /* vanished or too big: like a message expunged meanwhile */
        m->uid = files[i].uid;
        m->internaldate = files[i].mtime;
        /* A message libetpan cannot parse has no calendar parts for us. */
        mime_find_calendar_parts_in_message(buf, len, &m->parts);
        free(buf);
        out->count++;
    }
    files_free(files, n);
    return 0;
}

static int md_fetch_parts(struct source *s, const char *mailbox, uint32_t uidvalidity,
                          const struct src_part_req *reqs, size_t n, src_part_fn fn, void *ctx,
                          char *err, size_t errlen)
{
    char *dir = folder_dir(md_of(s), mailbox);
    struct md_file *files = NULL;
    size_t nfiles = 0;
    uint32_t validity = 0;
    int rc;

    if (dir == NULL)
        return -ENOENT;
    rc = folder_files(dir, &files, &nfiles, &validity);
    free(dir);
    if (rc != 0)
        return rc;
    if (validity != uidvalidity) {
        snprintf(err, errlen, "mailbox %s changed while reading it", mailbox);
        files_free(files, nfiles);
        return -ESTALE;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct md_file key = {.uid = reqs[i].uid}, *f;
        char *buf, *part;
        size_t len, plen;

        f = nfiles ? bsearch(&key, files, nfiles, sizeof key, compare_uid) : NULL;
        if (f == NULL || read_file(f->path, &buf, &len) != 0)
            continue;
        if (mime_extract_section(buf, len, reqs[i].section, &part, &plen) == 0) {
            rc = fn(ctx, i, part, plen);
            free(part);
        }
        free(buf);
    }
    files_free(files, nfiles);
    return rc;
}

static int md_check(struct source *s, char *err, size_t errlen)
{
    struct md_src *md = md_of(s);
    DIR *d = opendir(md->root);

    if (d == NULL) {
        snprintf(err, errlen, "maildir %s: %s", md->root, strerror(errno));
        return -ENOENT;
    }
    closedir(d);
    return 0;
}

static void md_free(struct source *s)
{
    struct md_src *md = md_of(s);

    if (md) {
        free(md->root);
        free(md->patterns);
        free(md);
    }
    free(s);
}

static const struct source_driver maildir_driver = {
    .name = "maildir",
    .check = md_check,
    .list_mailboxes = md_list_mailboxes,
    .list_messages = md_list_messages,
    .fetch_parts = md_fetch_parts,
    .free = md_free,
};

struct source *maildir_source_new(const struct opts *o)
{
    struct source *s = calloc(1, sizeof *s);
    struct md_src *md = calloc(1, sizeof *md);

    if (s == NULL || md == NULL) {
        free(s);
        free(md);
        return NULL;
    }
    s->drv = &maildir_driver;
    s->impl = md;
    md->root = strdup(o->maildir);
    md->patterns = strdup(o->mailboxes);
    if (md->root == NULL || md->patterns == NULL) {
        md_free(s);
        return NULL;
    }
    return s;
}
