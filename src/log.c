/* log.c — stderr or syslog, one line per call. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static const char *log_progname = "imapcalfs";
static atomic_int log_debug_on;
static atomic_int log_to_syslog;
static atomic_int log_quiet;

void log_init(const char *progname)
{
    const char *slash = strrchr(progname, '/');

    log_progname = slash ? slash + 1 : progname;
}

void log_set_debug(int on)
{
    atomic_store(&log_debug_on, on);
}

int log_debug_enabled(void)
{
    return atomic_load(&log_debug_on);
}

void log_set_quiet(int on)
{
    atomic_store(&log_quiet, on);
}

void log_use_syslog(void)
{
    openlog(log_progname, LOG_PID, LOG_DAEMON);
    atomic_store(&log_to_syslog, 1);
}

/*
 * Formats the whole line first so that concurrent threads never interleave
 * halves of two messages on stderr.
 */
void log_msg(int priority, const char *fmt, ...)
{
    char line[2048];
    va_list ap;

    if (atomic_load(&log_quiet) && priority > LOG_ERR)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (atomic_load(&log_to_syslog))
        syslog(priority, "%s", line);
    else
        fprintf(stderr, "%s: %s\n", log_progname, line);
}
