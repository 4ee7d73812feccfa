/*
 * store.h — the calendars as a tree of directories and files.
 *
 * Owns: the mailbox tree (from the source's LIST), each mailbox's synced
 * state (its messages' calendar versions and the rendered files), the
 * root's merged calendar, freshness (ttl), .status and .refresh. It asks the
 * source for mail and the calendar module for bytes; it knows nothing of
 * FUSE. Thread-safe: published state is immutable and swapped under short
 * locks; no lock is held while waiting for the network except a mailbox's
 * own sync lock, which only that mailbox's readers wait on.
 */
#ifndef IMAPCALFS_STORE_H
#define IMAPCALFS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "blob.h"

struct opts;
struct source;
struct store;

enum store_kind {
    STORE_DIR,
    STORE_FILE,    /* bytes known: size exact */
    STORE_DYNAMIC, /* .status, .refresh: made when opened, size unknown */
};

struct store_attr {
    enum store_kind kind;
    uint64_t size;
    int64_t mtime; /* seconds since the epoch */
    uint64_t ino;  /* stable for a path */
};

/* Called after a sync with each path whose bytes or listing changed. */
typedef void (*store_changed_fn)(void *ctx, const char *path);

struct cache;

/*
 * The store for a source, options and cache (NULL: memory only); all three
 * outlive it. NULL on ENOMEM.
 */
struct store *store_new(struct source *src, const struct opts *o, struct cache *cache);
void store_free(struct store *s);

void store_on_change(struct store *s, store_changed_fn fn, void *ctx);

/*
 * Attributes of path ("/", "/Calendars/Alice/merged.ics", ...). May sync
 * with the source first (lazily, per ttl). Returns 0, -ENOENT, or -EIO when
 * the bytes are needed and neither the source nor a cached copy has them.
 */
int store_getattr(struct store *s, const char *path, struct store_attr *out);

/* Lists a directory (without ".", ".." and the hidden .status/.refresh). */
typedef int (*store_fill_fn)(void *ctx, const char *name, const struct store_attr *attr);
int store_readdir(struct store *s, const char *path, store_fill_fn fill, void *ctx);

/*
 * The bytes of a file, with a reference the caller drops with blob_unref().
 * Opening .refresh re-syncs that directory's scope first. -EISDIR, -ENOENT,
 * -EIO as above.
 */
int store_open(struct store *s, const char *path, struct blob **out);

#endif
