/*
 * cal_rope.c — rendered files as lists of segments (ropes) over texts the
 * versions hold already: a 10,000-event merged.ics is a list of pointers,
 * not 8 MB of copies. A rope holds what it points into (struct cal_hold):
 * the few pieces made for it and a reference to each version set it
 * borrows from, so it outlives the snapshot that rendered it.
 */
#include "cal_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct cal_hold {
    size_t nowned;
    char **owned;
    size_t nvers;
    struct cal_versions *vers[];
};

static int cal_grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap * 2 : 8;
    while (cap2 < need)
        cap2 *= 2;
    void *q = realloc(*p, cap2 * size);
    if (!q)
        return -1;
    *p = q;
    *cap = cap2;
    return 0;
}

/* Adjacent bytes extend the last segment (a text added in pieces). */
void cal_ropeb_add(struct cal_ropeb *b, const char *s, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->nseg) {
        struct iovec *last = &b->seg[b->nseg - 1];
        if ((const char *)last->iov_base + last->iov_len == s) {
            last->iov_len += n;
            b->len += n;
            return;
        }
    }
    if (cal_grow((void **)&b->seg, &b->capseg, b->nseg + 1, sizeof *b->seg) < 0) {
        b->oom = 1;
        return;
    }
    b->seg[b->nseg].iov_base = (void *)s;
    b->seg[b->nseg].iov_len = n;
    b->nseg++;
    b->len += n;
}

void cal_ropeb_adds(struct cal_ropeb *b, const char *s)
{
    cal_ropeb_add(b, s, strlen(s));
}

void cal_ropeb_own(struct cal_ropeb *b, struct cal_buf *buf)
{
    size_t n;
    char *p;
    if (buf->oom)
        b->oom = 1;
    if (b->oom || buf->len == 0) {
        cal_buf_free(buf);
        return;
    }
    if (!(p = cal_buf_take(buf, &n)) ||
        cal_grow((void **)&b->owned, &b->capowned, b->nowned + 1, sizeof *b->owned) < 0) {
        free(p);
        b->oom = 1;
        return;
    }
    b->owned[b->nowned++] = p;
    cal_ropeb_add(b, p, n);
}

void cal_ropeb_from(struct cal_ropeb *b, const struct cal_versions *v)
{
    if (b->oom || !v)
        return;
    if (b->nfrom && b->from[b->nfrom - 1] == v)
        return;
    if (cal_grow((void **)&b->from, &b->capfrom, b->nfrom + 1, sizeof *b->from) < 0) {
        b->oom = 1;
        return;
    }
    b->from[b->nfrom++] = v;
}

void cal_ropeb_free(struct cal_ropeb *b)
{
    for (size_t i = 0; i < b->nowned; i++)
        free(b->owned[i]);
    free(b->owned);
    free(b->seg);
    free(b->from);
    memset(b, 0, sizeof *b);
}

static int cal_ptr_cmp(const void *a, const void *b)
{
    const void *x = *(const void *const *)a, *y = *(const void *const *)b;
    return x < y ? -1 : x > y;
}

int cal_ropeb_take(struct cal_ropeb *b, struct cal_rope *out)
{
    memset(out, 0, sizeof *out);
    if (b->oom) {
        cal_ropeb_free(b);
        return -ENOMEM;
    }
    /* Each version set once, however many of its texts the rope uses. */
    size_t n = 0;
    if (b->nfrom > 1)
        qsort(b->from, b->nfrom, sizeof *b->from, cal_ptr_cmp);
    for (size_t i = 0; i < b->nfrom; i++)
        if (i == 0 || b->from[i] != b->from[i - 1])
            b->from[n++] = b->from[i];
    struct cal_hold *h = malloc(sizeof *h + n * sizeof h->vers[0]);
    if (!h) {
        cal_ropeb_free(b);
        return -ENOMEM;
    }
    h->nowned = b->nowned;
    h->owned = b->owned;
    h->nvers = n;
    for (size_t i = 0; i < n; i++)
        h->vers[i] = cal_versions_ref((struct cal_versions *)b->from[i]);
    out->seg = b->seg;
    out->nseg = b->nseg;
    out->len = b->len;
    out->hold = h;
    free(b->from);
    memset(b, 0, sizeof *b);
    return 0;
}

void cal_hold_release(void *hold)
{
    struct cal_hold *h = hold;
    if (!h)
        return;
    for (size_t i = 0; i < h->nowned; i++)
        free(h->owned[i]);
    free(h->owned);
    for (size_t i = 0; i < h->nvers; i++)
        cal_versions_free(h->vers[i]);
    free(h);
}

void cal_rope_free(struct cal_rope *r)
{
    if (!r)
        return;
    free(r->seg);
    cal_hold_release(r->hold);
    memset(r, 0, sizeof *r);
}

char *cal_rope_flatten(const struct cal_rope *r)
{
    char *p = malloc(r->len + 1);
    size_t at = 0;
    if (!p)
        return NULL;
    for (size_t i = 0; i < r->nseg; i++) {
        memcpy(p + at, r->seg[i].iov_base, r->seg[i].iov_len);
        at += r->seg[i].iov_len;
    }
    p[at] = '\0';
    return p;
}
