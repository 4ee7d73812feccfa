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
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "cal.h"
#include "log.h"
#include "names.h"
#include "opts.h"
#include "source.h"
#include "store.h"
#include "version.h"

struct m2i {
    int verbose;
    int quiet;
    const char *output;
    int password_given; /* -p */
    char *password_arg; /* its copy, malloc'd */
    char *cache_dir;    /* --cache: absolute */
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mailbox2ics [--port N] [-v] [-q] [-o OUTPUT] [--cafile FILE]\n"
            "                   [--password-file FILE] [-p PASSWORD] [--cache DIR]\n"
            "                   HOSTNAME USERNAME MAILBOX [MAILBOX...]\n"
            "\n"
            "Prints the calendar events found in the mail of the MAILBOXes as one\n"
            "iCalendar file: the bytes of merged.ics of an imapcalfs mount of them.\n"
            "\n"
            "HOSTNAME: imaps://HOST[:PORT] | imap://HOST[:PORT] (STARTTLS)\n"
            "          | HOST (implicit TLS) | maildir:PATH\n"
            "\n"
            "    --port N              server port (default 993, or 143 for imap://)\n"
            "    -v, --verbose         report \"Scanning MAILBOX ...\" and \"Found: SUMMARY\"\n"
            "    -q, --quiet           no report, no warnings; only errors\n"
            "    -o, --output FILE     write FILE atomically instead of standard output\n"
            "    --cafile FILE         trust the CAs in FILE instead of the system store\n"
            "    --password-file FILE  password is the first line of FILE (mode 0600)\n"
            "    -p, --password PASS   the password itself; ps(1) shows it to everyone\n"
            "    --cache DIR           keep fetched parts in DIR: later runs fetch only new ones\n"
            "    -h, --help            this help\n"
            "    -V, --version         the version\n"
            "\n"
            "Without --password-file the password comes from $IMAPCALFS_PASSWORD or the\n"
            "terminal. Exit status: 0 on success, 1 on any error.\n");
}

/*
 * Writes data to path through a hidden temporary file in the same directory,
 * then renames it over path: readers see the old file or the new one, never
 * a part. The mode is what a plain create would give (0666 less umask).
 */
static int write_atomically(const char *path, const struct blob *data)
{
    const char *slash = strrchr(path, '/');
    char *tmp = NULL, *dir = NULL;
    mode_t mask = umask(0);
    int fd, dfd, rc = 0;

    umask(mask);
    if (slash)
        dir = strndup(path, (size_t)(slash - path + (slash == path)));
    if ((slash && dir == NULL) ||
        asprintf(&tmp, "%.*s.%s.XXXXXX", slash ? (int)(slash + 1 - path) : 0, path,
                 slash ? slash + 1 : path) < 0) {
        free(dir);
        return -ENOMEM;
    }
    if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
        rc = -errno;
        goto out;
    }
    rc = blob_write(data, fd);
    if (rc == 0 && (fchmod(fd, 0666 & ~mask) != 0 || fsync(fd) != 0))
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0) {
        unlink(tmp);
        goto out;
    }
    /* The rename itself survives a crash once the directory is synced. */
    if ((dfd = open(dir ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        fsync(dfd);
        close(dfd);
    }
out:
    free(tmp);
    free(dir);
    return rc;
}

/* ---- -v: "Scanning MAILBOX ..." and "Found: SUMMARY", like the original ---- */

/* One VEVENT of the output: its SUMMARY and the mailbox it came from. */
struct found {
    char *summary;
    char *mailbox; /* from X-IMAPCALFS-SOURCE, decoded; NULL if unknown */
};

/* Unfolds one content line (RFC 5545 §3.1) starting at *p; malloc'd, *p moves on. */
static char *next_line(const char **p, const char *end)
{
    char *line = malloc((size_t)(end - *p) + 1);
    size_t n = 0;

    if (line == NULL)
        return NULL;
    while (*p < end) {
        char c = *(*p)++;

        if (c == '\r')
            continue;
        if (c == '\n') {
            if (*p < end && (**p == ' ' || **p == '\t')) {
                (*p)++;
                continue;
            }
            break;
        }
        line[n++] = c;
    }
    line[n] = '\0';
    return line;
}

/* The value of a "NAME[;params]:value" line when its name is name, else NULL. */
static const char *prop_value(const char *line, const char *name)
{
    size_t n = strlen(name);

    if (strncasecmp(line, name, n) != 0 || (line[n] != ':' && line[n] != ';'))
        return NULL;
    /* Quoted parameter values may hold ':' (RFC 5545 §3.2). */
    for (const char *q = line + n, *open = NULL; *q; q++) {
        if (*q == '"')
            open = open ? NULL : q;
        else if (*q == ':' && open == NULL)
            return q + 1;
    }
    return NULL;
}

/* A TEXT value with its escapes undone (RFC 5545 §3.3.11); malloc'd. */
static char *text_unescape(const char *v)
{
    char *out = malloc(strlen(v) + 1), *o = out;

    if (out == NULL)
        return NULL;
    for (; *v; v++) {
        if (*v == '\\' && v[1]) {
            v++;
            *o++ = (*v == 'n' || *v == 'N') ? ' ' : *v;
        } else
            *o++ = *v;
    }
    *o = '\0';
    return out;
}

/*
 * The mailbox named by an X-IMAPCALFS-SOURCE URL: imap://AUTH/MAILBOX;UIDVALIDITY=...
 * or file://PATH#MAILBOX;UIDVALIDITY=..., percent-decoded; malloc'd or NULL.
 */
static char *url_mailbox(const char *url)
{
    const char *start = strchr(url, '#'), *end;
    char *out, *o;

    if (start == NULL && strncasecmp(url, "imap://", 7) == 0)
        start = strchr(url + 7, '/');
    if (start == NULL || (end = strstr(start, ";UIDVALIDITY=")) == NULL)
        return NULL;
    if ((out = malloc((size_t)(end - start))) == NULL)
        return NULL;
    for (o = out, start++; start < end; start++) {
        unsigned hex;

        if (*start == '%' && end - start > 2 && sscanf(start + 1, "%2x", &hex) == 1) {
            *o++ = (char)hex;
            start += 2;
        } else
            *o++ = *start;
    }
    *o = '\0';
    return out;
}

static void found_free(struct found *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(f[i].summary);
        free(f[i].mailbox);
    }
    free(f);
}

