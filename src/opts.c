/* opts.c — SOURCE, -o options and their validation. */
#define FUSE_USE_VERSION 314
#include "opts.h"
#include "config.h"

#include <errno.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
    KEY_MATCH,
    KEY_PRIVACY,
    KEY_PASSWORD,
    KEY_DISCARD,
};

// clang-format off
#define OPT(templ, field, value) {templ, offsetof(struct opts, field), value}
// clang-format on

static const struct fuse_opt opts_spec[] = {
    OPT("user=%s", user, 0),
    OPT("port=%u", port, 0),
    OPT("mailboxes=%s", mailboxes, 0),
    OPT("passfile=%s", passfile, 0),
    OPT("passcmd=%s", passcmd, 0),
    OPT("tls=%s", tls, 0),
    OPT("cafile=%s", cafile, 0),
    OPT("capath=%s", capath, 0),
    OPT("cache_dir=%s", cache_dir, 0),
    OPT("no_disk_cache", no_disk_cache, 1),
    OPT("ttl=%u", ttl, 0),
    OPT("idle", idle, 1),
    OPT("components=%s", components, 0),
    OPT("search=%s", search, 0),
    OPT("after=%s", after, 0),
    OPT("before=%s", before, 0),
    OPT("vdir", vdir, 1),
    OPT("auth=%s", auth, 0),
    OPT("timeout=%u", timeout, 0),
    OPT("connections=%u", connections, 0),
    OPT("config=%s", config, 0),
    FUSE_OPT_KEY("match=", KEY_MATCH),
    FUSE_OPT_KEY("privacy=", KEY_PRIVACY),
    FUSE_OPT_KEY("password=", KEY_PASSWORD),
    FUSE_OPT_KEY("pass=", KEY_PASSWORD),
    /* mount(8) and systemd options that may reach us; they mean nothing here. */
    FUSE_OPT_KEY("_netdev", KEY_DISCARD),
    FUSE_OPT_KEY("nofail", KEY_DISCARD),
    FUSE_OPT_KEY("noauto", KEY_DISCARD),
    FUSE_OPT_KEY("auto", KEY_DISCARD),
    FUSE_OPT_KEY("user", KEY_DISCARD),
    FUSE_OPT_KEY("users", KEY_DISCARD),
    FUSE_OPT_END,
};

/*
 * Where the fuse_opt callback reports errors. fuse_opt_parse() hands the
 * callback the options struct itself (the field offsets are relative to
 * it), so this travels beside it; parsing runs once, before any thread.
 */
struct parse_ctx {
    char *err;
    size_t errlen;
    int failed;
};

static struct parse_ctx *parse_errors;

static int fail(struct parse_ctx *c, const char *fmt, const char *arg)
{
    if (!c->failed)
        snprintf(c->err, c->errlen, fmt, arg);
    c->failed = 1;
    return -1;
}

/*
 * fuse_opt callback: SOURCE is the first non-option (mount.fuse3 calls us as
 * "PROG SOURCE MOUNTPOINT -o ..."), the second is the mountpoint and stays
 * for libfuse. Repeated match= accumulate.
 */
static int opts_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    struct parse_ctx *c = parse_errors;
    struct opts *o = data;
    char cerr[256];

    (void)outargs;
    switch (key) {
    case FUSE_OPT_KEY_NONOPT:
        if (o->source == NULL) {
            o->source = strdup(arg);
            return o->source ? 0 : -1;
        }
        return 1;
    case FUSE_OPT_KEY_OPT:
        /* libmount normally strips x-systemd.*; accept them when it does not. */
        if (strncmp(arg, "x-systemd.", 10) == 0 || strncmp(arg, "comment=", 8) == 0)
            return 0;
        return 1;
    case KEY_DISCARD:
        return 0;
    case KEY_PASSWORD:
        return fail(c, "%s",
                    "a password is never accepted on the command line: use "
                    "passfile=, passcmd=, IMAPCALFS_PASSWORD or the prompt");
    case KEY_PRIVACY:
        if (strcmp(arg, "privacy=busy") != 0)
            return fail(c, "unknown privacy mode '%s' (only privacy=busy exists)", arg + 8);
        o->filter.privacy_busy = 1;
        return 0;
    case KEY_MATCH:
        if (cal_filter_add_match(&o->filter, arg + 6, cerr, sizeof cerr) != 0)
            return fail(c, "%s", cerr);
        return 0;
    default:
        return 1;
    }
}

