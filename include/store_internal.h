/*
 * store_internal.h — what the files of the store share: store.c (tree,
 * path lookup, FUSE-facing calls), store_sync.c (syncing one mailbox),
 * store_collect.c (its messages' versions: kept, cached or fetched),
 * store_root.c (the root's merged calendar), store_rootcache.c (that
 * calendar saved across mounts) and store_status.c (.status, .refresh).
 * Not for other modules: they use store.h.
 */
#ifndef IMAPCALFS_STORE_INTERNAL_H
#define IMAPCALFS_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "blob.h"
#include "cal.h"
#include "source.h"
#include "store.h"

/* The calendar versions of one message; shared by successive snapshots. */
struct msgver {
    atomic_int refs;
    uint32_t uid;
    int64_t internaldate;
    struct cal_versions *v;
    struct cal_stats stats; /* of parsing its parts */
    int from_cache;         /* versions loaded from the cache, not parsed */
    int incomplete;         /* a part could not be fetched: parse it again next sync */
};

struct snap_file {
    char *name;
    struct blob *bytes;
    int64_t mtime;
};

/* One mailbox as of one sync. Immutable once published. */
struct mbox_snap {
    atomic_int refs;
    uint32_t uidvalidity;
    struct src_listing listing; /* every message: what the next sync compares with */
    struct msgver **msgs;       /* messages with calendar parts, by uid */
    size_t nmsgs;
    struct snap_file *files; /* event files, by name */
    size_t nfiles;
    pthread_mutex_t merged_lock; /* merged is built on its first read */
    struct blob *merged;         /* NULL until then; use mbox_snap_merged() */
    int64_t merged_mtime;
    int64_t dir_mtime;
    uint64_t generation; /* changes whenever the rendered content does */
    unsigned messages;   /* in the mailbox, with or without calendar data */
    unsigned unreadable; /* messages whose structure could not be read */
    struct cal_stats stats;
    int complete; /* synced online with every part: it follows from its listing alone */
};

struct mbox {
    char *raw;                 /* the source's name: the key sent back to it */
    char *display;             /* UTF-8 name, for logs, .status and the source URL */
    char *path;                /* "/Calendars/Alice" */
    pthread_mutex_t sync_lock; /* one sync of this mailbox at a time */
    pthread_mutex_t lock;      /* guards the fields below */
    struct mbox_snap *snap;    /* NULL until the first successful sync */
    struct timespec synced_at; /* CLOCK_MONOTONIC of the last sync attempt */
    int attempted;
    unsigned failures; /* failed syncs in a row: spaces out the retries */
    time_t last_sync;  /* wall clock of the last successful sync */
    char last_error[256];
    struct store *store; /* for push notifications */
    int watched;         /* an IDLE watcher runs for it */
};

struct dirnode {
    char *name;
    char *path;            /* "/" or "/A/B" */
    struct dirnode **kids; /* sorted by name */
    size_t nkids;
    struct mbox *mbox; /* NULL when no selectable mailbox has this name */
};

/* The directory tree as of one LIST. Immutable once published. */
struct tree {
    atomic_int refs;
    struct dirnode *root;
    struct mbox **mboxes; /* selectable mailboxes in the tree, by path */
    size_t nmboxes;
};

/* store_rootcache.c: a mailbox as it was when the root's key was made. */
struct root_state {
    struct src_state st;
    int certain; /* st alone names the listing: HIGHESTMODSEQ known, nothing unreadable */
};

struct store {
    struct source *src;
    struct cache *cache; /* NULL with no_disk_cache */
    const struct opts *o;
    store_changed_fn changed;
    void *changed_ctx;

    pthread_mutex_t lock; /* guards tree, tree_at, registry, root_* */
    struct tree *tree;
    struct timespec tree_at;
    int tree_attempted;
    unsigned tree_failures; /* failed LISTs in a row: spaces out the retries */
    char tree_error[256];
    pthread_mutex_t tree_sync_lock; /* one LIST at a time */

    struct mbox **registry; /* every mailbox ever seen; freed with the store */
    size_t nregistry;

    pthread_mutex_t root_sync_lock; /* one build of the root merged at a time */
    struct blob *root_merged;
    int64_t root_mtime;
    uint64_t root_generation; /* sum of the generations it was built from */
    /* store_rootcache.c: what the root merged.ics follows from, to save it at the end */
    unsigned char root_key[32];
    int root_key_ok;         /* root_key names root_merged */
    int root_saved;          /* the cache holds it already */
    char *root_anchor;       /* the first mailbox: the record is kept in its directory */
    uint32_t root_anchor_uv; /* and under its UIDVALIDITY */
    int root_from_cache;     /* root_merged is the saved one, as of root_cached_at */
    struct timespec root_cached_at;
    struct root_state *root_states; /* each mailbox as root_key saw it, or NULL */
    size_t root_nstates;
    unsigned char root_head[32]; /* what else root_key covers: account, filter, names */
    int root_state_saved;        /* the cache holds root_states for root_key */
    pthread_t hydrator;          /* makes the snapshots the saved root did not need */
    int hydrating;               /* hydrator is to be joined */
    struct tree *hydrate_tree;

