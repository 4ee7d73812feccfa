/*
 * config.c — the config file:
 *
 *   # comment
 *   [alice]
 *   source = imaps://alice@imap.example.org
 *   passcmd = pass show mail/alice
 *   mailboxes = Calendars.*:INBOX
 *   ttl = 300
 *   vdir = yes
 *   match = SUMMARY~standup
 *
 * Keys are the -o option names; flags take yes/no. Values run to the end of
 * the line, trimmed; a value in double quotes keeps its spaces. A key may be
 * repeated where the option may (match).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_MAX_BYTES (1u << 20)

/* Options that take a value, and flags (yes/no). */
static const char *const value_keys[] = {
    "user",      "port",    "mailboxes",   "passfile", "passcmd", "tls",    "cafile", "capath",
    "cache_dir", "ttl",     "components",  "search",   "after",   "before", "match",  "privacy",
    "auth",      "timeout", "connections", "uid",      "gid",     "umask",  NULL,
};
static const char *const flag_keys[] = {
    "no_disk_cache", "idle", "vdir", "allow_other", "default_permissions", NULL,
};

static int in_list(const char *const *list, const char *key)
{
    for (; *list; list++)
        if (strcmp(*list, key) == 0)
            return 1;
    return 0;
}

static char *trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* Appends ",key=value" (commas in value escaped for fuse_opt). */
static int append_option(char **opts, const char *key, const char *value)
{
    size_t old = strlen(*opts), need = old + strlen(key) + 2 * (value ? strlen(value) : 0) + 3;
    char *buf = realloc(*opts, need), *p;

    if (buf == NULL)
        return -ENOMEM;
    *opts = buf;
    p = buf + old;
    if (old)
        *p++ = ',';
    p += sprintf(p, "%s", key);
    if (value) {
        *p++ = '=';
        for (const char *v = value; *v; v++) {
            if (*v == ',' || *v == '\\')
                *p++ = '\\';
            *p++ = *v;
        }
    }
    *p = '\0';
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "on"))
        *out = 1;
    else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcmp(v, "0") ||
             !strcasecmp(v, "off"))
        *out = 0;
    else
        return -1;
    return 0;
}

struct section {
    struct config_account acc;
    int line;
};

/* One "key = value" line into the current section. */
static int take_key(struct section *sec, char *key, char *value, char *why, size_t whylen)
{
    size_t vlen = strlen(value);
    int on;

    if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
        value[vlen - 1] = '\0';
        value++;
    }
    if (strcmp(key, "source") == 0) {
        free(sec->acc.source);
        return (sec->acc.source = strdup(value)) ? 0 : -ENOMEM;
    }
    if (strcmp(key, "password") == 0) {
        free(sec->acc.password);
        return (sec->acc.password = strdup(value)) ? 0 : -ENOMEM;
    }
    if (in_list(value_keys, key)) {
        if (value[0] == '\0') {
            snprintf(why, whylen, "%s needs a value", key);
            return -EINVAL;
        }
        return append_option(&sec->acc.options, key, value);
    }
    if (in_list(flag_keys, key)) {
        if (parse_bool(value, &on) != 0) {
            snprintf(why, whylen, "%s takes yes or no, not '%s'", key, value);
            return -EINVAL;
        }
        return on ? append_option(&sec->acc.options, key, NULL) : 0;
    }
    snprintf(why, whylen, "unknown setting '%s'", key);
    return -EINVAL;
}

/*
 * Files the finished section cur: the section named want wins over one
 * whose source is want; the first of each kind counts.
 */
static void section_done(struct section *cur, const char *want, struct section *by_name,
                         struct section *by_source)
{
    if (cur->acc.name && strcmp(cur->acc.name, want) == 0 && by_name->acc.name == NULL)
        *by_name = *cur;
    else if (cur->acc.source && strcmp(cur->acc.source, want) == 0 && by_source->acc.name == NULL)
        *by_source = *cur;
    else
        config_account_free(&cur->acc);
    memset(cur, 0, sizeof *cur);
}

