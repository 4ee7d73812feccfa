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
 * The part's bytes as fetched (still transfer-encoded), malloc'd into
 * *data. 0 on a hit, -ENOENT on a miss (a corrupt entry is removed and is a
 * miss), -ENOMEM.
 */
int cache_get_part(struct cache *c, const char *mailbox, uint32_t uidvalidity, uint32_t uid,
                   const char *section, char **data, size_t *len);
int cache_put_part(struct cache *c, const char *mailbox, uint32_t uidvalidity, uint32_t uid,
                   const char *section, const char *data, size_t len);

/* The last listing of mailbox (free with source_listing_free). 0 or -ENOENT. */
int cache_get_listing(struct cache *c, const char *mailbox, struct src_listing *out);
int cache_put_listing(struct cache *c, const char *mailbox, const struct src_listing *l);

/* Removes everything cached for mailbox under another UIDVALIDITY. */
void cache_drop_other_uidvalidity(struct cache *c, const char *mailbox, uint32_t uidvalidity);

#endif
