/*
 * fsops.h — the FUSE operations, over a store.
 *
 * Owns: translating FUSE calls into store calls and errno values, the
 * read-only rule (EROFS), the kernel cache settings, and dropping the
 * kernel's cached pages after a sync changed a file (from a thread of its
 * own: invalidating from inside a handler can deadlock, notes B7).
 * Knows nothing of IMAP or calendars. Thread-safe.
 */
#ifndef IMAPCALFS_FSOPS_H
#define IMAPCALFS_FSOPS_H

#define FUSE_USE_VERSION 314
#include <fuse.h>

struct store;
struct fsops;

/* State for the operations; pass it as fuse_new()'s user_data. */
struct fsops *fsops_new(struct store *store);
void fsops_free(struct fsops *f);

const struct fuse_operations *fsops_operations(void);

#endif
