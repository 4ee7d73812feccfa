/*
 * cache_internal.h — what cache.c (directory, listings) and cache_pack.c
 * (packs of parts) share. Not for other modules: they use cache.h.
 */
#ifndef IMAPCALFS_CACHE_INTERNAL_H
#define IMAPCALFS_CACHE_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>

/* Every file: 8-byte magic, u64 payload length, SHA-256 of the payload, payload. */
#define CACHE_HEADER_LEN (8 + 8 + 32)
/* A file beyond this is not ours (or is damaged). */
#define CACHE_ENTRY_MAX (1024ull << 20)

struct cache {
    char *dir;
};

/* Makes temporary names unique within the process. */
extern atomic_uint cache_tmp_counter;

int cache_sha256(const void *data, size_t len, unsigned char out[32]);
/* Reads exactly len bytes from fd; 0, or -1 at a short file or an error. */
int cache_read_full(int fd, void *buf, size_t len);
/* mkdir -p, 0700. */
int cache_make_dirs(const char *path);
/* DIR/<hex sha256 of mailbox> into out. */
int cache_mailbox_dir(const struct cache *c, const char *mailbox, char *out, size_t outlen);

#endif
