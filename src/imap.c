/*
 * imap.c — the IMAP driver of source.h, on libetpan.
 *
 * A small pool of sessions (connections=N), each used by one thread at a
 * time. Every session is TLS (implicit or STARTTLS, never plain), verified
 * by tls.c before LOGIN. Mailboxes are opened with EXAMINE and parts read
 * with BODY.PEEK, so no flag ever changes (RFC 3501 §6.3.2, §6.4.5).
 * A session that saw a stream or parse error is thrown away (libetpan
 * cannot resynchronise; ../shared/notes/libetpan.md §0.6, §7).
 */
#include <errno.h>
#include <libetpan/libetpan.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "imap_internal.h"
#include "log.h"
#include "opts.h"
#include "source.h"
#include "tls.h"

static const struct source_driver imap_driver;

static struct imap_src *imap_of(struct source *s)
{
    return s->impl;
}

/* ---- sessions ---------------------------------------------------------- */

/* Whether word occurs in the first len bytes of s (no NUL needed), case-insensitively. */
static int has_word(const char *s, size_t len, const char *word)
{
    size_t n = strlen(word);

    for (size_t i = 0; i + n <= len; i++)
        if (strncasecmp(s + i, word, n) == 0)
            return 1;
    return 0;
}

/*
 * Protocol trace for -d. Credentials never reach the log: libetpan marks
 * the LOGIN/AUTHENTICATE payload as private, and we mask those commands
 * whole in case a server or mechanism sends them otherwise. str is not
 * NUL-terminated.
 */
static void imap_logger(mailimap *imap, int type, const char *str, size_t size, void *ctx)
{
    const char *dir;
    int len = size > 400 ? 400 : (int)size;

    (void)imap;
    (void)ctx;
    switch (type) {
    case MAILSTREAM_LOG_TYPE_DATA_RECEIVED:
        dir = "S:";
        break;
    case MAILSTREAM_LOG_TYPE_DATA_SENT:
        dir = "C:";
        break;
    case MAILSTREAM_LOG_TYPE_DATA_SENT_PRIVATE:
        log_debug("C: <credentials masked>");
        return;
    default:
        return;
    }
    while (len > 0 && (str[len - 1] == '\n' || str[len - 1] == '\r'))
        len--;
    if (type == MAILSTREAM_LOG_TYPE_DATA_SENT &&
        (has_word(str, size, " LOGIN ") || has_word(str, size, " AUTHENTICATE "))) {
        log_debug("C: <login command masked>");
        return;
    }
    log_debug("%s %.*s%s", dir, len, str, (size_t)len < size ? " ..." : "");
}

/*
 * libetpan 1.9.4 calls a msg_att handler only when a progress callback is
 * set too (mailimap.c, mailimap_parse_response): this one does nothing.
 */
static void progress_ignored(size_t current, size_t maximum, void *ctx)
{
    (void)current;
    (void)maximum;
    (void)ctx;
}

/* Closes without LOGOUT: the session is dead or must not be used again. */
static void session_drop(struct imap_conn *c)
{
    if (c->imap == NULL)
        return;
    if (c->fd >= 0)
        imap_unregister_fd(c->fd);
    c->fd = -1;
    if (c->imap->imap_stream) {
        mailstream_close(c->imap->imap_stream);
        c->imap->imap_stream = NULL;
    }
    mailimap_free(c->imap);
    c->imap = NULL;
    free(c->selected);
    c->selected = NULL;
}

void imap_conn_drop(struct imap_conn *c)
{
    session_drop(c);
}

/* LOGOUT, then free: the polite end of a healthy session. */
static void session_close(struct imap_conn *c)
{
    if (c->imap == NULL)
        return;
    mailimap_logout(c->imap);
    session_drop(c);
}

/* Errors after which libetpan's stream is unusable (notes §7). */
static int session_broken(int r)
{
    return r == MAILIMAP_ERROR_STREAM || r == MAILIMAP_ERROR_PARSE || r == MAILIMAP_ERROR_FATAL ||
           r == MAILIMAP_ERROR_PROTOCOL || r == MAILIMAP_ERROR_MEMORY;
}

