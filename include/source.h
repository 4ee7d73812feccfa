/*
 * source.h — where mail comes from, behind one interface.
 *
 * Owns: the questions the store asks of a mail source — check the account,
 * list the mailboxes, list a mailbox's messages with their calendar parts,
 * fetch given parts of many messages at once — and the dispatch to a driver
 * (IMAP over libetpan in imap.c; a local Maildir in maildir.c), like
 * isync's driver.h. Knows nothing of files, calendars or caching.
 * Thread-safe: each driver serialises its own connections.
 */
#ifndef IMAPCALFS_SOURCE_H
#define IMAPCALFS_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "mime.h"

struct opts;

struct src_mailbox {
    char *name;     /* as the source names it (IMAP: modified UTF-7); sent back as is */
    char delim;     /* hierarchy delimiter; 0 when the hierarchy is flat */
    int selectable; /* 0 for \Noselect / \NonExistent */
};

struct src_message {
    uint32_t uid;
    int unreadable;              /* its structure could not be read: skipped, counted */
    int64_t internaldate;        /* seconds since the epoch */
    struct mime_part_list parts; /* its calendar parts; often none */
};

struct src_listing {
    uint32_t uidvalidity;
    uint64_t highestmodseq;   /* 0 when the source has no CONDSTORE */
    uint32_t exists;          /* messages in the mailbox (msgs may hold fewer: search=) */
    struct src_message *msgs; /* sorted by uid */
    size_t count;
};

/* What a mailbox's EXAMINE tells of it, without listing its messages. */
struct src_state {
    uint32_t uidvalidity;
    uint32_t exists;
    uint64_t highestmodseq; /* 0 when the source has no CONDSTORE */
};

/* One part of one message to fetch. */
struct src_part_req {
    uint32_t uid;
    const char *section;
};

/*
 * Called once per fetched part with its still transfer-encoded bytes;
 * index is the position in the request array. Return 0 to go on.
 */
typedef int (*src_part_fn)(void *ctx, size_t index, const char *data, size_t len);

struct source;

struct source_driver {
    const char *name;
    int (*check)(struct source *s, char *err, size_t errlen);
    int (*list_mailboxes)(struct source *s, struct src_mailbox **out, size_t *n, char *err,
                          size_t errlen);
    int (*list_messages)(struct source *s, const char *mailbox, const struct src_listing *known,
                         struct src_listing *out, char *err, size_t errlen);
    /* Optional (NULL: -ENOTSUP). */
    int (*state)(struct source *s, const char *mailbox, struct src_state *out, char *err,
                 size_t errlen);
    int (*fetch_parts)(struct source *s, const char *mailbox, uint32_t uidvalidity,
                       const struct src_part_req *reqs, size_t n, src_part_fn fn, void *ctx,
                       char *err, size_t errlen);
    /* Optional (NULL: no push): calls fn whenever mailbox may have changed. */
    int (*watch)(struct source *s, const char *mailbox, void (*fn)(void *ctx), void *ctx);
    void (*free)(struct source *s);
};

struct source {
    const struct source_driver *drv;
    void *impl;
};

/*
 * A source for the account in o; password may be NULL for maildir. The
 * source keeps its own copy of the password. NULL on allocation failure.
 */
struct source *source_new(const struct opts *o, const char *password);
struct source *imap_source_new(const struct opts *o, const char *password);
struct source *maildir_source_new(const struct opts *o);

/*
 * Connects, verifies TLS and logs in (mount-time check). Returns 0, or a
 * negative errno with one human line in err: -ECONNREFUSED/-EHOSTUNREACH
 * (unreachable), -EPERM (certificate), -EACCES (credentials), -EIO.
 */
int source_check(struct source *s, char *err, size_t errlen);

/* Selected mailboxes (per the mailboxes= patterns). Free with source_mailboxes_free(). */
int source_list_mailboxes(struct source *s, struct src_mailbox **out, size_t *n, char *err,
                          size_t errlen);
void source_mailboxes_free(struct src_mailbox *m, size_t n);

/*
 * Every message of mailbox with its UID, INTERNALDATE and calendar parts,
 * read-only (IMAP: EXAMINE, one UID FETCH of BODYSTRUCTURE). known, when
 * not NULL, is an earlier listing of the same mailbox: the driver then asks
 * only what changed (nothing at all when HIGHESTMODSEQ and EXISTS are
 * unchanged; else the UID list, and the structure of new UIDs only) and
 * copies the rest from known. -ENOENT when the mailbox is gone. Free out
 * with source_listing_free().
 */
int source_list_messages(struct source *s, const char *mailbox, const struct src_listing *known,
                         struct src_listing *out, char *err, size_t errlen);

/*
 * The state of mailbox (IMAP: one EXAMINE): the same UIDVALIDITY, EXISTS
 * and a non-zero HIGHESTMODSEQ mean the same listing (RFC 7162 §3.1.2: any
 * change of a message or of the set of messages raises HIGHESTMODSEQ).
 * -ENOTSUP when the source cannot tell (maildir), -ENOENT when the mailbox
 * is gone.
 */
int source_mailbox_state(struct source *s, const char *mailbox, struct src_state *out, char *err,
                         size_t errlen);

/* The message of listing l (may be NULL) with this uid, or NULL; l is sorted by uid. */
const struct src_message *source_listing_find(const struct src_listing *l, uint32_t uid);

/* A deep copy of message m into out (parts included). 0 or -ENOMEM. */
int source_message_copy(const struct src_message *m, struct src_message *out);
void source_listing_free(struct src_listing *l);

/*
 * Fetches the given parts (IMAP: BODY.PEEK[section], many messages per
 * command) and hands each to fn. -ESTALE when the mailbox's UIDVALIDITY is
 * no longer uidvalidity. Parts of messages that are gone are not reported.
 */
int source_fetch_parts(struct source *s, const char *mailbox, uint32_t uidvalidity,
                       const struct src_part_req *reqs, size_t n, src_part_fn fn, void *ctx,
                       char *err, size_t errlen);

/*
 * Asks to be told (fn(ctx), from another thread) whenever mailbox may have
 * changed, for as long as the source lives (IMAP: IDLE on a session of its
 * own). -ENOTSUP when the source cannot push.
 */
int source_watch(struct source *s, const char *mailbox, void (*fn)(void *ctx), void *ctx);

/*
 * For signal handlers (async-signal-safe): cuts every network session so
 * that requests waiting on a slow or dead server end at once; the daemon is
 * stopping.
 */
void source_interrupt_all(void);

void source_free(struct source *s);

#endif
