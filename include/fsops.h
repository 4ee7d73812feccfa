/*
 * fsops.h — the FUSE operations (libfuse's low-level API), over a store.
 *
 * Owns: the FUSE session and its operations: node ids (one per version of a
 * file, fsops_inode.h), attributes (with uid=, gid=, umask=), directory
 * listings, open files holding the bytes they opened, the read-only rule
 * (EROFS), the kernel cache settings, and dropping the kernel's entries
 * after a sync changed a file (from a thread of its own: notifying from
 * inside a handler can deadlock, notes B7). Knows nothing of IMAP or
 * calendars. Thread-safe.
 */
#ifndef IMAPCALFS_FSOPS_H
#define IMAPCALFS_FSOPS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

struct store;
struct fsops;

/* The attribute options libfuse's high-level library used to take. */
struct fsops_config {
    int set_uid, set_gid, set_umask;
    unsigned uid, gid, umask;
};

/*
 * Takes uid=, gid= and umask= out of args (and the high-level library's
 * cache options, which never had an effect here). Returns 0, or -EINVAL
 * after writing one line to err.
 */
int fsops_parse_args(struct fuse_args *args, struct fsops_config *c, char *err, size_t errlen);

/* Prints the options fsops_parse_args() takes, for -h. */
void fsops_print_help(void);

/* State for the operations over store (which outlives it); NULL on ENOMEM. */
struct fsops *fsops_new(struct store *store, const struct fsops_config *c);

/*
 * The FUSE session serving f, from the options left in args (mount options,
 * -d). NULL after libfuse printed why. Destroy it (fuse_session_destroy())
 * before fsops_free().
 */
struct fuse_session *fsops_session_new(struct fsops *f, struct fuse_args *args);

/* The loop ended: drop the invalidations still queued. */
void fsops_stop(struct fsops *f);

void fsops_free(struct fsops *f);

#endif
