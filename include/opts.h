/*
 * opts.h — the command line and the account it names.
 *
 * Owns: parsing SOURCE (imaps://, imap://, HOST, maildir:) and our -o
 * options out of the FUSE argument vector (what is not ours stays there for
 * libfuse), their defaults and validation, and the password sources
 * (passcmd, passfile, IMAPCALFS_PASSWORD, terminal prompt).
 * Never talks to the network. Not thread-safe: used once, before threads.
 */
#ifndef IMAPCALFS_OPTS_H
#define IMAPCALFS_OPTS_H

#include <stddef.h>

#include "cal.h"

struct fuse_args;

enum opts_source_kind {
    OPTS_SRC_IMAPS,    /* implicit TLS */
    OPTS_SRC_STARTTLS, /* plain connect, then STARTTLS (required) */
    OPTS_SRC_MAILDIR,
};

struct opts {
    /* account */
    char *source; /* as written on the command line */
    enum opts_source_kind kind;
    char *host;
    char *user;
    unsigned port;
    char *maildir; /* for maildir: */
    char *tls;     /* "implicit" / "starttls" as given, or NULL */
    char *auth;    /* "plain", "login", "xoauth2" or NULL (automatic) */
    char *cafile;
    char *capath;
    char *passfile;
    char *passcmd;
    char *mailboxes;          /* LIST patterns, ':'-separated; default "*" */
    char *config;             /* config= as given, or NULL */
    char *config_password;    /* "password =" of the account's config section */
    char *source_from_config; /* its "source =", while parsing */

    /* behaviour */
    char *cache_dir;
    int no_disk_cache;
    unsigned ttl; /* seconds; 0 = re-sync on every access */
    int idle;
    unsigned timeout;     /* seconds, network */
    unsigned connections; /* parallel IMAP sessions */
    char *search;         /* IMAP SEARCH keys, or NULL */
    int vdir;
    char *components; /* as given */
    char *after;      /* as given */
    char *before;     /* as given */
    char *account;    /* "user@host[:port]" or "maildir:PATH": names the cache and the mount */

    struct cal_filter filter; /* components, after, before, match, privacy */

    /* from libfuse's own parsing */
    char *mountpoint;
    int foreground;
    int debug;
    int singlethread;
    unsigned max_threads; /* -o max_threads=N of the FUSE loop (libfuse default 10) */
    int show_help;
    int show_version;
};

/*
 * Applies the config file's section for SOURCE (the account name, or its
 * source URL) underneath the command line's options, takes our options and
 * SOURCE out of args (libfuse keeps the rest), then
 * lets libfuse parse the mountpoint and -f/-d/-s/-h/-V. Adds the mount's
 * identity (fsname, subtype) and read-only options to args.
 * Returns 0, or -EINVAL after writing one line to err.
 */
int opts_parse(struct fuse_args *args, struct opts *o, char *err, size_t errlen);

/* Zeroes o and sets the defaults (ttl 60, timeout 30, connections 2). */
void opts_defaults(struct opts *o);

/*
 * Checks o once its fields are set (by opts_parse or by mailbox2ics):
 * parses source, fills in defaults that depend on it and builds the
 * calendar filter. Returns 0, or -EINVAL after writing one line to err.
 */
int opts_validate(struct opts *o, char *err, size_t errlen);

/* Prints our part of -h. */
void opts_print_help(const char *progname);

/*
 * Reads the password from the first source that is set: passcmd, passfile
 * (refused when group or others may read it), $IMAPCALFS_PASSWORD (removed
 * from the environment afterwards), the config file, or the terminal. Returns a malloc'd
 * string (caller frees with opts_password_free()), or NULL after writing one
 * line to err.
 */
char *opts_password(const struct opts *o, char *err, size_t errlen);

/* Wipes and frees a password. */
void opts_password_free(char *password);

/* Account identity used for the cache directory and the mount's fsname. */
static inline const char *opts_account(const struct opts *o)
{
    return o->account;
}

void opts_free(struct opts *o);

#endif
