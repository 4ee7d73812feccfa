/*
 * blob.h — immutable, reference-counted file contents.
 *
 * Owns: the lifetime of rendered file contents. A blob is built once and
 * never changes; whoever holds a reference can read it without a lock, so
 * an open file keeps the exact bytes it opened even when a sync replaces
 * them. Thread-safe (atomic reference count).
 *
 * A blob is either flat bytes it owns (.status, a saved merged.ics read
 * back) or a list of segments borrowed from elsewhere (a rope): rendered
 * calendars are concatenations of texts that live in memory anyway, so a
 * blob of segments holds what they point into (a release hook) instead of
 * a copy. Either way it reads as one run of len bytes.
 */
#ifndef IMAPCALFS_BLOB_H
#define IMAPCALFS_BLOB_H

#include <stdatomic.h>
#include <stddef.h>
#include <sys/uio.h>

struct blob {
    atomic_int refs;
    size_t len;                 /* bytes in all segments */
    char *flat;                 /* owned bytes (NUL after them) of a flat blob, else NULL */
    void (*release)(void *ctx); /* frees what the segments borrow; may be NULL */
    void *ctx;
    size_t *ends; /* with many segments: offset after each, to find one by offset */
    size_t nseg;
    struct iovec seg[]; /* the bytes, in order; none empty */
};

/* A blob holding a copy of data[0..len), with one reference; NULL on ENOMEM. */
struct blob *blob_new(const char *data, size_t len);

/*
 * Takes over a malloc'd buffer of len bytes (no copy: rendered files are
 * megabytes). The buffer is freed on failure too. NULL on ENOMEM.
 */
struct blob *blob_take(char *buf, size_t len);

/*
 * A blob of the segments seg[0..n) (the list is copied, not the bytes),
 * which stay valid until release(ctx) is called when the last reference
 * goes. On ENOMEM release(ctx) is called at once and NULL returned.
 */
struct blob *blob_segs(const struct iovec *seg, size_t n, void (*release)(void *), void *ctx);

struct blob *blob_ref(struct blob *b);
void blob_unref(struct blob *b);

/* Nonzero when both hold the same bytes (either may be NULL). Segments
 * that are the same memory are not read. */
int blob_equal(const struct blob *a, const struct blob *b);

/* Copies up to n bytes from offset off into dst; returns how many. */
size_t blob_copy(const struct blob *b, size_t off, char *dst, size_t n);

/*
 * The segments covering [off, off + n) (cut to the blob's end), into a
 * malloc'd array *iov of *niov entries (none when the range is empty).
 * The entries point into b: valid while a reference is held. 0 or -ENOMEM.
 */
int blob_iov(const struct blob *b, size_t off, size_t n, struct iovec **iov, size_t *niov);

/* The bytes as one malloc'd NUL-terminated copy (for tests and tools). */
char *blob_flatten(const struct blob *b);

/* Writes every byte to fd (short writes and EINTR retried). 0 or -errno. */
int blob_write(const struct blob *b, int fd);

#endif