/* "imaps://user@host:993", "imap://host", "host" or "maildir:/path". */
static int parse_source(struct opts *o, char *err, size_t errlen)
{
    const char *s = o->source, *at, *hostp, *portp = NULL, *end;
    char *endnum;

    if (strncmp(s, "maildir:", 8) == 0) {
        char resolved[PATH_MAX];

        o->kind = OPTS_SRC_MAILDIR;
        /* Absolute now: fuse_daemonize() changes the directory to /. */
        if (realpath(s + 8, resolved) == NULL) {
            snprintf(err, errlen, "maildir %s: %s", s + 8, strerror(errno));
            return -EINVAL;
        }
        o->maildir = strdup(resolved);
        return o->maildir ? 0 : -ENOMEM;
    }
    if (strncmp(s, "imaps://", 8) == 0) {
        o->kind = OPTS_SRC_IMAPS;
        s += 8;
    } else if (strncmp(s, "imap://", 7) == 0) {
        o->kind = OPTS_SRC_STARTTLS;
        s += 7;
    } else if (strstr(s, "://") != NULL) {
        snprintf(err, errlen, "unsupported SOURCE '%s' (use imaps://, imap:// or maildir:)", s);
        return -EINVAL;
    } else {
        o->kind = OPTS_SRC_IMAPS;
    }
    end = s + strcspn(s, "/");
    at = memrchr(s, '@', (size_t)(end - s));
    hostp = at ? at + 1 : s;
    /* USER:PASSWORD@ would put the password in argv and the mount table. */
    if (at && memchr(s, ':', (size_t)(at - s))) {
        snprintf(err, errlen,
                 "SOURCE must not hold a password (USER:PASSWORD@): use passfile=, passcmd=, "
                 "IMAPCALFS_PASSWORD or the prompt");
        return -EINVAL;
    }
    if (at && o->user == NULL && (o->user = strndup(s, (size_t)(at - s))) == NULL)
        return -ENOMEM;
    if (*hostp == '[') { /* [IPv6]:port */
        const char *close = memchr(hostp, ']', (size_t)(end - hostp));

        if (close == NULL) {
            snprintf(err, errlen, "bad host in SOURCE '%s'", o->source);
            return -EINVAL;
        }
        o->host = strndup(hostp + 1, (size_t)(close - hostp - 1));
        if (close + 1 < end && close[1] == ':')
            portp = close + 2;
    } else {
        const char *colon = memchr(hostp, ':', (size_t)(end - hostp));

        o->host = strndup(hostp, (size_t)((colon ? colon : end) - hostp));
        if (colon)
            portp = colon + 1;
    }
    if (o->host == NULL)
        return -ENOMEM;
    if (o->host[0] == '\0') {
        snprintf(err, errlen, "no host in SOURCE '%s'", o->source);
        return -EINVAL;
    }
    if (portp && o->port == 0) {
        unsigned long p = strtoul(portp, &endnum, 10);

        if (endnum == portp || endnum != end || p == 0 || p > 65535) {
            snprintf(err, errlen, "bad port in SOURCE '%s'", o->source);
            return -EINVAL;
        }
        o->port = (unsigned)p;
    }
    return 0;
}

static int parse_components(struct opts *o, char *err, size_t errlen)
{
    char *list, *tok, *save = NULL;
    unsigned kinds = 0;

    if (o->components == NULL) {
        o->filter.kinds = CAL_VEVENT;
        return 0;
    }
    if ((list = strdup(o->components)) == NULL)
        return -ENOMEM;
    for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (strcasecmp(tok, "VEVENT") == 0)
            kinds |= CAL_VEVENT;
        else if (strcasecmp(tok, "VTODO") == 0)
            kinds |= CAL_VTODO;
        else if (strcasecmp(tok, "VJOURNAL") == 0)
            kinds |= CAL_VJOURNAL;
        else {
            snprintf(err, errlen, "components: unknown component '%s' (VEVENT, VTODO, VJOURNAL)",
                     tok);
            free(list);
            return -EINVAL;
        }
    }
    free(list);
    if (kinds == 0) {
        snprintf(err, errlen, "components: empty list");
        return -EINVAL;
    }
    o->filter.kinds = kinds;
    return 0;
}

