/* tls.c — certificate verification with OpenSSL. */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

int tls_host_is_ip(const char *host)
{
    unsigned char buf[16];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static int load_trust(X509_STORE *store, const char *cafile, const char *capath, char *err,
                      size_t errlen)
{
    if (cafile == NULL && capath == NULL) {
        if (X509_STORE_set_default_paths(store) != 1) {
            snprintf(err, errlen, "cannot load the system CA store");
            return -1;
        }
        return 0;
    }
    if (X509_STORE_load_locations(store, cafile, capath) != 1) {
        snprintf(err, errlen, "cannot load CA certificates from %s",
                 cafile ? cafile : capath);
        return -1;
    }
    return 0;
}

int tls_verify_chain(const struct tls_der *chain, size_t n, const char *host, const char *cafile,
                     const char *capath, char *err, size_t errlen)
{
    X509_STORE *store = X509_STORE_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_VERIFY_PARAM *param;
    X509 *leaf = NULL;
    int rc = -EPERM;

    if (store == NULL || untrusted == NULL || ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (n == 0) {
        snprintf(err, errlen, "the server sent no certificate");
        goto out;
    }
    if (load_trust(store, cafile, capath, err, errlen) != 0)
        goto out;
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
            goto out;
        }
    }
    if (X509_STORE_CTX_init(ctx, store, leaf, untrusted) != 1)
        goto out;
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
        snprintf(err, errlen, "%s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
out:
    X509_STORE_CTX_free(ctx);
    X509_free(leaf);
    sk_X509_pop_free(untrusted, X509_free);
    X509_STORE_free(store);
    ERR_clear_error();
    return rc;
}
