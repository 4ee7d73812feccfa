/*
 * store_status.c — the text of .status and .refresh: per mailbox, when it
 * was last synced, what it holds, what was skipped and the last error.
 * Plain text, one line per mailbox, for people and for scripts (grep).
 * Never includes a credential: only names, counts and error texts made by
 * our own code or the server's response text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "opts.h"
#include "store_internal.h"

static void format_time(time_t t, char *out, size_t outlen)
{
    struct tm tm;

    if (t == 0) {
        snprintf(out, outlen, "never");
        return;
    }
    gmtime_r(&t, &tm);
    strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One line for mailbox m (no network: it reports what is known now). */
static void status_line(struct mbox *m, FILE *f)
{
    char when[32];
    struct mbox_snap *snap;
    char error[256];
    time_t last;
    int fresh;

    pthread_mutex_lock(&m->lock);
    snap = m->snap;
    if (snap)
        atomic_fetch_add(&snap->refs, 1);
    last = m->last_sync;
    fresh = m->last_error[0] == '\0';
    snprintf(error, sizeof error, "%s", m->last_error[0] ? m->last_error : "none");
    pthread_mutex_unlock(&m->lock);
    format_time(last, when, sizeof when);
    fprintf(f, "%s: ", m->path + 1);
    if (snap == NULL)
        fprintf(f, "not synced yet");
    else
        fprintf(f,
                "%s, last sync %s, %u messages, %zu with calendar data, %zu events, "
                "%u calendar parts, %u skipped, %u warnings, %u unreadable messages",
                fresh ? "ok" : "stale", when, snap->messages, snap->nmsgs, snap->nfiles,
                snap->stats.parts, snap->stats.parts_bad, snap->stats.warnings, snap->unreadable);
    fprintf(f, ", last error: %s\n", error);
    mbox_snap_unref(snap);
}

/*
 * Status of every mailbox under scope (all of them when scope is NULL,
 * then with a header line for the account). Returns a new blob, or NULL.
 */
struct blob *store_status_text(struct store *s, struct tree *t, const struct dirnode *scope)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    if (f == NULL)
        return NULL;
    if (scope == NULL) {
        pthread_mutex_lock(&s->lock);
        fprintf(f, "account %s: %zu mailboxes, listing %s\n", opts_account(s->o), t->nmboxes,
                s->tree_error[0] ? s->tree_error : "ok");
        pthread_mutex_unlock(&s->lock);
    }
    for (size_t i = 0; i < t->nmboxes; i++) {
        struct mbox *m = t->mboxes[i];
        size_t plen = scope ? strlen(scope->path) : 0;

        if (scope == NULL || strcmp(scope->path, "/") == 0 ||
            (strncmp(m->path, scope->path, plen) == 0 &&
             (m->path[plen] == '\0' || m->path[plen] == '/')))
            status_line(m, f);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return blob_take(buf, len);
}