static int parse_dates(struct opts *o, char *err, size_t errlen)
{
    if (o->after) {
        if (cal_parse_date(o->after, &o->filter.after) != 0) {
            snprintf(err, errlen, "after=%s: not a date (YYYY-MM-DD or RFC 3339)", o->after);
            return -EINVAL;
        }
        o->filter.has_after = 1;
    }
    if (o->before) {
        if (cal_parse_date(o->before, &o->filter.before) != 0) {
            snprintf(err, errlen, "before=%s: not a date (YYYY-MM-DD or RFC 3339)", o->before);
            return -EINVAL;
        }
        o->filter.has_before = 1;
    }
    return 0;
}

/* Transport, port, defaults and ranges, once everything is read. */
int opts_validate(struct opts *o, char *err, size_t errlen)
{
    int rc;

    if (o->source == NULL) {
        snprintf(err, errlen, "no SOURCE given (usage: imapcalfs [OPTIONS] SOURCE MOUNTPOINT)");
        return -EINVAL;
    }
    if ((rc = parse_source(o, err, errlen)) != 0)
        return rc;
    if (o->tls) {
        if (strcmp(o->tls, "implicit") == 0)
            o->kind = o->kind == OPTS_SRC_MAILDIR ? o->kind : OPTS_SRC_IMAPS;
        else if (strcmp(o->tls, "starttls") == 0)
            o->kind = o->kind == OPTS_SRC_MAILDIR ? o->kind : OPTS_SRC_STARTTLS;
        else {
            snprintf(err, errlen, "tls=%s: use tls=implicit or tls=starttls", o->tls);
            return -EINVAL;
        }
    }
    if (o->auth && strcmp(o->auth, "plain") != 0 && strcmp(o->auth, "login") != 0 &&
        strcmp(o->auth, "xoauth2") != 0) {
        snprintf(err, errlen, "auth=%s: use plain, login or xoauth2", o->auth);
        return -EINVAL;
    }
    if (o->kind == OPTS_SRC_MAILDIR && o->search) {
        snprintf(err, errlen, "search= needs an IMAP server (SEARCH runs there)");
        return -EINVAL;
    }
    if (o->port == 0)
        o->port = o->kind == OPTS_SRC_STARTTLS ? 143 : 993;
    if (o->port > 65535) {
        snprintf(err, errlen, "port=%u: out of range", o->port);
        return -EINVAL;
    }
    if (o->kind != OPTS_SRC_MAILDIR && o->user == NULL) {
        snprintf(err, errlen, "no user name: write USER@ in SOURCE or -o user=NAME");
        return -EINVAL;
    }
    if (o->connections == 0 || o->connections > 16) {
        snprintf(err, errlen, "connections=%u: use 1 to 16", o->connections);
        return -EINVAL;
    }
    if (o->timeout == 0) {
        snprintf(err, errlen, "timeout=0: the network timeout must be at least 1 second");
        return -EINVAL;
    }
    if (o->mailboxes == NULL && (o->mailboxes = strdup("*")) == NULL)
        return -ENOMEM;
    if ((rc = parse_components(o, err, errlen)) != 0 || (rc = parse_dates(o, err, errlen)) != 0)
        return rc;
    if (o->kind == OPTS_SRC_MAILDIR)
        rc = asprintf(&o->account, "maildir:%s", o->maildir);
    else
        rc = asprintf(&o->account, "%s@%s:%u", o->user, o->host, o->port);
    return rc < 0 ? -ENOMEM : 0;
}

