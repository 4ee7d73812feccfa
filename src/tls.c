/*
 * tls.c — the encrypted transport: TCP connect, the TLS handshake with
 * OpenSSL, certificate verification, and the libetpan stream driver that
 * carries IMAP over it.
 *
 * Debian's libetpan does TLS with GnuTLS and offers no way to set its
 * priority: its callback runs before it calls gnutls_priority_set_direct(
 * "NORMAL"), which allows TLS 1.0 and 1.1 (../shared/notes/libetpan.md §1),
 * and no API tells the negotiated version afterwards. So libetpan never
 * sees the TLS layer here: it reads and writes through tls_driver below.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libetpan/libetpan.h>
#include <limits.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int tls_host_is_ip(const char *host)
{
    unsigned char buf[16];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* ---- verification -------------------------------------------------------- */

static int load_trust(X509_STORE *store, const char *cafile, const char *capath, char *err,
                      size_t errlen)
{
    if (cafile == NULL && capath == NULL) {
        /* OpenSSL's default paths; SSL_CERT_FILE and SSL_CERT_DIR override them. */
        if (X509_STORE_set_default_paths(store) != 1) {
            snprintf(err, errlen, "cannot load the system CA store");
            return -1;
        }
        return 0;
    }
    if (X509_STORE_load_locations(store, cafile, capath) != 1) {
        snprintf(err, errlen, "cannot load CA certificates from %s", cafile ? cafile : capath);
        return -1;
    }
    return 0;
}

/* Verifies leaf (with the intermediates the server sent) for host. */
static int verify_x509(X509 *leaf, STACK_OF(X509) * untrusted, const char *host, const char *cafile,
                       const char *capath, char *err, size_t errlen)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_VERIFY_PARAM *param;
    int rc = -EPERM;

    if (store == NULL || ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (load_trust(store, cafile, capath, err, errlen) != 0)
        goto out;
    if (X509_STORE_CTX_init(ctx, store, leaf, untrusted) != 1) {
        snprintf(err, errlen, "cannot set up certificate verification");
        goto out;
    }
    param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    /* Setting the name here makes X509_verify_cert() do the RFC 6125 check. */
    if (tls_host_is_ip(host))
        X509_VERIFY_PARAM_set1_ip_asc(param, host);
    else
        X509_VERIFY_PARAM_set1_host(param, host, 0);
    if (X509_verify_cert(ctx) == 1)
        rc = 0;
    else
        snprintf(err, errlen, "%s", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    ERR_clear_error();
    return rc;
}

int tls_verify_chain(const struct tls_der *chain, size_t n, const char *host, const char *cafile,
                     const char *capath, char *err, size_t errlen)
{
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509 *leaf = NULL;
    int rc = -EPERM;

    if (untrusted == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (n == 0) {
        snprintf(err, errlen, "the server sent no certificate");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = chain[i].der;
        X509 *x = d2i_X509(NULL, &p, (long)chain[i].len);

        if (x == NULL) {
            snprintf(err, errlen, "the server sent an unreadable certificate");
            goto out;
        }
        if (i == 0)
            leaf = x;
        else if (!sk_X509_push(untrusted, x)) {
            X509_free(x);
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    rc = verify_x509(leaf, untrusted, host, cafile, capath, err, errlen);
out:
    X509_free(leaf);
    sk_X509_pop_free(untrusted, X509_free);
    ERR_clear_error();
    return rc;
}

/* ---- waiting with a timeout ---------------------------------------------- */

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or the deadline passes: 0, or -ETIMEDOUT/-errno. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        long long left = deadline - now_ms();
        int r;

        if (left <= 0)
            return -ETIMEDOUT;
        r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0)
            return 0;
        if (r == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

/* The deadline of one read or write on s: libetpan's timeout, as its own drivers use it. */
static long long stream_deadline(const mailstream_low *s)
{
    if (s->timeout)
        return now_ms() + (long long)s->timeout * 1000;
    return now_ms() + (long long)mailstream_network_delay.tv_sec * 1000 +
           mailstream_network_delay.tv_usec / 1000;
}

/* ---- TCP ------------------------------------------------------------------- */

/* Non-blocking connect to one address, finished within the deadline. */
static int connect_one(const struct addrinfo *ai, long long deadline)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int soerr = 0, rc;
    socklen_t len = sizeof soerr;

    if (fd < 0)
        return -errno;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        rc = -errno;
        goto fail;
    }
    if ((rc = wait_fd(fd, POLLOUT, deadline)) != 0)
        goto fail;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
        rc = -errno;
        goto fail;
    }
    if (soerr == 0)
        return fd;
    rc = -soerr;
fail:
    close(fd);
    return rc;
}

int tls_connect_tcp(const char *host, unsigned port, unsigned timeout, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    long long deadline = now_ms() + (long long)timeout * 1000;
    char service[16];
    int r, fd = -ECONNREFUSED;

    snprintf(service, sizeof service, "%u", port);
    if ((r = getaddrinfo(host, service, &hints, &res)) != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(r));
        return -EHOSTUNREACH;
    }
    /* Every address in turn (localhost may be ::1 first, the server on 127.0.0.1 only). */
    for (ai = res; ai; ai = ai->ai_next)
        if ((fd = connect_one(ai, deadline)) >= 0 || fd == -ETIMEDOUT)
            break;
    freeaddrinfo(res);
    if (fd == -ETIMEDOUT)
        snprintf(err, errlen, "cannot connect to %s port %u: no answer within %u s", host, port,
                 timeout);
    else if (fd < 0)
        snprintf(err, errlen, "cannot connect to %s port %u: %s", host, port, strerror(-fd));
    return fd;
}