static int verify_server(struct imap_src *src, mailimap *imap, char *err, size_t errlen)
{
    carray *chain = mailstream_get_certificate_chain(imap->imap_stream);
    struct tls_der *ders = NULL;
    char why[256];
    unsigned n;
    int rc;

    n = chain ? carray_count(chain) : 0;
    if (n > 0 && (ders = calloc(n, sizeof *ders)) == NULL) {
        mailstream_certificate_chain_free(chain);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < n; i++) {
        MMAPString *der = carray_get(chain, i);

        ders[i].der = (const unsigned char *)der->str;
        ders[i].len = der->len;
    }
    rc = tls_verify_chain(ders, n, src->host, src->cafile, src->capath, why, sizeof why);
    if (rc != 0)
        snprintf(err, errlen, "TLS certificate of %s not trusted: %s", src->host, why);
    free(ders);
    if (chain)
        mailstream_certificate_chain_free(chain);
    return rc;
}

static int refresh_capabilities(mailimap *imap)
{
    struct mailimap_capability_data *caps = NULL;
    int r = mailimap_capability(imap, &caps);

    if (caps)
        mailimap_capability_data_free(caps);
    return r;
}

static int connect_error(struct imap_src *src, int r, char *err, size_t errlen)
{
    if (r == MAILIMAP_ERROR_CONNECTION_REFUSED) {
        snprintf(err, errlen, "cannot connect to %s port %u: connection refused or unreachable",
                 src->host, src->port);
        return -ECONNREFUSED;
    }
    snprintf(err, errlen, "cannot talk to %s port %u: no IMAP greeting (error %d)", src->host,
             src->port, r);
    return -EIO;
}

/*
 * TLS is ours (tls.c: OpenSSL, TLS 1.2 or newer, verified before the first
 * byte of IMAP), never libetpan's GnuTLS, which would accept TLS 1.0.
 */
static int implicit_tls_open(struct imap_src *src, mailimap *imap, const struct tls_peer *peer,
                             char *err, size_t errlen)
{
    mailstream_low *low;
    mailstream *stream;
    int fd, r;

    if ((fd = tls_connect_tcp(src->host, src->port, src->timeout, err, errlen)) < 0)
        return fd;
    if ((low = tls_stream_open(fd, peer, err, errlen)) == NULL) {
        close(fd);
        return -EPERM;
    }
    if ((stream = mailstream_new(low, 8192)) == NULL) {
        mailstream_low_close(low);
        mailstream_low_free(low);
        return -ENOMEM;
    }
    /* The session owns the stream from here, also when the greeting fails. */
    r = mailimap_connect(imap, stream);
    if (r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED && r != MAILIMAP_NO_ERROR_AUTHENTICATED)
        return connect_error(src, r, err, errlen);
    return 0;
}

/*
 * Plain connect, STARTTLS (required: no fallback to plaintext), then our TLS
 * on the same socket in place of libetpan's plain driver. libetpan's
 * mailimap_starttls() refuses bytes sent after the OK (CVE-2020-15953).
 */
static int starttls_open(struct imap_src *src, mailimap *imap, const struct tls_peer *peer,
                         char *err, size_t errlen)
{
    mailstream_low *plain, *low;
    int r;

    r = mailimap_socket_connect(imap, src->host, (uint16_t)src->port);
    if (r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED && r != MAILIMAP_NO_ERROR_AUTHENTICATED)
        return connect_error(src, r, err, errlen);
    if (refresh_capabilities(imap) != MAILIMAP_NO_ERROR ||
        !mailimap_has_extension(imap, "STARTTLS")) {
        snprintf(err, errlen,
                 "%s port %u does not offer STARTTLS; refusing to continue without TLS", src->host,
                 src->port);
        return -EPERM;
    }
    if ((r = mailimap_starttls(imap)) != MAILIMAP_NO_ERROR) {
        snprintf(err, errlen, "STARTTLS with %s port %u failed (error %d)", src->host, src->port,
                 r);
        return -EPERM;
    }
    plain = mailstream_get_low(imap->imap_stream);
    if ((low = tls_stream_open(mailstream_low_get_fd(plain), peer, err, errlen)) == NULL)
        return -EPERM; /* the plain stream still owns the socket */
    /* Frees the plain driver, not the socket, which the TLS driver now owns. */
    mailstream_low_free(plain);
    mailstream_set_low(imap->imap_stream, low);
    return 0;
}

