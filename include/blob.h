/*
 * blob.h — immutable, reference-counted byte buffers.
 *
 * Owns: the lifetime of rendered file contents. A blob is built once and
 * never changes; whoever holds a reference can read it without a lock, so
 * an open file keeps the exact bytes it opened even when a sync replaces
 * them. Thread-safe (atomic reference count).
 */
#ifndef IMAPCALFS_BLOB_H
#define IMAPCALFS_BLOB_H

#include <stdatomic.h>
#include <stddef.h>

struct blob {
    atomic_int refs;
    size_t len;
    char *data; /* owned; NUL after the last byte */
};

/* A blob holding a copy of data[0..len), with one reference; NULL on ENOMEM. */
struct blob *blob_new(const char *data, size_t len);

/*
 * Takes over a malloc'd buffer of len bytes (no copy: rendered files are
 * megabytes). The buffer is freed on failure too. NULL on ENOMEM.
 */
struct blob *blob_take(char *buf, size_t len);

struct blob *blob_ref(struct blob *b);
void blob_unref(struct blob *b);

/* Nonzero when both hold the same bytes (either may be NULL). */
int blob_equal(const struct blob *a, const struct blob *b);

#endif
