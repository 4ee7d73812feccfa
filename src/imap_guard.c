/*
 * imap_guard.c — a guard between libetpan and the TLS stream, for servers
 * that are broken or hostile.
 *
 * libetpan 1.9.4 believes whatever the server announces: it allocates a
 * literal of any announced size, and parses BODYSTRUCTURE recursively, so a
 * 1 GB literal or a structure nested 10,000 deep costs memory or the
 * thread's stack (notes §5). The guard sits under libetpan as its stream
 * driver and watches the bytes as they arrive: it counts them against a
 * budget per operation, and tracks parenthesis depth outside quoted strings
 * and literals. Past either limit the read fails, libetpan reports a stream
 * error, and the session is thrown away like any dead connection.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <libetpan/libetpan.h>
#include <stdlib.h>
#include <string.h>

#include "imap_internal.h"

/* The lexer state carried from one read to the next. */
enum lex_state {
    LEX_PLAIN,
    LEX_QUOTED,
    LEX_QUOTED_ESCAPE,
    LEX_BRACE, /* inside {nnn} */
    LEX_AFTER_BRACE,
    LEX_AFTER_BRACE_CR,
    LEX_LITERAL, /* skipping literal bytes */
};

struct guard {
    mailstream_low *inner;
    struct imap_guard_stats *stats;
    enum lex_state state;
    unsigned depth;
    uint64_t literal_left, brace_value;
    uint64_t line_len; /* bytes of the current line, literals not counted */
};

/* Set by imap_interrupt_all(): every read fails from now on. */
static volatile sig_atomic_t guard_stopping;

/* Socket of every live session; -1 in free slots. */
#define MAX_FDS 64
static volatile sig_atomic_t session_fds[MAX_FDS] = {[0 ... MAX_FDS - 1] = -1};
static pthread_mutex_t session_fds_lock = PTHREAD_MUTEX_INITIALIZER;

void imap_register_fd(int fd)
{
    pthread_mutex_lock(&session_fds_lock);
    for (int i = 0; i < MAX_FDS; i++)
        if (session_fds[i] == -1) {
            session_fds[i] = fd;
            break;
        }
    pthread_mutex_unlock(&session_fds_lock);
}

void imap_unregister_fd(int fd)
{
    pthread_mutex_lock(&session_fds_lock);
    for (int i = 0; i < MAX_FDS; i++)
        if (session_fds[i] == fd)
            session_fds[i] = -1;
    pthread_mutex_unlock(&session_fds_lock);
}

/*
 * For signal handlers: cuts every session's socket (blocked reads return at
 * once) and makes every later read fail, so worker threads finish their
 * requests quickly and the mount can go. Only shutdown(2): async-signal-safe.
 */
void imap_interrupt_all(void)
{
    guard_stopping = 1;
    for (int i = 0; i < MAX_FDS; i++)
        if (session_fds[i] >= 0)
            shutdown(session_fds[i], SHUT_RDWR);
}

int imap_stopping(void)
{
    return guard_stopping;
}

void imap_guard_restart(struct imap_guard_stats *g)
{
    g->op_received = 0;
    clock_gettime(CLOCK_MONOTONIC, &g->op_start);
}

/* A server that sends a trickle after `timeout` seconds is no better than a dead one. */
static int guard_too_slow(const struct imap_guard_stats *g)
{
    struct timespec now;
    double elapsed;

    if (g->timeout == 0 || g->op_start.tv_sec == 0)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    elapsed = (double)(now.tv_sec - g->op_start.tv_sec) +
              (double)(now.tv_nsec - g->op_start.tv_nsec) / 1e9;
    /*
     * Half the timeout: a sync is two operations (listing, parts), and a
     * reader should not wait much past one timeout for both.
     */
    return elapsed > (g->timeout > 1 ? g->timeout / 2.0 : 1.0) &&
           (double)g->op_received < elapsed * IMAP_MIN_RATE;
}

static struct guard *guard_of(mailstream_low *s)
{
    return s->data;
}

/* Feeds received bytes to the lexer; -1 when a limit is crossed. */
static int guard_scan(struct guard *g, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = p[i];

        switch (g->state) {
        case LEX_LITERAL: {
            size_t skip = n - i < g->literal_left ? n - i : (size_t)g->literal_left;

            g->literal_left -= skip;
            i += skip - 1;
            if (g->literal_left == 0)
                g->state = LEX_PLAIN;
            break;
        }
        case LEX_QUOTED:
            if (ch == '\\')
                g->state = LEX_QUOTED_ESCAPE;
            else if (ch == '"' || ch == '\n')
                g->state = LEX_PLAIN;
            break;
        case LEX_QUOTED_ESCAPE:
            g->state = LEX_QUOTED;
            break;
        case LEX_BRACE:
            if (ch >= '0' && ch <= '9') {
                g->brace_value = g->brace_value * 10 + (uint64_t)(ch - '0');
                if (g->brace_value > IMAP_MAX_LITERAL)
                    return -1;
            } else if (ch == '}')
                g->state = LEX_AFTER_BRACE;
            else if (ch != '+') /* LITERAL+ only goes client to server; be lenient */
                g->state = LEX_PLAIN;
            break;
        case LEX_AFTER_BRACE:
            g->state = ch == '\r' ? LEX_AFTER_BRACE_CR : ch == '\n' ? LEX_LITERAL : LEX_PLAIN;
            break;
        case LEX_AFTER_BRACE_CR:
            g->state = ch == '\n' ? LEX_LITERAL : LEX_PLAIN;
            break;
        case LEX_PLAIN:
            if (++g->line_len > IMAP_MAX_LINE)
                return -2;
            if (ch == '"')
                g->state = LEX_QUOTED;
            else if (ch == '{') {
                g->state = LEX_BRACE;
                g->brace_value = 0;
            } else if (ch == '(') {
                if (++g->depth > IMAP_MAX_NESTING)
                    return -1;
            } else if (ch == ')' && g->depth > 0)
                g->depth--;
            else if (ch == '\n') {
                g->depth = 0; /* a response line ended */
                g->line_len = 0;
            }
            break;
        }
        if (g->state == LEX_LITERAL && g->literal_left == 0) {
            g->literal_left = g->brace_value;
            if (g->literal_left == 0)
                g->state = LEX_PLAIN;
        }
    }
    return 0;
}

