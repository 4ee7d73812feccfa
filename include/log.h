/*
 * log.h — one place where messages leave the program.
 *
 * Owns: where log lines go (stderr in the foreground, syslog once
 * daemonized) and the debug switch (-d). Never sees a secret: callers mask
 * credentials before logging (see imap.c's protocol logger).
 * Thread-safe: each call writes one whole line.
 */
#ifndef IMAPCALFS_LOG_H
#define IMAPCALFS_LOG_H

#include <syslog.h>

void log_init(const char *progname);
void log_set_debug(int on);
int log_debug_enabled(void);
/* Quiet: only errors (LOG_ERR and worse) are written. */
void log_set_quiet(int on);
/* From now on write to syslog (after fuse_daemonize pointed stderr at /dev/null). */
void log_use_syslog(void);

void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_debug_enabled())                                                                   \
            log_msg(LOG_DEBUG, __VA_ARGS__);                                                       \
    } while (0)

#endif