static int transport_open(struct imap_src *src, mailimap *imap, char *err, size_t errlen)
{
    struct tls_peer peer = {src->host, src->cafile, src->capath, src->timeout};

    return src->starttls ? starttls_open(src, imap, &peer, err, errlen)
                         : implicit_tls_open(src, imap, &peer, err, errlen);
}

enum login_method {
    LOGIN_COMMAND,
    LOGIN_SASL_PLAIN,
    LOGIN_XOAUTH2,
};

static const char *const login_method_names[] = {"LOGIN", "AUTHENTICATE PLAIN",
                                                 "AUTHENTICATE XOAUTH2"};

/*
 * Picks how to log in from auth= and what the server offers: AUTHENTICATE
 * PLAIN when offered (RFC 4616; through Cyrus SASL, which needs its PLAIN
 * module), else LOGIN, never LOGIN under LOGINDISABLED (RFC 3501 §6.2.3).
 */
static int login_method(struct imap_src *src, mailimap *imap, char *err, size_t errlen)
{
    int plain = mailimap_has_authentication(imap, "PLAIN");
    int login_ok = !mailimap_has_extension(imap, "LOGINDISABLED");
    const char *want = src->auth;

    if (want && strcmp(want, "xoauth2") == 0) {
        if (!mailimap_has_authentication(imap, "XOAUTH2")) {
            snprintf(err, errlen, "%s does not offer AUTH=XOAUTH2 (auth=xoauth2)", src->host);
            return -EACCES;
        }
        return LOGIN_XOAUTH2;
    }
    if ((want && strcmp(want, "plain") == 0) || (want == NULL && plain && !login_ok)) {
        if (!plain) {
            snprintf(err, errlen, "%s does not offer AUTH=PLAIN (auth=plain)", src->host);
            return -EACCES;
        }
        if (!src->sasl_plain_ok) {
            snprintf(err, errlen,
                     "AUTHENTICATE PLAIN needs Cyrus SASL's PLAIN module (libsasl2-modules)");
            return -EACCES;
        }
        return LOGIN_SASL_PLAIN;
    }
    if (want == NULL && plain && src->sasl_plain_ok)
        return LOGIN_SASL_PLAIN;
    if (!login_ok) {
        snprintf(err, errlen, "%s refuses LOGIN (LOGINDISABLED)%s", src->host,
                 want ? "" : " and offers no AUTH=PLAIN");
        return -EACCES;
    }
    return LOGIN_COMMAND;
}

static int login(struct imap_src *src, mailimap *imap, char *err, size_t errlen)
{
    const char *how;
    int r, method;

    /* The greeting's capabilities may be pre-TLS or partial: ask again. */
    if ((r = refresh_capabilities(imap)) != MAILIMAP_NO_ERROR) {
        snprintf(err, errlen, "CAPABILITY failed on %s (error %d)", src->host, r);
        return -EIO;
    }
    if ((method = login_method(src, imap, err, errlen)) < 0)
        return method;
    how = login_method_names[method];
    /* The protocol trace masks the command itself (imap_logger). */
    log_debug("logging in to %s as %s with %s", src->host, src->user, how);
    if (method == LOGIN_XOAUTH2)
        r = mailimap_oauth2_authenticate(imap, src->user, src->password);
    else if (method == LOGIN_SASL_PLAIN)
        r = mailimap_authenticate(imap, "PLAIN", src->host, NULL, NULL, src->user, src->user,
                                  src->password, NULL);
    else
        r = mailimap_login(imap, src->user, src->password);
    if (r == MAILIMAP_NO_ERROR)
        return 0;
    if (session_broken(r)) {
        snprintf(err, errlen, "%s: connection lost during %s (error %d)", src->host, how, r);
        return -EIO;
    }
    snprintf(err, errlen, "login as %s on %s failed (%s): %s", src->user, src->host, how,
             imap->imap_response ? imap->imap_response : "no reason given");
    return -EACCES;
}