/*
 * The VEVENTs of a rendered calendar (not the SUMMARY of a VALARM inside
 * one). Returns the count, or -1 on ENOMEM.
 */
static ssize_t find_events(const char *data, size_t len, struct found **out)
{
    const char *p = data, *end = data + len;
    struct found *f = NULL, cur = {0};
    size_t n = 0;
    int depth = 0; /* 1 inside a VEVENT, more inside its VALARMs */
    char *line;

    while (p < end) {
        const char *v;

        if ((line = next_line(&p, end)) == NULL)
            goto nomem;
        if (strcasecmp(line, "BEGIN:VEVENT") == 0 || (depth > 0 && prop_value(line, "BEGIN")))
            depth++;
        else if (depth == 1 && strcasecmp(line, "END:VEVENT") == 0) {
            struct found *nf = realloc(f, (n + 1) * sizeof *nf);

            if (nf == NULL)
                goto nomem;
            f = nf;
            f[n++] = cur;
            memset(&cur, 0, sizeof cur);
            depth = 0;
        } else if (depth > 1 && prop_value(line, "END"))
            depth--;
        else if (depth == 1 && cur.summary == NULL && (v = prop_value(line, "SUMMARY")))
            cur.summary = text_unescape(v);
        else if (depth == 1 && cur.mailbox == NULL && (v = prop_value(line, "X-IMAPCALFS-SOURCE")))
            cur.mailbox = url_mailbox(v);
        free(line);
    }
    free(cur.summary);
    free(cur.mailbox);
    *out = f;
    return (ssize_t)n;
nomem:
    free(line);
    free(cur.summary);
    free(cur.mailbox);
    found_free(f, n);
    return -1;
}

/*
 * "Scanning MAILBOX ..." for each mailbox named, each followed by the
 * events of the output that came from it.
 */
static void report_verbose(char **names, int nnames, const struct blob *b)
{
    struct found *f = NULL;
    char *data = blob_flatten(b);
    ssize_t n = data ? find_events(data, b->len, &f) : -1;

    for (int i = 0; i < nnames; i++) {
        char *display = name_mailbox_decode(names[i]);

        fprintf(stderr, "Scanning %s ...\n", names[i]);
        for (ssize_t j = 0; j < n; j++) {
            if (f[j].mailbox && (strcmp(f[j].mailbox, names[i]) == 0 ||
                                 (display && strcmp(f[j].mailbox, display) == 0))) {
                fprintf(stderr, "Found: %s\n", f[j].summary ? f[j].summary : "");
                free(f[j].mailbox);
                f[j].mailbox = NULL; /* reported */
            }
        }
        free(display);
    }
    found_free(f, n > 0 ? (size_t)n : 0);
    free(data);
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
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = getopt_long(argc, argv, "vqo:p:hV", longopts, NULL)) != -1) {
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
            m->quiet = 0;
            break;
        case 'q':
            /* As in the original: -q undoes -v; here it also silences warnings. */
            m->quiet = 1;
            m->verbose = 0;
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
            /* Copied, then blanked in argv: shortens (not closes) the window
             * in which ps(1) shows it; hence the warning below. */
            opts_password_free(m->password_arg);
            m->password_given = 1;
            m->password_arg = strdup(optarg);
            memset(optarg, 'x', strlen(optarg));
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
        case 'V':
            printf("mailbox2ics (imapcalfs) version %s\n", IMAPCALFS_VERSION);
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
    log_set_quiet(m.quiet);
    cal_global_init();
    if (m.password_given) {
        fprintf(stderr, "mailbox2ics: warning: -p puts the password where ps(1) shows it; "
                        "use --password-file or IMAPCALFS_PASSWORD\n");
        password = m.password_arg;
        m.password_arg = NULL;
    } else if (o.kind != OPTS_SRC_MAILDIR)
        password = opts_password(&o, err, sizeof err);
    if (password == NULL && o.kind != OPTS_SRC_MAILDIR) {
        fprintf(stderr, "mailbox2ics: %s\n", m.password_given ? "out of memory" : err);
        goto out;
    }
    src = source_new(&o, password);
    opts_password_free(password);
    if (src == NULL || source_check(src, err, sizeof err) != 0 ||
        check_mailboxes(src, argv + optind + 2, nboxes, err, sizeof err) != 0) {
        fprintf(stderr, "mailbox2ics: %s\n", src ? err : "out of memory");
        goto out;
    }
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
        report_verbose(argv + optind + 2, nboxes, merged);
    if (m.output)
        rc = write_atomically(m.output, merged);
    else
        rc = fflush(stdout) == 0 ? blob_write(merged, STDOUT_FILENO) : -EIO;
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
    opts_password_free(m.password_arg);
    free(m.cache_dir);
    return rc;
}