/* fsname shows the account in mount(8); subtype makes the type fuse.imapcalfs. */
static int add_mount_identity(struct fuse_args *args, const struct opts *o)
{
    char *opt = NULL;
    int rc;

    if (asprintf(&opt, "fsname=%s", o->source) < 0)
        return -ENOMEM;
    rc = fuse_opt_add_arg(args, "-oro,subtype=imapcalfs");
    if (rc == 0) {
        char *escaped = NULL;

        /* Commas in the source must not split the option list. */
        rc = fuse_opt_add_opt_escaped(&escaped, opt);
        if (rc == 0) {
            free(opt);
            opt = NULL;
            if (asprintf(&opt, "-o%s", escaped) < 0)
                rc = -1;
            else
                rc = fuse_opt_add_arg(args, opt);
        }
        free(escaped);
    }
    free(opt);
    return rc == 0 ? 0 : -ENOMEM;
}

void opts_defaults(struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->ttl = 60;
    o->timeout = 30;
    o->connections = 2;
}

/* What the first look at the command line finds. */
struct prescan {
    char *source;
    char *config;
};

static const struct fuse_opt prescan_spec[] = {
    {"config=%s", offsetof(struct prescan, config), 0},
    FUSE_OPT_END,
};

static int prescan_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    struct prescan *p = data;

    (void)outargs;
    if (key == FUSE_OPT_KEY_NONOPT && p->source == NULL)
        p->source = strdup(arg);
    return 1;
}

/* fuse_opt_insert_arg() only works on a vector libfuse allocated. */
static int own_args(struct fuse_args *args)
{
    struct fuse_args copy = FUSE_ARGS_INIT(0, NULL);

    if (args->allocated)
        return 0;
    for (int i = 0; i < args->argc; i++)
        if (fuse_opt_add_arg(&copy, args->argv[i]) != 0) {
            fuse_opt_free_args(&copy);
            return -ENOMEM;
        }
    *args = copy;
    return 0;
}

/*
 * The config file's account for SOURCE goes in front of the command line's
 * own -o options, so that the command line wins. A missing default file, or
 * one without that account, is fine; an explicit config= must match.
 */
static int apply_config(struct fuse_args *args, struct opts *o, char *err, size_t errlen)
{
    struct fuse_args copy = FUSE_ARGS_INIT(args->argc, args->argv);
    struct prescan p = {0};
    struct config_account acc;
    char *path, *opt = NULL;
    int rc;

    if (fuse_opt_parse(&copy, &p, prescan_spec, prescan_proc) != 0) {
        fuse_opt_free_args(&copy);
        return 0; /* the real parse reports it */
    }
    fuse_opt_free_args(&copy);
    path = p.config ? strdup(p.config) : config_default_path();
    if (p.source == NULL || path == NULL) {
        rc = 0;
        goto out;
    }
    rc = config_load(path, p.source, &acc, err, errlen);
    if (rc == -ENOENT && p.config == NULL) {
        rc = 0; /* no default file, or no such account in it */
        goto out;
    }
    if (rc != 0)
        goto out;
    if (acc.options[0] && (asprintf(&opt, "-o%s", acc.options) < 0 || own_args(args) != 0 ||
                           fuse_opt_insert_arg(args, 1, opt) != 0))
        rc = -ENOMEM;
    if (rc == 0 && acc.source) {
        o->source_from_config = acc.source;
        acc.source = NULL;
    }
    o->config_password = acc.password;
    acc.password = NULL;
    free(opt);
    config_account_free(&acc);
out:
    free(path);
    free(p.source);
    free(p.config);
    return rc == -ENOENT ? -EINVAL : rc;
}