int config_parse(const char *text, size_t len, const char *path, const char *want,
                 struct config_account *out, char *err, size_t errlen)
{
    struct section cur = {0}, by_name = {0}, by_source = {0};
    char *copy = strndup(text, len), why[200] = "";
    size_t clen = copy ? strlen(copy) : 0;
    int lineno = 0, rc = 0;

    memset(out, 0, sizeof *out);
    if (copy == NULL)
        return -ENOMEM;
    /* strtok_r would skip empty lines and so miscount: split by hand. */
    for (char *line = copy, *next; line && rc == 0; line = next) {
        char *t, *eq;

        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        t = trim(line);
        if (*t == '\0' || *t == '#' || *t == ';')
            continue;
        if (*t == '[') {
            char *close = strchr(t, ']');

            if (close == NULL || close[1] != '\0' || close == t + 1) {
                snprintf(why, sizeof why, "a section is written [name]");
                rc = -EINVAL;
                break;
            }
            *close = '\0';
            section_done(&cur, want, &by_name, &by_source);
            cur.line = lineno;
            if ((cur.acc.name = strdup(trim(t + 1))) == NULL ||
                (cur.acc.options = strdup("")) == NULL)
                rc = -ENOMEM;
            continue;
        }
        if (cur.acc.name == NULL) {
            snprintf(why, sizeof why, "setting outside of any [account] section");
            rc = -EINVAL;
            break;
        }
        if ((eq = strchr(t, '=')) == NULL) {
            snprintf(why, sizeof why, "expected key = value");
            rc = -EINVAL;
            break;
        }
        *eq = '\0';
        rc = take_key(&cur, trim(t), trim(eq + 1), why, sizeof why);
    }
    section_done(&cur, want, &by_name, &by_source);
    explicit_bzero(copy, clen);
    free(copy);
    if (rc == -EINVAL)
        snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
    if (rc == 0 && by_name.acc.name == NULL && by_source.acc.name == NULL)
        rc = -ENOENT;
    if (rc != 0) {
        config_account_free(&by_name.acc);
        config_account_free(&by_source.acc);
        return rc;
    }
    if (by_name.acc.name) {
        *out = by_name.acc;
        config_account_free(&by_source.acc);
    } else
        *out = by_source.acc;
    return 0;
}

int config_load(const char *path, const char *want, struct config_account *out, char *err,
                size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf;
    ssize_t n;
    int rc;

    memset(out, 0, sizeof *out);
    if (fd < 0) {
        snprintf(err, errlen, "config %s: %s", path, strerror(errno));
        return -ENOENT;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX_BYTES) {
        snprintf(err, errlen, "config %s: not a regular file of at most 1 MiB", path);
        close(fd);
        return -EINVAL;
    }
    /* It may hold a password or the command that prints one. */
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen,
                 "config %s is accessible by group or others; fix it with: chmod 600 %s", path,
                 path);
        close(fd);
        return -EINVAL;
    }
    if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
        close(fd);
        return -ENOMEM;
    }
    n = read(fd, buf, (size_t)st.st_size);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "config %s: %s", path, strerror(errno));
        free(buf);
        return -EINVAL;
    }
    rc = config_parse(buf, (size_t)n, path, want, out, err, errlen);
    explicit_bzero(buf, (size_t)n);
    free(buf);
    if (rc == -ENOENT)
        snprintf(err, errlen, "config %s has no account '%s'", path, want);
    return rc;
}

char *config_default_path(void)
{
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    char *path = NULL;

    if (xdg && xdg[0] == '/')
        return asprintf(&path, "%s/imapcalfs/config", xdg) < 0 ? NULL : path;
    if (home == NULL || home[0] == '\0') {
        struct passwd *pw = getpwuid(getuid());

        home = pw ? pw->pw_dir : "/";
    }
    return asprintf(&path, "%s/.config/imapcalfs/config", home) < 0 ? NULL : path;
}

void config_account_free(struct config_account *a)
{
    free(a->name);
    free(a->source);
    if (a->password) {
        explicit_bzero(a->password, strlen(a->password));
        free(a->password);
    }
    free(a->options);
    memset(a, 0, sizeof *a);
}
