/*
 * fsops_inode.h — the FUSE node ids: which version of which path each is.
 *
 * Owns: the table from kernel node id to (kind, path, bytes of one version),
 * the kernel's lookup counts and our own references (handlers in flight,
 * open files), and freeing a node once the kernel forgot it and nothing
 * holds it. A file's node stands for one version of its bytes: when a sync
 * changes them, the next lookup of the path gets a new node id, while files
 * opened before keep the old node, whose attributes are the old version's
 * (the kernel answers fstat() per node). Directories and .status/.refresh
 * keep one node per path. Knows nothing of FUSE calls or of the store's
 * internals. Thread-safe (one short lock; no blob is compared under it).
 */
#ifndef IMAPCALFS_FSOPS_INODE_H
#define IMAPCALFS_FSOPS_INODE_H

#include <stddef.h>
#include <stdint.h>

#include "blob.h"
#include "store.h"

#define FSINO_ROOT 1 /* FUSE_ROOT_ID: "/" */

/* One node. The fields shown are fixed for its life: read them freely. */
struct fsino {
    uint64_t nodeid;
    enum store_kind kind;
    char *path;
    uint64_t size; /* STORE_FILE: length of this version */
    int64_t mtime; /* STORE_FILE, STORE_DYNAMIC: of this version */
    uint64_t ino;  /* st_ino (fsino_version_ino) */
    /* the table's own, under its lock */
    struct blob *bytes; /* STORE_FILE: this version (swapped for equal bytes) */
    uint64_t nlookup;   /* the kernel's references */
    unsigned refs;      /* ours: handlers in flight, open files */
    int current;        /* what a lookup of path now returns */
    struct fsino *id_next, *path_next;
};

struct fsino_table;

/* An empty table holding only the root; NULL on ENOMEM. */
struct fsino_table *fsino_table_new(void);

/* Frees every node, whatever its counts (at unmount). */
void fsino_table_free(struct fsino_table *t);

/*
 * st_ino for a's path and version: the store's per-path number for
 * directories and dynamic files; mixed with size and mtime for a file, so
 * that a changed file shows a new st_ino (same size and mtime but other
 * bytes keep the number: only the node id changes then).
 */
uint64_t fsino_version_ino(const struct store_attr *a);

/*
 * The node of nodeid with one more reference of ours (drop it with
 * fsino_put()), or NULL when no such node exists.
 */
struct fsino *fsino_get(struct fsino_table *t, uint64_t nodeid);
void fsino_put(struct fsino_table *t, struct fsino *n);

/*
 * A lookup of path found a, and for a file the bytes (borrowed; the table
 * takes its own reference). Returns path's current node when it is the
 * same version (same kind; for a file the same mtime and bytes), else a
 * new node that becomes current. Counts one kernel lookup and one reference
 * of ours (fsino_put() after replying). NULL on ENOMEM.
 */
struct fsino *fsino_lookup(struct fsino_table *t, const char *path, const struct store_attr *a,
                           struct blob *bytes);

/* The kernel dropped n lookups of nodeid (FORGET): frees it at zero if unused. */
void fsino_forget(struct fsino_table *t, uint64_t nodeid, uint64_t n);

/* The bytes of a file node, with a reference for the caller (blob_unref()). */
struct blob *fsino_bytes(struct fsino_table *t, struct fsino *n);

/*
 * The current node id of path (0: the kernel has none), with its st_ino and
 * kind when those pointers are not NULL.
 */
uint64_t fsino_current(struct fsino_table *t, const char *path, uint64_t *ino,
                       enum store_kind *kind);

/* How many nodes the table holds (the root included). */
size_t fsino_count(struct fsino_table *t);

#endif
