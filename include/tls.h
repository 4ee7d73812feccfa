/*
 * tls.h — the encrypted transport to the server, and whether to trust it.
 *
 * Owns: the TCP connection, the TLS handshake (OpenSSL, TLS 1.2 or newer,
 * SNI), certificate verification against the system store or
 * cafile/capath, host name or IP address included (RFC 6125), all before
 * any byte of IMAP is read, and the libetpan stream driver over it.
 * libetpan's own TLS (GnuTLS on Debian) is never used: it verifies nothing
 * and negotiates TLS 1.0. Never sends credentials. Thread-safe.
 */
#ifndef IMAPCALFS_TLS_H
#define IMAPCALFS_TLS_H

#include <stddef.h>

struct _mailstream_low; /* libetpan's mailstream_low */

struct tls_der {
    const unsigned char *der;
    size_t len;
};

/* Whom to expect at the other end, and whom to trust for saying so. */
struct tls_peer {
    const char *host;   /* DNS name or IP literal the certificate must name */
    const char *cafile; /* cafile and capath NULL: the system store */
    const char *capath;
    unsigned timeout; /* seconds: the handshake, then each read or write */
};

/*
 * Verifies chain[0] (the server's certificate; the rest are intermediates
 * it sent) for host, which may be a DNS name or an IP literal. cafile and
 * capath may be NULL (then the system store is used). Returns 0 when the
 * chain is trusted, or -EPERM with the reason in err (e.g. "certificate has
 * expired", "hostname mismatch").
 */
int tls_verify_chain(const struct tls_der *chain, size_t n, const char *host, const char *cafile,
                     const char *capath, char *err, size_t errlen);

/* Nonzero when host is an IPv4 or IPv6 literal (no SNI, IP SAN check). */
int tls_host_is_ip(const char *host);

/*
 * Connects to host:port (every address it resolves to, in order) within
 * timeout seconds. Returns the socket (close-on-exec, non-blocking), or a
 * negative errno with one line in err.
 */
int tls_connect_tcp(const char *host, unsigned port, unsigned timeout, char *err, size_t errlen);

/*
 * Runs the TLS client handshake on the connected socket fd and verifies
 * the server's certificate for p->host. Returns a libetpan stream driver
 * that owns fd from then on (mailstream_new() it, or mailstream_set_low()
 * for STARTTLS); closing it sends close_notify. Returns NULL with one line
 * in err (the verification error, or why the handshake failed, e.g. a
 * server without TLS 1.2); fd then stays the caller's to close.
 */
struct _mailstream_low *tls_stream_open(int fd, const struct tls_peer *p, char *err, size_t errlen);

#endif
