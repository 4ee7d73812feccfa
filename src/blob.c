/* blob.c — immutable reference-counted bytes: flat, or segments (a rope). */
#include "blob.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Segments up to which blob_find() scans rather than keeps offsets. */
#define BLOB_SCAN 16

struct blob *blob_new(const char *data, size_t len)
{
    char *copy = malloc(len + 1);

    if (copy == NULL)
        return NULL;
    if (len)
        memcpy(copy, data, len);
    return blob_take(copy, len);
}

struct blob *blob_take(char *buf, size_t len)
{
    struct blob *b = malloc(sizeof *b + sizeof b->seg[0]);
    char *nul;

    /* Callers' buffers are exact: make room for the terminating NUL. */
    if (b == NULL || (nul = realloc(buf, len + 1)) == NULL) {
        free(b);
        free(buf);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->len = len;
    b->flat = nul;
    b->flat[len] = '\0';
    b->release = NULL;
    b->ctx = NULL;
    b->ends = NULL;
    b->nseg = len ? 1 : 0;
    b->seg[0].iov_base = nul;
    b->seg[0].iov_len = len;
    return b;
}

struct blob *blob_segs(const struct iovec *seg, size_t n, void (*release)(void *), void *ctx)
{
    size_t keep = 0, nends;

    for (size_t i = 0; i < n; i++)
        keep += seg[i].iov_len != 0;
    nends = keep > BLOB_SCAN ? keep : 0;
    struct blob *b = malloc(sizeof *b + keep * sizeof b->seg[0] + nends * sizeof *b->ends);
    if (b == NULL) {
        if (release)
            release(ctx);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->len = 0;
    b->flat = NULL;
    b->release = release;
    b->ctx = ctx;
    b->ends = nends ? (size_t *)(b->seg + keep) : NULL;
    b->nseg = 0;
    for (size_t i = 0; i < n; i++) {
        if (seg[i].iov_len == 0)
            continue;
        b->seg[b->nseg] = seg[i];
        b->len += seg[i].iov_len;
        if (b->ends)
            b->ends[b->nseg] = b->len;
        b->nseg++;
    }
    return b;
}

struct blob *blob_ref(struct blob *b)
{
    if (b)
        atomic_fetch_add(&b->refs, 1);
    return b;
}

void blob_unref(struct blob *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
        if (b->release)
            b->release(b->ctx);
        free(b->flat);
        free(b);
    }
}

/*
 * Walks both segment lists at once, comparing the overlap of the current
 * pair of segments; an overlap at the same address is equal unread (files
 * of one event in successive snapshots point into the same texts).
 */
int blob_equal(const struct blob *a, const struct blob *b)
{
    size_t i = 0, j = 0, ai = 0, bj = 0;

    if (a == b)
        return 1;
    if (a == NULL || b == NULL || a->len != b->len)
        return 0;
    while (i < a->nseg && j < b->nseg) {
        const char *pa = (const char *)a->seg[i].iov_base + ai;
        const char *pb = (const char *)b->seg[j].iov_base + bj;
        size_t ra = a->seg[i].iov_len - ai, rb = b->seg[j].iov_len - bj;
        size_t n = ra < rb ? ra : rb;

        if (pa != pb && memcmp(pa, pb, n) != 0)
            return 0;
        ai += n;
        bj += n;
        if (ai == a->seg[i].iov_len) {
            i++;
            ai = 0;
        }
        if (bj == b->seg[j].iov_len) {
            j++;
            bj = 0;
        }
    }
    return 1;
}

/* The segment holding offset off (b->nseg when off >= len), and where in
 * it: a binary search over ends when there are many (reads of a large
 * merged.ics start anywhere), else a scan. */
static size_t blob_find(const struct blob *b, size_t off, size_t *in)
{
    size_t i = 0;

    if (b->ends) {
        size_t lo = 0, hi = b->nseg;

        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;

            if (b->ends[mid] <= off)
                lo = mid + 1;
            else
                hi = mid;
        }
        *in = lo < b->nseg ? off - (b->ends[lo] - b->seg[lo].iov_len) : 0;
        return lo;
    }
    while (i < b->nseg && off >= b->seg[i].iov_len) {
        off -= b->seg[i].iov_len;
        i++;
    }
    *in = off;
    return i;
}

size_t blob_copy(const struct blob *b, size_t off, char *dst, size_t n)
{
    size_t in, done = 0;

    for (size_t i = blob_find(b, off, &in); i < b->nseg && done < n; i++, in = 0) {
        size_t k = b->seg[i].iov_len - in;

        if (k > n - done)
            k = n - done;
        memcpy(dst + done, (const char *)b->seg[i].iov_base + in, k);
        done += k;
    }
    return done;
}

int blob_iov(const struct blob *b, size_t off, size_t n, struct iovec **iov, size_t *niov)
{
    size_t in, first = blob_find(b, off, &in), last = first, left;

    *iov = NULL;
    *niov = 0;
    if (first == b->nseg || n == 0)
        return 0;
    /* Count first: the range spans segments first..last. */
    for (left = n + in; last < b->nseg && left > b->seg[last].iov_len; last++)
        left -= b->seg[last].iov_len;
    if (last == b->nseg)
        last--;
    if ((*iov = malloc((last - first + 1) * sizeof **iov)) == NULL)
        return -ENOMEM;
    for (size_t i = first, done = 0; i <= last && done < n; i++, in = 0) {
        size_t k = b->seg[i].iov_len - in;

        if (k > n - done)
            k = n - done;
        (*iov)[*niov].iov_base = (char *)b->seg[i].iov_base + in;
        (*iov)[*niov].iov_len = k;
        (*niov)++;
        done += k;
    }
    return 0;
}

char *blob_flatten(const struct blob *b)
{
    char *p = malloc(b->len + 1);

    if (p == NULL)
        return NULL;
    blob_copy(b, 0, p, b->len);
    p[b->len] = '\0';
    return p;
}

int blob_write(const struct blob *b, int fd)
{
    size_t i = 0, in = 0;

    /* writev in batches of at most IOV_MAX, resuming after short writes. */
    while (i < b->nseg) {
        struct iovec v[64];
        size_t nv = 0;
        ssize_t w;

        for (size_t k = i; k < b->nseg && nv < sizeof v / sizeof v[0] && nv < IOV_MAX; k++) {
            v[nv].iov_base = (char *)b->seg[k].iov_base + (k == i ? in : 0);
            v[nv].iov_len = b->seg[k].iov_len - (k == i ? in : 0);
            nv++;
        }
        if ((w = writev(fd, v, (int)nv)) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        for (size_t done = (size_t)w; done > 0;) {
            size_t k = b->seg[i].iov_len - in;

            if (done < k) {
                in += done;
                break;
            }
            done -= k;
            i++;
            in = 0;
        }
    }
    return 0;
}