/* A connected, verified, logged-in session in c, or an error. */
static int session_open(struct imap_src *src, struct imap_conn *c, char *err, size_t errlen)
{
    mailimap *imap;
    int rc;

    /* Stopping: no new connection (its handshake would wait out the timeout). */
    if (imap_stopping()) {
        snprintf(err, errlen, "%s: not connecting: stopping", src->host);
        return -ESHUTDOWN;
    }
    if ((imap = mailimap_new(0, NULL)) == NULL)
        return -ENOMEM;
    /* Read when the stream is created, so it must come before connecting. */
    mailimap_set_timeout(imap, src->timeout);
    if (log_debug_enabled())
        mailimap_set_logger(imap, imap_logger, NULL);
    mailimap_set_progress_callback(imap, NULL, progress_ignored, NULL);
    c->imap = imap;
    memset(&c->guard, 0, sizeof c->guard);
    c->guard.op_budget = IMAP_OP_BUDGET;
    if ((rc = transport_open(src, imap, err, errlen)) != 0 ||
        (rc = verify_server(src, imap, err, errlen)) != 0) {
        session_drop(c);
        return rc;
    }
    if (imap_guard_install(imap, &c->guard) != 0) {
        session_drop(c);
        return -ENOMEM;
    }
    c->guard.timeout = src->timeout;
    imap_guard_restart(&c->guard);
    c->fd = mailstream_low_get_fd(mailstream_get_low(imap->imap_stream));
    if (c->fd >= 0)
        imap_register_fd(c->fd);
    if ((rc = login(src, imap, err, errlen)) != 0) {
        session_drop(c);
        return rc;
    }
    if ((src->has_condstore = mailimap_has_condstore(imap)) != 0)
        log_debug("server offers CONDSTORE");
    return 0;
}

/* Takes a free connection slot, waiting while all are busy. */
static struct imap_conn *conn_acquire(struct imap_src *src)
{
    struct imap_conn *c = NULL;

    pthread_mutex_lock(&src->lock);
    for (;;) {
        /* Prefer a slot with a live session. */
        for (size_t i = 0; i < src->nconns; i++)
            if (!src->conns[i].busy && (c == NULL || (c->imap == NULL && src->conns[i].imap)))
                c = &src->conns[i];
        if (c)
            break;
        pthread_cond_wait(&src->cond, &src->lock);
    }
    c->busy = 1;
    pthread_mutex_unlock(&src->lock);
    return c;
}

static void conn_release(struct imap_src *src, struct imap_conn *c)
{
    pthread_mutex_lock(&src->lock);
    c->busy = 0;
    pthread_cond_signal(&src->cond);
    pthread_mutex_unlock(&src->lock);
}

int imap_conn_ready(struct imap_src *src, struct imap_conn *c, char *err, size_t errlen)
{
    if (c->imap)
        return 0;
    return session_open(src, c, err, errlen);
}

/*
 * EXAMINE mailbox on c unless it is already the selected one. Fills the
 * selection state (UIDVALIDITY, EXISTS, HIGHESTMODSEQ when offered).
 */
