/* source.c — dispatch from the store's questions to the driver that answers them. */
#include "source.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "opts.h"

struct source *source_new(const struct opts *o, const char *password)
{
    if (o->kind == OPTS_SRC_MAILDIR)
        return maildir_source_new(o);
    return imap_source_new(o, password);
}

int source_check(struct source *s, char *err, size_t errlen)
{
    return s->drv->check(s, err, errlen);
}

int source_list_mailboxes(struct source *s, struct src_mailbox **out, size_t *n, char *err,
                          size_t errlen)
{
    return s->drv->list_mailboxes(s, out, n, err, errlen);
}

void source_mailboxes_free(struct src_mailbox *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i].name);
    free(m);
}

int source_list_messages(struct source *s, const char *mailbox, const struct src_listing *known,
                         struct src_listing *out, char *err, size_t errlen)
{
    return s->drv->list_messages(s, mailbox, known, out, err, errlen);
}

int source_mailbox_state(struct source *s, const char *mailbox, struct src_state *out, char *err,
                         size_t errlen)
{
    memset(out, 0, sizeof *out);
    return s->drv->state ? s->drv->state(s, mailbox, out, err, errlen) : -ENOTSUP;
}

const struct src_message *source_listing_find(const struct src_listing *l, uint32_t uid)
{
    size_t lo = 0, hi = l ? l->count : 0;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (l->msgs[mid].uid == uid)
            return &l->msgs[mid];
        if (l->msgs[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int source_message_copy(const struct src_message *m, struct src_message *out)
{
    *out = *m;
    out->parts.parts = NULL;
    if (m->parts.count == 0)
        return 0;
    out->parts.parts = malloc(m->parts.count * sizeof *out->parts.parts);
    if (out->parts.parts == NULL)
        return -ENOMEM;
    memcpy(out->parts.parts, m->parts.parts, m->parts.count * sizeof *out->parts.parts);
    return 0;
}

void source_listing_free(struct src_listing *l)
{
    for (size_t i = 0; i < l->count; i++)
        mime_part_list_free(&l->msgs[i].parts);
    free(l->msgs);
    l->msgs = NULL;
    l->count = 0;
}

int source_fetch_parts(struct source *s, const char *mailbox, uint32_t uidvalidity,
                       const struct src_part_req *reqs, size_t n, src_part_fn fn, void *ctx,
                       char *err, size_t errlen)
{
    return s->drv->fetch_parts(s, mailbox, uidvalidity, reqs, n, fn, ctx, err, errlen);
}

int source_watch(struct source *s, const char *mailbox, void (*fn)(void *ctx), void *ctx)
{
    return s->drv->watch ? s->drv->watch(s, mailbox, fn, ctx) : -ENOTSUP;
}

void imap_interrupt_all(void);

void source_interrupt_all(void)
{
    imap_interrupt_all();
}

void source_free(struct source *s)
{
    if (s)
        s->drv->free(s);
}