static ssize_t guard_read(mailstream_low *s, void *buf, size_t count)
{
    struct guard *g = guard_of(s);
    ssize_t n;
    int r;

    if (guard_stopping) {
        g->stats->tripped = IMAP_GUARD_STOPPING;
        return -1;
    }
    n = g->inner->driver->mailstream_read(g->inner, buf, count);
    if (n <= 0)
        return n;
    g->stats->received += (uint64_t)n;
    g->stats->op_received += (uint64_t)n;
    if (g->stats->op_received > g->stats->op_budget) {
        g->stats->tripped = IMAP_GUARD_BUDGET;
        return -1;
    }
    if ((r = guard_scan(g, buf, (size_t)n)) != 0) {
        g->stats->tripped = r == -2                 ? IMAP_GUARD_LINE
                            : g->state == LEX_BRACE ? IMAP_GUARD_LITERAL
                                                    : IMAP_GUARD_NESTING;
        return -1;
    }
    if (guard_too_slow(g->stats)) {
        g->stats->tripped = IMAP_GUARD_SLOW;
        return -1;
    }
    return n;
}

static ssize_t guard_write(mailstream_low *s, const void *buf, size_t count)
{
    struct guard *g = guard_of(s);

    return g->inner->driver->mailstream_write(g->inner, buf, count);
}

static int guard_close(mailstream_low *s)
{
    struct guard *g = guard_of(s);

    return g->inner->driver->mailstream_close(g->inner);
}

static int guard_get_fd(mailstream_low *s)
{
    struct guard *g = guard_of(s);

    return g->inner->driver->mailstream_get_fd(g->inner);
}

static void guard_free(mailstream_low *s)
{
    struct guard *g = guard_of(s);

    mailstream_low_free(g->inner);
    free(g);
    free(s->identifier);
    free(s);
}

static void guard_cancel(mailstream_low *s)
{
    struct guard *g = guard_of(s);

    if (g->inner->driver->mailstream_cancel)
        g->inner->driver->mailstream_cancel(g->inner);
}

static struct mailstream_cancel *guard_get_cancel(mailstream_low *s)
{
    struct guard *g = guard_of(s);

    return g->inner->driver->mailstream_get_cancel
               ? g->inner->driver->mailstream_get_cancel(g->inner)
               : NULL;
}

static carray *guard_get_certificate_chain(mailstream_low *s)
{
    struct guard *g = guard_of(s);

    return g->inner->driver->mailstream_get_certificate_chain
               ? g->inner->driver->mailstream_get_certificate_chain(g->inner)
               : NULL;
}

static int guard_setup_idle(mailstream_low *s)
{
    struct guard *g = guard_of(s);

    return g->inner->driver->mailstream_setup_idle
               ? g->inner->driver->mailstream_setup_idle(g->inner)
               : -1;
}

static int guard_unsetup_idle(mailstream_low *s)
{
    struct guard *g = guard_of(s);

    return g->inner->driver->mailstream_unsetup_idle
               ? g->inner->driver->mailstream_unsetup_idle(g->inner)
               : -1;
}

static int guard_interrupt_idle(mailstream_low *s)
{
    struct guard *g = guard_of(s);

    return g->inner->driver->mailstream_interrupt_idle
               ? g->inner->driver->mailstream_interrupt_idle(g->inner)
               : -1;
}

static mailstream_low_driver guard_driver = {
    .mailstream_read = guard_read,
    .mailstream_write = guard_write,
    .mailstream_close = guard_close,
    .mailstream_get_fd = guard_get_fd,
    .mailstream_free = guard_free,
    .mailstream_cancel = guard_cancel,
    .mailstream_get_cancel = guard_get_cancel,
    .mailstream_get_certificate_chain = guard_get_certificate_chain,
    .mailstream_setup_idle = guard_setup_idle,
    .mailstream_unsetup_idle = guard_unsetup_idle,
    .mailstream_interrupt_idle = guard_interrupt_idle,
};

int imap_guard_install(mailimap *imap, struct imap_guard_stats *stats)
{
    mailstream *stream = imap->imap_stream;
    mailstream_low *inner, *outer;
    struct guard *g;

    if (stream == NULL || (inner = mailstream_get_low(stream)) == NULL)
        return -EINVAL;
    if ((g = calloc(1, sizeof *g)) == NULL)
        return -ENOMEM;
    g->inner = inner;
    g->stats = stats;
    if ((outer = mailstream_low_new(g, &guard_driver)) == NULL) {
        free(g);
        return -ENOMEM;
    }
    /* The inner stream keeps its timeout; logging and privacy move up. */
    outer->timeout = inner->timeout;
    outer->privacy = inner->privacy;
    outer->logger = inner->logger;
    outer->logger_context = inner->logger_context;
    inner->logger = NULL;
    mailstream_set_low(stream, outer);
    return 0;
}