int imap_conn_examine(struct imap_src *src, struct imap_conn *c, const char *mailbox, int force,
                      char *err, size_t errlen)
{
    uint64_t modseq = 0;
    int r;

    if (!force && c->selected && strcmp(c->selected, mailbox) == 0)
        return 0;
    free(c->selected);
    c->selected = NULL;
    if (src->has_condstore)
        r = mailimap_examine_condstore(c->imap, mailbox, &modseq);
    else
        r = mailimap_examine(c->imap, mailbox);
    if (r != MAILIMAP_NO_ERROR) {
        if (session_broken(r)) {
            snprintf(err, errlen, "connection to %s lost (EXAMINE %s, error %d)", src->host,
                     mailbox, r);
            session_drop(c);
            return -EIO;
        }
        snprintf(err, errlen, "EXAMINE %s failed: %s", mailbox,
                 c->imap->imap_response ? c->imap->imap_response : "no reason given");
        return -ENOENT;
    }
    if (c->imap->imap_selection_info == NULL) {
        snprintf(err, errlen, "EXAMINE %s gave no mailbox state", mailbox);
        return -EIO;
    }
    c->uidvalidity = c->imap->imap_selection_info->sel_uidvalidity;
    c->exists = c->imap->imap_selection_info->sel_exists;
    c->highestmodseq = modseq;
    if ((c->selected = strdup(mailbox)) == NULL)
        return -ENOMEM;
    return 0;
}

/*
 * Runs op on a ready session; when the session breaks (server restart,
 * timeout) it is dropped and op runs once more on a fresh one. Every
 * operation here is a read, so repeating it is safe.
 */
int imap_with_session(struct imap_src *src, imap_op_fn op, void *arg, char *err, size_t errlen)
{
    struct imap_conn *c = conn_acquire(src);
    int rc = -EIO;

    for (int attempt = 0; attempt < 2; attempt++) {
        struct timespec t0, t1;

        if ((rc = imap_conn_ready(src, c, err, errlen)) != 0)
            break;
        imap_guard_restart(&c->guard);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = op(src, c, arg, err, errlen);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc != -EPIPE)
            break;
        /* A server that stalled until the timeout would only stall again. */
        if (t1.tv_sec - t0.tv_sec >= (time_t)src->timeout || imap_stopping())
            break;
        /* op saw a broken stream and dropped the session: try a new one. */
        log_info("%s: %s; reconnecting", src->host, err);
    }
    if (rc == -EPIPE || rc == -EBADMSG)
        rc = -EIO;
    conn_release(src, c);
    return rc;
}

int imap_conn_reopen(struct imap_src *src, struct imap_conn *c, const char *mailbox, char *err,
                     size_t errlen)
{
    int rc;

    session_drop(c);
    if ((rc = imap_conn_ready(src, c, err, errlen)) != 0)
        return rc;
    imap_guard_restart(&c->guard);
    return imap_conn_examine(src, c, mailbox, 1, err, errlen);
}

static const char *guard_reason(int tripped)
{
    switch (tripped) {
    case IMAP_GUARD_BUDGET:
        return "more data than one operation may bring";
    case IMAP_GUARD_LITERAL:
        return "a literal larger than 64 MiB";
    case IMAP_GUARD_NESTING:
        return "parentheses nested deeper than 128";
    case IMAP_GUARD_LINE:
        return "a line longer than 8 MiB";
    default:
        return "unreadable";
    }
}

/* Called by operations when libetpan returned r: drops a broken session. */
int imap_command_failed(struct imap_src *src, struct imap_conn *c, int r, const char *what,
                        char *err, size_t errlen)
{
    if (c->imap &&
        (c->guard.tripped == IMAP_GUARD_SLOW || c->guard.tripped == IMAP_GUARD_STOPPING)) {
        snprintf(err, errlen, "%s: %s %s", src->host, what,
                 c->guard.tripped == IMAP_GUARD_SLOW ? "too slow: the server stalls"
                                                     : "interrupted: stopping");
        c->guard.tripped = 0;
        session_drop(c);
        return -EPIPE;
    }
    if (c->imap && c->guard.tripped) {
        snprintf(err, errlen, "%s: response of %s refused: %s", src->host, what,
                 guard_reason(c->guard.tripped));
        c->guard.tripped = 0;
        session_drop(c);
        return -EBADMSG;
    }
    if (r == MAILIMAP_ERROR_PARSE) {
        snprintf(err, errlen, "%s: cannot parse the response to %s", src->host, what);
        session_drop(c);
        return -EBADMSG;
    }
    if (session_broken(r)) {
        snprintf(err, errlen, "connection to %s lost during %s (error %d)", src->host, what, r);
        session_drop(c);
        return -EPIPE;
    }
    snprintf(err, errlen, "%s failed: %s", what,
             c->imap && c->imap->imap_response ? c->imap->imap_response : "no reason given");
    return -EIO;
}

