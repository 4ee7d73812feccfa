/*
 * config.h — the per-account config file.
 *
 * Owns: reading $XDG_CONFIG_HOME/imapcalfs/config (or -o config=FILE), an
 * INI-style file of [account] sections whose keys are the -o option names
 * plus "source" and "password", so that fstab lines and systemd units need
 * no secret on their command line. The file is refused when group or others
 * may read it. Turns a section into option text; applying it is opts.c's.
 * Never does I/O beyond reading the file. Not thread-safe (startup only).
 */
#ifndef IMAPCALFS_CONFIG_H
#define IMAPCALFS_CONFIG_H

#include <stddef.h>

struct config_account {
    char *name;     /* the section name */
    char *source;   /* "source =" or NULL */
    char *password; /* "password =" or NULL */
    char *options;  /* every other key as "k=v,k2" with libfuse escapes, or "" */
};

/*
 * Parses text (len bytes, from file `path` for messages) and finds the
 * account `want`: the section of that name, or else the section whose
 * source equals `want`. Returns 0 and fills *out, -ENOENT when no section
 * matches, or -EINVAL with "path:line: reason" in err.
 */
int config_parse(const char *text, size_t len, const char *path, const char *want,
                 struct config_account *out, char *err, size_t errlen);

/*
 * Reads path (refusing a file accessible by group or others, with the chmod
 * that fixes it) and parses it as above. -ENOENT also when the file does
 * not exist.
 */
int config_load(const char *path, const char *want, struct config_account *out, char *err,
                size_t errlen);

/* $XDG_CONFIG_HOME/imapcalfs/config or ~/.config/imapcalfs/config; malloc'd. */
char *config_default_path(void);

void config_account_free(struct config_account *a);

#endif