    atomic_uint_fast64_t next_generation;
    int64_t mounted_at;      /* mtime of what has no mail behind it yet */
    char versions_shelf[24]; /* cache shelf of parsed versions, named after the filter */
    atomic_int nwatched;     /* IDLE watchers started (-o idle), at most STORE_MAX_WATCHES */
};

/* Sessions kept idling for push updates at most (each is a connection). */
#define STORE_MAX_WATCHES 8

/* store.c */
struct tree *store_tree_get(struct store *s, int force, int *err);
void store_tree_unref(struct tree *t);
int store_is_fresh(const struct store *s, const struct timespec *at, int attempted);
uint64_t store_ino(const char *path);
double store_retry_after(unsigned failures);
double store_seconds_since(const struct timespec *t);
/*
 * True while the last LIST failed and its retry is not due: the server is
 * taken to be unreachable, and why says what went wrong.
 */
int store_source_down(struct store *s, char *why, size_t whylen);

/* store_sync.c */
struct mbox_snap *mbox_get(struct store *s, struct mbox *m, int force, int *err);
void mbox_snap_unref(struct mbox_snap *snap);
/* snap's merged.ics (a new reference), built the first time; NULL on ENOMEM. */
struct blob *mbox_snap_merged(struct store *s, struct mbox_snap *snap);
int store_compare_file(const void *a, const void *b);
/* Keeps old when b holds the same bytes (drops b); sets *changed otherwise.
 * NULL when b is (ENOMEM). */
struct blob *store_reuse_or_new(const struct blob *old, struct blob *b, int *changed);
/* A blob of the rope's segments, holding what they point into; r is
 * emptied. NULL on ENOMEM. */
struct blob *store_blob_of(struct cal_rope *r);
/* Reports dir/name (or dir itself when name is NULL) to the change callback. */
void store_notify(struct store *s, const char *dir, const char *name);
/* A message's versions, empty, with one reference; NULL on ENOMEM. */
struct msgver *msgver_new(uint32_t uid, int64_t internaldate, const struct cal_origin *o);
/* The element of v (n of them, sorted by uid) for uid, or NULL. */
struct msgver *msgver_find(struct msgver *const *v, size_t n, uint32_t uid);

/*
 * store_collect.c: fills snap->msgs for listing l. Known messages are shared
 * with old, the rest come from the cache or (unless offline) the source.
 * cached_top: cache_bound() of the listing the last sync wrote.
 */
uint32_t cache_bound(const struct src_listing *known, const struct src_listing *l);
int collect_versions(struct store *s, struct mbox *m, const struct mbox_snap *old,
                     const struct src_listing *l, uint32_t cached_top, struct mbox_snap *snap,
                     int offline, char *err, size_t errlen);

/* A snapshot of m from the disk cache only, quietly, when m has none yet. */
void mbox_hydrate(struct store *s, struct mbox *m);
struct mbox *mbox_new(const char *raw, const char *display, const char *path);
void mbox_free(struct mbox *m);

/* store_root.c */
int store_root_merged(struct store *s, struct tree *t, int force, struct blob **out,
                      int64_t *mtime);
struct blob *store_empty_calendar(void);

/*
 * store_rootcache.c: the root merged.ics saved across mounts.
 * store_root_key: the key of what complete snapshots (one per mailbox of t)
 * make; -ENOENT when one is not complete. store_root_keep: root_merged is
 * now what key names (under s->lock). store_root_from_cache: on the first
 * read, the saved bytes when every mailbox's listing still gives their key
 * (lists each mailbox; the snapshots are left for their next access);
 * -ENOENT otherwise. store_root_save: at the end, saves root_merged when
 * the cache does not hold it yet; store_root_save_state then saves the
 * mailbox states its key was made from, with which the next mount checks
 * the key with one EXAMINE per mailbox instead of listing them. states
 * (malloc'd, one per mailbox of t; may be NULL) go from store_root_key to
 * store_root_keep, which takes them.
 */
int store_root_key(struct store *s, struct tree *t, struct mbox_snap **snaps, unsigned char key[32],
                   struct root_state **states);
void store_root_keep(struct store *s, struct tree *t, const unsigned char key[32],
                     uint32_t anchor_uv, struct root_state *states, int saved);
int store_root_from_cache(struct store *s, struct tree *t, struct blob **out, int64_t *mtime);
void store_root_save(struct store *s);
void store_root_save_state(struct store *s);
/* Joins the thread that store_root_from_cache() started, if any. */
void store_root_join(struct store *s);

/* store_versions.c: parsed versions in the cache (a remount parses nothing again) */
void store_versions_shelf(const struct opts *o, char *out, size_t outlen);
int store_versions_load(struct store *s, struct mbox *m, uint32_t uidvalidity,
                        struct msgver **fresh, size_t n);
void store_versions_save(struct store *s, struct mbox *m, uint32_t uidvalidity,
                         struct msgver **fresh, size_t n);

/* store_status.c */
struct blob *store_status_text(struct store *s, struct tree *t, const struct dirnode *scope);

#endif
