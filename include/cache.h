/*
 * cache.h — the persistent cache of what was fetched from the source.
 *
 * Owns: the cache directory (made 0700; files 0600), one file per fetched
 * part keyed by mailbox, UIDVALIDITY, UID and section, and per mailbox the
 * last listing (so a remount asks only what changed). Every write is atomic
 * (temporary file, fsync, rename) and every entry carries its length and a
 * SHA-256, so a crash mid-write or a damaged file is a miss, never wrong
 * bytes. Mailbox names are untrusted: directories are named by their hash.
 * Never holds a credential. Thread-safe: entries are independent files.
 */
#ifndef IMAPCALFS_CACHE_H
#define IMAPCALFS_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct cache;
struct src_listing;

/*
 * Opens (creating it 0700) the cache directory dir. Returns NULL with the
 * reason in err when it cannot be made or is not ours to use.
 */
struct cache *cache_open(const char *dir, char *err, size_t errlen);
void cache_close(struct cache *c);

/* $XDG_CACHE_HOME/imapcalfs/<account> (or ~/.cache/...), malloc'd; NULL on error. */
char *cache_default_dir(const char *account);

/*
 * Parts are kept in packs: one file per sync that fetched something, all
 * the parts that sync fetched, written as they arrive and made visible at
 * commit (fsync, rename), so a sync costs one fsync, not one per part.
 */
struct cache_writer;

/*
 * A writer for new records of mailbox under uidvalidity, on a shelf: NULL
 * for fetched parts, or a name (letters, digits, '-') for other records
 * (the store keeps parsed versions on a shelf named after the filter).
 * NULL on error.
 */
struct cache_writer *cache_writer_begin(struct cache *c, const char *mailbox, uint32_t uidvalidity,
                                        const char *shelf);
/* Adds one part, still transfer-encoded. 0, or a negative errno (the writer is then spent). */
int cache_writer_add(struct cache_writer *w, uint32_t uid, const char *section, const char *data,
                     size_t len);
/* The same, with the data in pieces (written in order, as one record). */
int cache_writer_addv(struct cache_writer *w, uint32_t uid, const char *section,
                      const struct iovec *v, size_t nv);
/* Makes the pack visible (when it holds anything) and frees w. 0 or -errno. */
int cache_writer_commit(struct cache_writer *w);

/*
 * Calls fn for every cached part of mailbox under uidvalidity. A damaged
 * pack is removed (its parts are then simply fetched again). fn returns 0
 * to go on. Returns 0 or the first non-zero result of fn.
 */
typedef int (*cache_part_fn)(void *ctx, uint32_t uid, const char *section, const char *data,
                             size_t len);
int cache_each_part(struct cache *c, const char *mailbox, uint32_t uidvalidity, const char *shelf,
                    cache_part_fn fn, void *ctx);

/*
 * When mailbox has many packs, rewrites them into one holding only the parts
 * of messages still listed in live (expunged ones are dropped).
 */
void cache_compact(struct cache *c, const char *mailbox, uint32_t uidvalidity, const char *shelf,
                   const struct src_listing *live);

/*
 * The one record of the newest pack on shelf (not NULL) of mailbox under
 * uidvalidity, for shelves that hold a single big record: its data is
 * malloc'd into *data (NUL after the last byte), read and checked in one
 * go. 0, -ENOENT (also for a damaged pack, then removed) or -ENOMEM.
 */
int cache_take_single(struct cache *c, const char *mailbox, uint32_t uidvalidity, const char *shelf,
                      uint32_t *uid, char **data, size_t *len);

/* Whether shelf (not NULL) of mailbox under uidvalidity holds a pack: cheap, reads no pack. */
int cache_has_shelf(struct cache *c, const char *mailbox, uint32_t uidvalidity, const char *shelf);

/* Removes every pack on shelf (not NULL) of mailbox under uidvalidity. */
void cache_drop_shelf(struct cache *c, const char *mailbox, uint32_t uidvalidity,
                      const char *shelf);

/* The last listing of mailbox (free with source_listing_free). 0 or -ENOENT. */
int cache_get_listing(struct cache *c, const char *mailbox, struct src_listing *out);
int cache_put_listing(struct cache *c, const char *mailbox, const struct src_listing *l);

/* Removes everything cached for mailbox under another UIDVALIDITY. */
void cache_drop_other_uidvalidity(struct cache *c, const char *mailbox, uint32_t uidvalidity);

#endif
