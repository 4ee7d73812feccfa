/*
 * mailbox2ics.c — the 2007 cron script's interface on imapcalfs's core.
 *
 *   mailbox2ics [--port N] [-v] [-q] [-o OUTPUT] [--cafile F]
 *               [--password-file F] [-p PASSWORD] HOSTNAME USERNAME MAILBOX...
 *
 * Prints what MOUNTPOINT/merged.ics of a mount of those mailboxes holds,
 * byte for byte (the same store renders both). -o writes the file
 * atomically, so a web server never serves half of it.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "cal.h"
#include "log.h"
#include "opts.h"
#include "source.h"
#include "store.h"

struct m2i {
    int verbose;
    int quiet;
    const char *output;
    const char *password_arg;
    char *cache_dir; /* --cache: absolute */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: mailbox2ics [--port N] [-v] [-q] [-o OUTPUT] [--cafile FILE]\n"
               "                   [--password-file FILE] [-p PASSWORD] [--cache DIR]\n"
               "                   HOSTNAME USERNAME MAILBOX [MAILBOX...]\n"
               "\n"
               "HOSTNAME may be imaps://HOST[:PORT], imap://HOST[:PORT] (STARTTLS),\n"
               "HOST (implicit TLS) or maildir:PATH. The password comes from\n"
               "--password-file, $IMAPCALFS_PASSWORD or the terminal.\n");
}

/* Writes data to path through a temporary file in the same directory. */
static int write_atomically(const char *path, const char *data, size_t len)
{
    char *tmp = NULL;
    size_t done = 0;
    int fd, rc = 0;

    if (asprintf(&tmp, "%s.tmpXXXXXX", path) < 0)
        return -ENOMEM;
    if ((fd = mkstemp(tmp)) < 0) {
        rc = -errno;
        free(tmp);
        return rc;
    }
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            break;
        }
        done += (size_t)n;
    }
    /* Readable like any published calendar, whatever mkstemp chose. */
    if (rc == 0 && (fchmod(fd, 0644) != 0 || fsync(fd) != 0))
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* -v: one "Found: SUMMARY" line per event, like the original. */
static void report_summaries(const char *data, size_t len)
{
    const char *p = data, *end = data + len;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((eol ? eol : end) - p);

        if (n > 8 && strncmp(p, "SUMMARY", 7) == 0 && (p[7] == ':' || p[7] == ';')) {
            const char *v = memchr(p, ':', n);

            if (v)
                fprintf(stderr, "Found: %.*s\n", (int)(n - (size_t)(v + 1 - p)) -
                                                     (p[n - 1] == '\r'), v + 1);
        }
        p = eol ? eol + 1 : end;
    }
}

/* Every named mailbox must exist: a typo is an error, not an empty file. */
static int check_mailboxes(struct source *src, char **names, int n, char *err, size_t errlen)
{
    struct src_mailbox *mb = NULL;
    size_t count = 0;
    int rc = source_list_mailboxes(src, &mb, &count, err, errlen);

    for (int i = 0; rc == 0 && i < n; i++) {
        size_t j = 0;

        while (j < count && strcmp(mb[j].name, names[i]) != 0)
            j++;
        if (j == count) {
            snprintf(err, errlen, "mailbox %s not found", names[i]);
            rc = -ENOENT;
        }
    }
    source_mailboxes_free(mb, count);
    return rc;
}

