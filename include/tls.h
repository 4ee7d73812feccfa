/*
 * tls.h — deciding whether a server's certificate chain is to be trusted.
 *
 * Owns: certificate verification with OpenSSL against the system store or
 * cafile/capath, host name or IP address included (RFC 6125). libetpan
 * (GnuTLS build on Debian) verifies nothing itself; its caller hands the
 * DER chain it received here, before any credential is sent.
 * Never does I/O beyond reading the CA files. Thread-safe.
 */
#ifndef IMAPCALFS_TLS_H
#define IMAPCALFS_TLS_H

#include <stddef.h>

struct tls_der {
    const unsigned char *der;
    size_t len;
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

#endif
