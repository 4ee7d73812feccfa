/*
 * imap_idle.c — push updates with IMAP IDLE (RFC 2177), for -o idle.
 *
 * One thread and one session of its own per watched mailbox (a session can
 * IDLE on one mailbox only). Anything the server says while idling (EXISTS,
 * EXPUNGE, FETCH) means "look again": the store's callback marks the
 * mailbox stale, and the next access syncs it. Errors of any kind end in a
 * reconnect after a growing pause (libetpan's IDLE has known traps; notes
 * §4). A pipe wakes the thread for shutdown.
 */
#include <errno.h>
#include <fcntl.h>
#include <libetpan/libetpan.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imap_internal.h"
#include "log.h"
#include "source.h"

/* Servers drop an IDLE after 30 minutes (RFC 2177); renew well before. */
#define IDLE_RENEW_MS (25 * 60 * 1000)

struct imap_watch {
    struct imap_watch *next;
    struct imap_src *src;
    char *mailbox;
    src_change_fn fn;
    void *ctx;
    int wake[2]; /* write a byte to stop the thread */
    pthread_t thread;
};

/* Waits up to ms for the wake pipe; nonzero when asked to stop. */
static int pause_or_stop(struct imap_watch *w, int ms)
{
    struct pollfd p = {.fd = w->wake[0], .events = POLLIN};

    return poll(&p, 1, ms) > 0;
}

/*
 * One IDLE round on a selected session: returns 1 when the server said
 * something (a change), 0 on the renewal timeout, -1 on error or stop.
 */
static int idle_round(struct imap_watch *w, struct imap_conn *c, int *stop)
{
    struct pollfd p[2];
    int said = 0, r;

    /* The guard's clock counts this round only, not the hours before it. */
    imap_guard_restart(&c->guard);
    if (mailimap_idle(c->imap) != MAILIMAP_NO_ERROR)
        return -1;
    /* Bytes libetpan already buffered never wake poll() (notes §4 a). */
    if (c->imap->imap_stream->read_buffer_len > 0)
        said = 1;
    else {
        p[0] = (struct pollfd){.fd = mailimap_idle_get_fd(c->imap), .events = POLLIN};
        p[1] = (struct pollfd){.fd = w->wake[0], .events = POLLIN};
        r = poll(p, 2, IDLE_RENEW_MS);
        if (r > 0 && (p[1].revents & POLLIN))
            *stop = 1;
        else if (r > 0)
            said = 1;
    }
    imap_guard_restart(&c->guard);
    if (mailimap_idle_done(c->imap) != MAILIMAP_NO_ERROR)
        return -1;
    return *stop ? -1 : said;
}

static void *watch_thread(void *arg)
{
    struct imap_watch *w = arg;
    struct imap_conn c = {.fd = -1};
    unsigned failures = 0;
    char err[256];
    int stop = 0;

    while (!stop) {
        int r = 0;

        if (imap_conn_ready(w->src, &c, err, sizeof err) != 0 ||
            imap_conn_examine(w->src, &c, w->mailbox, 1, err, sizeof err) != 0 ||
            !mailimap_has_idle(c.imap))
            r = -1;
        /*
         * A change may have come between the store's sync and this EXAMINE
         * (or while we were reconnecting): report one to be sure.
         */
        if (r == 0)
            w->fn(w->ctx);
        while (r >= 0 && !stop) {
            r = idle_round(w, &c, &stop);
            if (r > 0) {
                log_debug("%s: server reports a change (IDLE)", w->mailbox);
                w->fn(w->ctx);
            }
        }
        imap_conn_drop(&c);
        if (stop)
            break;
        failures++;
        stop = pause_or_stop(w, 1000 * (failures > 6 ? 60 : 1 << (failures - 1)));
    }
    return NULL;
}

int imap_watch(struct source *s, const char *mailbox, src_change_fn fn, void *ctx)
{
    struct imap_src *src = s->impl;
    struct imap_watch *w = calloc(1, sizeof *w);

    if (w == NULL)
        return -ENOMEM;
    w->src = src;
    w->fn = fn;
    w->ctx = ctx;
    if ((w->mailbox = strdup(mailbox)) == NULL || pipe2(w->wake, O_CLOEXEC) != 0) {
        free(w->mailbox);
        free(w);
        return -ENOMEM;
    }
    if (pthread_create(&w->thread, NULL, watch_thread, w) != 0) {
        close(w->wake[0]);
        close(w->wake[1]);
        free(w->mailbox);
        free(w);
        return -EAGAIN;
    }
    pthread_mutex_lock(&src->lock);
    w->next = src->watches;
    src->watches = w;
    pthread_mutex_unlock(&src->lock);
    return 0;
}

void imap_unwatch_all(struct imap_src *src)
{
    struct imap_watch *w;

    pthread_mutex_lock(&src->lock);
    w = src->watches;
    src->watches = NULL;
    pthread_mutex_unlock(&src->lock);
    while (w) {
        struct imap_watch *next = w->next;

        if (write(w->wake[1], "x", 1) < 0)
            log_warn("cannot wake the IDLE thread of %s", w->mailbox);
        pthread_join(w->thread, NULL);
        close(w->wake[0]);
        close(w->wake[1]);
        free(w->mailbox);
        free(w);
        w = next;
    }
}
