/*
 * imap_internal.h — what the files of the IMAP driver share (imap.c:
 * sessions and the pool; imap_fetch.c: LIST, listing and part fetches).
 * Not for other modules: they use source.h.
 */
#ifndef IMAPCALFS_IMAP_INTERNAL_H
#define IMAPCALFS_IMAP_INTERNAL_H

#include <libetpan/libetpan.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct source;
struct src_mailbox;
struct src_listing;
struct src_part_req;
struct src_state;

/*
 * Limits on what a server may send (imap_guard.c): one literal, the depth
 * of parentheses in one response line, and all bytes of one operation.
 * Documented in the man page (LIMITS).
 */
#define IMAP_MAX_LITERAL (64u << 20)
#define IMAP_MAX_NESTING 128
#define IMAP_OP_BUDGET (1024ull << 20)
#define IMAP_MAX_LINE (8u << 20)
/* Slower than this on average after `timeout` seconds is a stalled server. */
#define IMAP_MIN_RATE 1024

enum imap_guard_trip {
    IMAP_GUARD_OK,
    IMAP_GUARD_BUDGET,
    IMAP_GUARD_LITERAL,
    IMAP_GUARD_NESTING,
    IMAP_GUARD_LINE,
    IMAP_GUARD_SLOW,
    IMAP_GUARD_STOPPING,
};

struct imap_guard_stats {
    uint64_t received;    /* bytes from the server on this session */
    uint64_t op_received; /* ... during the current operation */
    uint64_t op_budget;
    struct timespec op_start; /* when the current operation began */
    unsigned timeout;         /* seconds: see IMAP_MIN_RATE */
    int tripped;              /* enum imap_guard_trip: why the guard failed a read */
};

/* A new operation begins on this session: its byte budget and clock restart. */
void imap_guard_restart(struct imap_guard_stats *g);

/*
 * Sockets of live sessions, so that a signal handler can cut them all
 * (imap_interrupt_all, async-signal-safe) and the daemon stops at once
 * instead of waiting out a slow server.
 */
void imap_register_fd(int fd);
void imap_unregister_fd(int fd);
/* Nonzero once imap_interrupt_all() ran. */
int imap_stopping(void);

/* Puts the guard under libetpan's stream of imap (after TLS is up). */
int imap_guard_install(mailimap *imap, struct imap_guard_stats *stats);

struct imap_conn {
    mailimap *imap;         /* NULL until connected, and after a drop */
    char *selected;         /* mailbox EXAMINEd on this session, or NULL */
    uint32_t uidvalidity;   /* of the selected mailbox */
    uint32_t exists;        /* EXISTS at EXAMINE time */
    uint64_t highestmodseq; /* 0 without CONDSTORE */
    int busy;               /* taken by a thread (under imap_src.lock) */
    int fd;                 /* the session's socket, registered for interrupts; -1 */
    struct imap_guard_stats guard;
};

struct imap_src {
    char *host, *user, *password, *cafile, *capath, *auth, *patterns, *search;
    unsigned port, timeout;
    int starttls;
    int sasl_plain_ok; /* Cyrus SASL's PLAIN plugin is installed */
    int has_condstore;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct imap_conn *conns;
    size_t nconns;
    struct imap_watch *watches; /* IDLE threads (under lock) */
};

/*
 * An operation run by imap_with_session() on a ready session. Returns 0,
 * a negative errno, or -EPIPE after it dropped a broken session (the
 * caller then retries once on a new one).
 */
typedef int (*imap_op_fn)(struct imap_src *src, struct imap_conn *c, void *arg, char *err,
                          size_t errlen);

int imap_with_session(struct imap_src *src, imap_op_fn op, void *arg, char *err, size_t errlen);
int imap_conn_ready(struct imap_src *src, struct imap_conn *c, char *err, size_t errlen);
int imap_conn_examine(struct imap_src *src, struct imap_conn *c, const char *mailbox, int force,
                      char *err, size_t errlen);
/*
 * Classifies libetpan's result r of command `what` and writes err. Returns
 * -EBADMSG when the server's response could not be read (unparseable, or
 * refused by the guard: the session is dropped, and the caller may bisect
 * to find the message at fault), -EPIPE when the connection broke (dropped;
 * worth one retry), -EIO for a NO/BAD answer.
 */
int imap_command_failed(struct imap_src *src, struct imap_conn *c, int r, const char *what,
                        char *err, size_t errlen);

/* A fresh session on c with mailbox EXAMINEd again, after a drop. */
int imap_conn_reopen(struct imap_src *src, struct imap_conn *c, const char *mailbox, char *err,
                     size_t errlen);
int imap_sasl_plain_available(void);
/* Closes a session without LOGOUT (dead, or not worth waiting for). */
void imap_conn_drop(struct imap_conn *c);

/* imap_idle.c: IDLE watchers (-o idle). */
struct imap_watch;
typedef void (*src_change_fn)(void *ctx);
int imap_watch(struct source *s, const char *mailbox, src_change_fn fn, void *ctx);
void imap_unwatch_all(struct imap_src *src);

/* Driver operations of imap_fetch.c. */
int imap_list_mailboxes(struct source *s, struct src_mailbox **out, size_t *n, char *err,
                        size_t errlen);
int imap_list_messages(struct source *s, const char *mailbox, const struct src_listing *known,
                       struct src_listing *out, char *err, size_t errlen);
int imap_mailbox_state(struct source *s, const char *mailbox, struct src_state *out, char *err,
                       size_t errlen);

/*
 * The search= keys (RFC 3501 §6.4.4 syntax, e.g. "SINCE 1-Jan-2026 FROM
 * boss@example.org") as a libetpan search key; NULL keys give ALL.
 * Returns 0, -EINVAL with the reason in err, or -ENOMEM.
 */
struct mailimap_search_key;
int imap_search_key(const char *keys, struct mailimap_search_key **out, char *err, size_t errlen);
int imap_fetch_parts(struct source *s, const char *mailbox, uint32_t uidvalidity,
                     const struct src_part_req *reqs, size_t n,
                     int (*fn)(void *ctx, size_t index, const char *data, size_t len), void *ctx,
                     char *err, size_t errlen);

#endif