static int parse_args(int argc, char **argv, struct m2i *m, struct opts *o)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'P'},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"output", required_argument, NULL, 'o'},
        {"cafile", required_argument, NULL, 'C'},
        {"password-file", required_argument, NULL, 'F'},
        {"password", required_argument, NULL, 'p'},
        {"cache", required_argument, NULL, 'K'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = getopt_long(argc, argv, "vqo:p:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'P':
            o->port = (unsigned)strtoul(optarg, NULL, 10);
            if (o->port == 0 || o->port > 65535) {
                fprintf(stderr, "mailbox2ics: --port %s: not a port number\n", optarg);
                return -1;
            }
            break;
        case 'v':
            m->verbose = 1;
            break;
        case 'q':
            m->quiet = 1;
            break;
        case 'o':
            m->output = optarg;
            break;
        case 'C':
            o->cafile = strdup(optarg);
            break;
        case 'F':
            o->passfile = strdup(optarg);
            break;
        case 'p':
            m->password_arg = optarg;
            break;
        case 'K':
            m->cache_dir = realpath(optarg, NULL);
            if (m->cache_dir == NULL && mkdir(optarg, 0700) == 0)
                m->cache_dir = realpath(optarg, NULL);
            if (m->cache_dir == NULL) {
                fprintf(stderr, "mailbox2ics: --cache %s: %s\n", optarg, strerror(errno));
                return -1;
            }
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (argc - optind < 3) {
        usage(stderr);
        return -1;
    }
    return 0;
}

/* MAILBOX... as the mount's mailboxes= list. */
static char *join_mailboxes(char **names, int n)
{
    size_t len = 1;
    char *list;

    for (int i = 0; i < n; i++)
        len += strlen(names[i]) + 1;
    if ((list = calloc(1, len)) == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (i)
            strcat(list, ":");
        strcat(list, names[i]);
    }
    return list;
}

int main(int argc, char **argv)
{
    struct m2i m = {0};
    struct opts o;
    struct source *src = NULL;
    struct store *store = NULL;
    struct cache *cache = NULL;
    struct blob *merged = NULL;
    char err[512], *password = NULL;
    int rc = 1, nboxes;

    log_init("mailbox2ics");
    signal(SIGPIPE, SIG_IGN);
    opts_defaults(&o);
    if (parse_args(argc, argv, &m, &o) != 0)
        goto out;
    o.source = strdup(argv[optind]);
    o.user = strdup(argv[optind + 1]);
    nboxes = argc - optind - 2;
    o.mailboxes = join_mailboxes(argv + optind + 2, nboxes);
    o.ttl = 0;
    if (o.source == NULL || o.user == NULL || o.mailboxes == NULL) {
        fprintf(stderr, "mailbox2ics: out of memory\n");
        goto out;
    }
    if (opts_validate(&o, err, sizeof err) != 0) {
        fprintf(stderr, "mailbox2ics: %s\n", err);
        goto out;
    }
    if (m.quiet)
        log_set_debug(0);
    cal_global_init();
    if (m.password_arg) {
        fprintf(stderr, "mailbox2ics: warning: -p puts the password where ps(1) shows it; "
                        "use --password-file or IMAPCALFS_PASSWORD\n");
        password = strdup(m.password_arg);
    } else if (o.kind != OPTS_SRC_MAILDIR)
        password = opts_password(&o, err, sizeof err);
    if (password == NULL && o.kind != OPTS_SRC_MAILDIR) {
        fprintf(stderr, "mailbox2ics: %s\n", m.password_arg ? "out of memory" : err);
        goto out;
    }
    src = source_new(&o, password);
    opts_password_free(password);
    if (src == NULL || source_check(src, err, sizeof err) != 0 ||
        check_mailboxes(src, argv + optind + 2, nboxes, err, sizeof err) != 0) {
        fprintf(stderr, "mailbox2ics: %s\n", src ? err : "out of memory");
        goto out;
    }
    if (m.verbose)
        for (int i = 0; i < nboxes; i++)
            fprintf(stderr, "Scanning %s ...\n", argv[optind + 2 + i]);
    if (m.cache_dir && (cache = cache_open(m.cache_dir, err, sizeof err)) == NULL) {
        fprintf(stderr, "mailbox2ics: %s\n", err);
        goto out;
    }
    if ((store = store_new(src, &o, cache)) == NULL ||
        (rc = store_open(store, "/merged.ics", &merged)) != 0) {
        fprintf(stderr, "mailbox2ics: reading the mailboxes failed (%s)\n",
                store ? strerror(-rc) : "out of memory");
        rc = 1;
        goto out;
    }
    if (m.verbose)
        report_summaries(merged->data, merged->len);
    if (m.output)
        rc = write_atomically(m.output, merged->data, merged->len);
    else
        rc = fwrite(merged->data, 1, merged->len, stdout) == merged->len && fflush(stdout) == 0
                 ? 0
                 : -EIO;
    if (rc != 0) {
        fprintf(stderr, "mailbox2ics: writing %s: %s\n", m.output ? m.output : "the output",
                strerror(-rc));
        rc = 1;
    }
out:
    blob_unref(merged);
    source_free(src);
    store_free(store);
    cache_close(cache);
    opts_free(&o);
    free(m.cache_dir);
    return rc;
}