/* ---- the stream driver ------------------------------------------------------ */

struct tls_stream {
    SSL *ssl;
    int fd;
};

/*
 * Runs one SSL operation to completion (waiting for the socket as OpenSSL
 * asks) or failure. Returns op's positive result, or -1 when the stream is
 * dead: closed (also by close_notify: IMAP has nothing more after it), broken
 * or timed out. Never 0: libetpan 1.9.4 loops forever on a read of 0 inside a
 * literal (notes §0.5).
 */
static int ssl_io(struct tls_stream *t, long long deadline, int (*op)(SSL *, void *, int),
                  void *buf, int len)
{
    for (;;) {
        int n, e;

        ERR_clear_error();
        if ((n = op(t->ssl, buf, len)) > 0)
            return n;
        e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ) {
            if (wait_fd(t->fd, POLLIN, deadline) != 0)
                return -1;
        } else if (e == SSL_ERROR_WANT_WRITE) {
            if (wait_fd(t->fd, POLLOUT, deadline) != 0)
                return -1;
        } else {
            ERR_clear_error();
            return -1;
        }
    }
}

static int op_read(SSL *ssl, void *buf, int len)
{
    return SSL_read(ssl, buf, len);
}

static int op_write(SSL *ssl, void *buf, int len)
{
    return SSL_write(ssl, buf, len);
}

static ssize_t tls_read(mailstream_low *s, void *buf, size_t count)
{
    struct tls_stream *t = s->data;

    if (t->fd < 0)
        return -1;
    return ssl_io(t, stream_deadline(s), op_read, buf, count > INT_MAX ? INT_MAX : (int)count);
}

/* Writes everything or fails (SSL_write without partial writes). */
static ssize_t tls_write(mailstream_low *s, const void *buf, size_t count)
{
    struct tls_stream *t = s->data;

    if (t->fd < 0)
        return -1;
    if (count == 0)
        return 0;
    return ssl_io(t, stream_deadline(s), op_write, (void *)buf,
                  count > INT_MAX ? INT_MAX : (int)count);
}

static int tls_close(mailstream_low *s)
{
    struct tls_stream *t = s->data;

    if (t->fd >= 0) {
        /* close_notify, best effort: the socket is non-blocking, nothing waits. */
        SSL_shutdown(t->ssl);
        ERR_clear_error();
        close(t->fd);
        t->fd = -1;
    }
    return 0;
}

static int tls_get_fd(mailstream_low *s)
{
    struct tls_stream *t = s->data;

    return t->fd;
}

static void tls_free(mailstream_low *s)
{
    struct tls_stream *t = s->data;

    tls_close(s);
    SSL_free(t->ssl);
    free(t);
    free(s);
}

static void tls_cancel(mailstream_low *s)
{
    (void)s;
}

static struct mailstream_cancel *tls_get_cancel(mailstream_low *s)
{
    (void)s;
    return NULL;
}

/* The chain as libetpan's own TLS drivers give it: DER strings, leaf first. */
static carray *tls_get_certificate_chain(mailstream_low *s)
{
    struct tls_stream *t = s->data;
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(t->ssl);
    carray *out;

    if (chain == NULL || (out = carray_new(4)) == NULL)
        return NULL;
    for (int i = 0; i < sk_X509_num(chain); i++) {
        unsigned char *der = NULL;
        int len = i2d_X509(sk_X509_value(chain, i), &der);
        MMAPString *str = len > 0 ? mmap_string_new_len((char *)der, (size_t)len) : NULL;

        OPENSSL_free(der);
        if (str == NULL || carray_add(out, str, NULL) != 0) {
            if (str)
                mmap_string_free(str);
            mailstream_certificate_chain_free(out);
            return NULL;
        }
    }
    return out;
}