int opts_parse(struct fuse_args *args, struct opts *o, char *err, size_t errlen)
{
    struct parse_ctx ctx = {.err = err, .errlen = errlen};
    struct fuse_cmdline_opts cmd;
    int rc;

    opts_defaults(o);
    err[0] = '\0';
    if ((rc = apply_config(args, o, err, errlen)) != 0)
        return rc;
    parse_errors = &ctx;
    rc = fuse_opt_parse(args, o, opts_spec, opts_proc);
    parse_errors = NULL;
    if (rc != 0 || ctx.failed) {
        if (!ctx.failed)
            snprintf(err, errlen, "cannot parse the options");
        return -EINVAL;
    }
    memset(&cmd, 0, sizeof cmd);
    if (fuse_parse_cmdline(args, &cmd) != 0) {
        snprintf(err, errlen, "cannot parse the command line");
        return -EINVAL;
    }
    o->mountpoint = cmd.mountpoint;
    o->foreground = cmd.foreground;
    o->debug = cmd.debug;
    o->singlethread = cmd.singlethread;
    o->max_threads = cmd.max_threads;
    o->show_help = cmd.show_help;
    o->show_version = cmd.show_version;
    if (o->show_help || o->show_version)
        return 0;
    /* SOURCE named a config account: its source= is the real one. */
    if (o->source_from_config) {
        free(o->source);
        o->source = o->source_from_config;
        o->source_from_config = NULL;
    }
    if ((rc = opts_validate(o, err, errlen)) != 0)
        return rc;
    if (o->mountpoint == NULL) {
        snprintf(err, errlen, "no MOUNTPOINT given (usage: imapcalfs [OPTIONS] SOURCE MOUNTPOINT)");
        return -EINVAL;
    }
    return add_mount_identity(args, o);
}

void opts_print_help(const char *progname)
{
    printf("usage: %s [OPTIONS] SOURCE MOUNTPOINT\n"
           "\n"
           "SOURCE: imaps://[USER@]HOST[:PORT] | imap://[USER@]HOST[:PORT] (STARTTLS)\n"
           "        | HOST | maildir:PATH\n"
           "\n"
           "imapcalfs options:\n"
           "    -o user=NAME           login name\n"
           "    -o port=N              server port (993 implicit TLS, 143 STARTTLS)\n"
           "    -o mailboxes=PAT[:PAT] LIST patterns of the mailboxes shown (default *)\n"
           "    -o passfile=FILE       password is the first line of FILE (mode 0600)\n"
           "    -o passcmd=CMD         password is the first line printed by sh -c CMD\n"
           "                           (else $IMAPCALFS_PASSWORD, else a terminal prompt)\n"
           "    -o tls=implicit|starttls\n"
           "    -o cafile=FILE         trust the CAs in FILE instead of the system store\n"
           "    -o capath=DIR          trust the CAs in DIR (hashed, c_rehash)\n"
           "    -o auth=plain|login|xoauth2\n"
           "    -o cache_dir=DIR       persistent cache directory\n"
           "    -o no_disk_cache       keep the cache in memory only\n"
           "    -o ttl=SECONDS         re-sync a listing older than this (default 60)\n"
           "    -o timeout=SECONDS     network timeout (default 30)\n"
           "    -o connections=N       IMAP connections used in parallel (default 2)\n"
           "    -o components=LIST     VEVENT (default), VTODO, VJOURNAL\n"
           "    -o search=KEYS         IMAP SEARCH keys that pick the messages\n"
           "    -o after=DATE          keep events with an occurrence ending after DATE\n"
           "    -o before=DATE         keep events with an occurrence starting before DATE\n"
           "    -o match=PROP~REGEX    keep events whose PROP matches REGEX (repeatable)\n"
           "    -o idle                keep IMAP IDLE open on mailboxes in use (push)\n"
           "    -o config=FILE         account settings from FILE (default\n"
           "                           $XDG_CONFIG_HOME/imapcalfs/config)\n"
           "    -o vdir                strict vdir layout (khal, vdirsyncer)\n"
           "    -o privacy=busy        show only free/busy\n"
           "\n",
           progname);
}

void opts_free(struct opts *o)
{
    char **strings[] = {&o->source,   &o->host,       &o->user,      &o->maildir,
                        &o->tls,      &o->auth,       &o->cafile,    &o->capath,
                        &o->passfile, &o->passcmd,    &o->mailboxes, &o->cache_dir,
                        &o->search,   &o->components, &o->after,     &o->before,
                        &o->account,  &o->mountpoint, &o->config,    &o->source_from_config};

    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        free(*strings[i]);
        *strings[i] = NULL;
    }
    cal_filter_free(&o->filter);
    opts_password_free(o->config_password);
    o->config_password = NULL;
}