/* ---- driver operations ------------------------------------------------- */

/*
 * The login succeeded: the session stays in the pool for the first read
 * after the mount, which would otherwise pay for another TLS handshake and
 * LOGIN. fuse_daemonize() forks next; its parent leaves with _exit()
 * (libfuse helper.c) and so never writes to the socket or shuts the TLS
 * session down: the child alone owns it. A session the server closed
 * meanwhile is found broken at its first command and opened again
 * (imap_with_session).
 */
static int check_op(struct imap_src *src, struct imap_conn *c, void *arg, char *err, size_t errlen)
{
    (void)src;
    (void)c;
    (void)arg;
    (void)err;
    (void)errlen;
    return 0;
}

static int imap_check(struct source *s, char *err, size_t errlen)
{
    struct imap_src *src = imap_of(s);

    /* A search= the server could not run is an error now, not at first read. */
    if (src->search) {
        struct mailimap_search_key *key = NULL;
        int rc = imap_search_key(src->search, &key, err, errlen);

        if (rc != 0)
            return rc;
        mailimap_search_key_free(key);
    }
    return imap_with_session(src, check_op, NULL, err, errlen);
}

static void imap_free(struct source *s)
{
    struct imap_src *src = imap_of(s);

    imap_unwatch_all(src);
    for (size_t i = 0; src->conns && i < src->nconns; i++)
        session_close(&src->conns[i]);
    free(src->conns);
    free(src->host);
    free(src->user);
    if (src->password) {
        explicit_bzero(src->password, strlen(src->password));
        free(src->password);
    }
    free(src->cafile);
    free(src->capath);
    free(src->auth);
    free(src->patterns);
    free(src->search);
    pthread_mutex_destroy(&src->lock);
    pthread_cond_destroy(&src->cond);
    free(src);
    free(s);
}

static const struct source_driver imap_driver = {
    .name = "imap",
    .check = imap_check,
    .list_mailboxes = imap_list_mailboxes,
    .list_messages = imap_list_messages,
    .state = imap_mailbox_state,
    .fetch_parts = imap_fetch_parts,
    .watch = imap_watch,
    .free = imap_free,
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

struct source *imap_source_new(const struct opts *o, const char *password)
{
    struct source *s = calloc(1, sizeof *s);
    struct imap_src *src = calloc(1, sizeof *src);

    if (s == NULL || src == NULL)
        goto fail;
    s->drv = &imap_driver;
    s->impl = src;
    pthread_mutex_init(&src->lock, NULL);
    pthread_cond_init(&src->cond, NULL);
    src->host = strdup(o->host);
    src->user = strdup(o->user);
    src->password = strdup(password ? password : "");
    src->cafile = dup_or_null(o->cafile);
    src->capath = dup_or_null(o->capath);
    src->auth = dup_or_null(o->auth);
    src->patterns = strdup(o->mailboxes);
    src->search = dup_or_null(o->search);
    src->port = o->port;
    src->timeout = o->timeout;
    src->starttls = o->kind == OPTS_SRC_STARTTLS;
    src->sasl_plain_ok = imap_sasl_plain_available();
    src->nconns = o->connections;
    src->conns = calloc(src->nconns, sizeof *src->conns);
    for (size_t i = 0; src->conns && i < src->nconns; i++)
        src->conns[i].fd = -1;
    if (!src->host || !src->user || !src->password || !src->patterns || !src->conns)
        goto fail;
    return s;
fail:
    if (s && src) {
        imap_free(s);
        return NULL;
    }
    free(src);
    free(s);
    return NULL;
}