static mailstream_low_driver tls_driver = {
    .mailstream_read = tls_read,
    .mailstream_write = tls_write,
    .mailstream_close = tls_close,
    .mailstream_get_fd = tls_get_fd,
    .mailstream_free = tls_free,
    .mailstream_cancel = tls_cancel,
    .mailstream_get_cancel = tls_get_cancel,
    .mailstream_get_certificate_chain = tls_get_certificate_chain,
};

/* ---- the handshake ---------------------------------------------------------- */

/*
 * Why SSL_connect failed, in words. A server without TLS 1.2 either says so
 * (a protocol_version alert) or just hangs up on our ClientHello: both get
 * the hint, as does any failure before the server's hello arrived.
 */
static void handshake_error(SSL *ssl, const struct tls_peer *p, int ssl_err, char *err,
                            size_t errlen)
{
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_REASON(e);
    const char *why = e ? ERR_reason_error_string(e) : NULL, *hint = "";
    int versions = reason == SSL_R_UNSUPPORTED_PROTOCOL || reason == SSL_R_NO_PROTOCOLS_AVAILABLE ||
                   reason == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION ||
                   reason == SSL_R_WRONG_SSL_VERSION || reason == SSL_R_VERSION_TOO_LOW ||
                   SSL_get_state(ssl) == TLS_ST_CW_CLNT_HELLO;

    if (why == NULL)
        why = ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN
                  ? "the server closed the connection"
                  : "no reason given";
    /* A plaintext greeting read as a TLS record. */
    if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG)
        hint = " (the server does not speak TLS there)";
    else if (versions)
        hint = " (imapcalfs needs TLS 1.2 or newer)";
    snprintf(err, errlen, "TLS handshake with %s failed: %s%s", p->host, why, hint);
}

static int handshake(SSL *ssl, int fd, const struct tls_peer *p, char *err, size_t errlen)
{
    long long deadline = now_ms() + (long long)p->timeout * 1000;

    for (;;) {
        int r, e;

        ERR_clear_error();
        if ((r = SSL_connect(ssl)) == 1)
            return 0;
        e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (wait_fd(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) == 0)
                continue;
            snprintf(err, errlen, "TLS handshake with %s: no answer within %u s", p->host,
                     p->timeout);
            return -ETIMEDOUT;
        }
        handshake_error(ssl, p, e, err, errlen);
        return -EPERM;
    }
}

/* The server's chain, verified for p->host; the reason in err. */
static int verify_peer(SSL *ssl, const struct tls_peer *p, char *err, size_t errlen)
{
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    X509 *leaf = SSL_get0_peer_certificate(ssl);
    STACK_OF(X509) * untrusted;
    char why[256];
    int rc;

    if (leaf == NULL || chain == NULL) {
        snprintf(err, errlen, "TLS certificate of %s not trusted: the server sent none", p->host);
        return -EPERM;
    }
    /* On the client side the peer's chain holds the leaf too: the rest are intermediates. */
    if ((untrusted = sk_X509_dup(chain)) == NULL)
        return -ENOMEM;
    sk_X509_delete_ptr(untrusted, leaf);
    rc = verify_x509(leaf, untrusted, p->host, p->cafile, p->capath, why, sizeof why);
    sk_X509_free(untrusted);
    if (rc != 0)
        snprintf(err, errlen, "TLS certificate of %s not trusted: %s", p->host, why);
    return rc;
}

struct _mailstream_low *tls_stream_open(int fd, const struct tls_peer *p, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    struct tls_stream *t = NULL;
    mailstream_low *low = NULL;
    SSL *ssl = NULL;
    int flags;

    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        (ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1) {
        snprintf(err, errlen, "cannot set up TLS");
        goto fail;
    }
    /* SNI names the host; RFC 6066 §3 forbids IP literals there. */
    if (!tls_host_is_ip(p->host) && SSL_set_tlsext_host_name(ssl, p->host) != 1) {
        snprintf(err, errlen, "cannot set up TLS for %s", p->host);
        goto fail;
    }
    if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "cannot set up TLS: %s", strerror(errno));
        goto fail;
    }
    /* Both before any byte of IMAP is read: the greeting comes from a verified peer. */
    if (handshake(ssl, fd, p, err, errlen) != 0 || verify_peer(ssl, p, err, errlen) != 0)
        goto fail;
    /* Belt and braces: the minimum above is the rule, this is its check. */
    if (SSL_version(ssl) < TLS1_2_VERSION) {
        snprintf(err, errlen, "TLS with %s: %s negotiated, imapcalfs needs TLS 1.2 or newer",
                 p->host, SSL_get_version(ssl));
        goto fail;
    }
    if ((t = calloc(1, sizeof *t)) == NULL || (low = mailstream_low_new(t, &tls_driver)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    t->ssl = ssl;
    t->fd = fd;
    mailstream_low_set_timeout(low, p->timeout);
    SSL_CTX_free(ctx); /* the SSL keeps its own reference */
    return low;
fail:
    free(t);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}
