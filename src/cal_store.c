/*
 * cal_store.c — versions to bytes and back, so a remount need not parse
 * every invitation again with libical (parsing is ~100 µs a part; loading
 * is a copy).
 *
 * The bytes are a private format of this build: a magic with a format
 * number, then the message's fields and each version's, lengths before
 * strings, host byte order. They belong in the cache next to the parts,
 * keyed by the filter they were made with (the filter decides what a
 * version holds). Anything that does not add up is refused as a whole.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cal.h"
#include "cal_internal.h"

#define SAVE_MAGIC "ICFSVER" CAL_SAVE_FORMAT

struct writer {
    char *buf;
    size_t len, cap;
    int failed;
};

static void put(struct writer *w, const void *p, size_t n)
{
    if (w->failed || n == 0)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 1024;
        char *bigger;

        while (cap < w->len + n)
            cap *= 2;
        if ((bigger = realloc(w->buf, cap)) == NULL) {
            w->failed = 1;
            return;
        }
        w->buf = bigger;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void put_u64(struct writer *w, uint64_t v)
{
    put(w, &v, sizeof v);
}

static void put_str(struct writer *w, const char *s, size_t len)
{
    /* UINT64_MAX stands for NULL. */
    put_u64(w, s ? len : UINT64_MAX);
    if (s)
        put(w, s, len);
}

static void put_cstr(struct writer *w, const char *s)
{
    put_str(w, s, s ? strlen(s) : 0);
}

static void put_version(struct writer *w, const struct cal_version *x)
{
    put_cstr(w, x->uid);
    put(w, x->rid, sizeof x->rid);
    put_cstr(w, x->rid_value);
    put_cstr(w, x->rid_tzid);
    put_u64(w, (uint64_t)x->rid_is_date);
    put_u64(w, (uint64_t)(int64_t)x->sequence);
    put_u64(w, (uint64_t)x->dtstamp);
    put_u64(w, x->kind);
    put_u64(w, (uint64_t)x->cancel);
    put_str(w, x->text, x->len);
    put_u64(w, x->ntz);
    for (size_t i = 0; i < x->ntz; i++) {
        put_cstr(w, x->tzids[i]);
        put_u64(w, (uint64_t)(int64_t)x->tzdef[i]);
    }
    put_u64(w, x->match_id != NULL);
    put_u64(w, x->match_mask);
    put_u64(w, (uint64_t)x->win_done);
    if (x->win_done) {
        put_u64(w, (uint64_t)x->win.has_after);
        put_u64(w, (uint64_t)x->win.has_before);
        put_u64(w, (uint64_t)x->win.after);
        put_u64(w, (uint64_t)x->win.before);
        put_u64(w, x->win.total);
        put_u64(w, x->win.nkeys);
        put(w, x->win.keys, x->win.nkeys * sizeof *x->win.keys);
    }
}

int cal_versions_save(const struct cal_versions *v, char **out, size_t *len)
{
    struct writer w = {0};

    put(&w, SAVE_MAGIC, 8);
    put_cstr(&w, v->mailbox);
    put_u64(&w, v->uid);
    put_u64(&w, (uint64_t)v->internaldate);
    put_cstr(&w, v->source_url);
    put_u64(&w, v->nvtz);
    for (size_t i = 0; i < v->nvtz; i++)
        put_str(&w, v->vtz[i], v->vtz_len[i]);
    put_u64(&w, v->n);
    for (size_t i = 0; i < v->n; i++)
        put_version(&w, &v->v[i]);
    if (w.failed) {
        free(w.buf);
        return -ENOMEM;
    }
    *out = w.buf;
    *len = w.len;
    return 0;
}

/* ---- loading ------------------------------------------------------------ */

struct reader {
    const char *p;
    size_t left;
    int failed;
};

static int get(struct reader *r, void *out, size_t n)
{
    if (n == 0)
        return r->failed ? -1 : 0;
    if (r->failed || n > r->left) {
        r->failed = 1;
        return -1;
    }
    memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
    return 0;
}

static uint64_t get_u64(struct reader *r)
{
    uint64_t v = 0;

    get(r, &v, sizeof v);
    return v;
}

/* A counted string as a new C string (*len set); NULL for a saved NULL or on error. */
static char *get_str(struct reader *r, size_t *len)
{
    uint64_t n = get_u64(r);
    char *s;

    if (r->failed || n == UINT64_MAX)
        return NULL;
    if (n > r->left || (s = malloc(n + 1)) == NULL) {
        r->failed = 1;
        return NULL;
    }
    get(r, s, n);
    s[n] = '\0';
    if (len)
        *len = n;
    return s;
}

/* A count that cannot exceed what is left (each item takes at least 8 bytes). */
static size_t get_count(struct reader *r)
{
    uint64_t n = get_u64(r);

    if (n > r->left / 8) {
        r->failed = 1;
        return 0;
    }
    return (size_t)n;
}

static int get_version(struct reader *r, struct cal_version *x, size_t nvtz,
                       const struct cal_filter *f)
{
    uint64_t has_match;

    x->uid = get_str(r, NULL);
    get(r, x->rid, sizeof x->rid);
    x->rid[sizeof x->rid - 1] = '\0';
    x->rid_value = get_str(r, NULL);
    x->rid_tzid = get_str(r, NULL);
    x->rid_is_date = (int)get_u64(r);
    x->sequence = (int)(int64_t)get_u64(r);
    x->dtstamp = (int64_t)get_u64(r);
    x->kind = (unsigned)get_u64(r);
    x->cancel = (int)get_u64(r);
    x->text = get_str(r, &x->len);
    x->ntz = get_count(r);
    if (r->failed || x->uid == NULL || x->text == NULL)
        return -1;
    if (x->ntz && ((x->tzids = calloc(x->ntz, sizeof *x->tzids)) == NULL ||
                   (x->tzdef = calloc(x->ntz, sizeof *x->tzdef)) == NULL))
        return -1;
    for (size_t i = 0; i < x->ntz; i++) {
        x->tzids[i] = get_str(r, NULL);
        x->tzdef[i] = (int)(int64_t)get_u64(r);
        if (x->tzids[i] == NULL || x->tzdef[i] < -1 || x->tzdef[i] >= (int)nvtz)
            return -1;
    }
    has_match = get_u64(r);
    x->match_mask = get_u64(r);
    /* The match result belongs to the filter it was made with: this one. */
    if (has_match) {
        x->match_id = f->match;
        x->match_n = f->nmatch;
    }
    x->win_done = (int)get_u64(r);
    if (x->win_done) {
        x->win.has_after = (int)get_u64(r);
        x->win.has_before = (int)get_u64(r);
        x->win.after = (int64_t)get_u64(r);
        x->win.before = (int64_t)get_u64(r);
        x->win.total = (unsigned)get_u64(r);
        x->win.nkeys = (unsigned)get_u64(r);
        if (r->failed || x->win.nkeys > r->left / sizeof *x->win.keys)
            return -1;
        if (x->win.nkeys && (x->win.keys = malloc(x->win.nkeys * sizeof *x->win.keys)) == NULL)
            return -1;
        get(r, x->win.keys, x->win.nkeys * sizeof *x->win.keys);
    }
    return r->failed ? -1 : 0;
}

static int load_vtimezones(struct reader *r, struct cal_versions *v)
{
    v->nvtz = v->capvtz = get_count(r);
    if (v->nvtz && ((v->vtz = calloc(v->nvtz, sizeof *v->vtz)) == NULL ||
                    (v->vtz_len = calloc(v->nvtz, sizeof *v->vtz_len)) == NULL))
        return -1;
    for (size_t i = 0; i < v->nvtz; i++) {
        size_t len = 0;
        char *text = get_str(r, &len);

        if (text == NULL)
            return -1;
        v->vtz[i] = cal_intern(text, len);
        v->vtz_len[i] = len;
        free(text);
        if (v->vtz[i] == NULL)
            return -1;
    }
    return 0;
}

struct cal_versions *cal_versions_load(const char *buf, size_t len, const struct cal_filter *f)
{
    struct reader r = {buf, len, 0};
    struct cal_versions *v = calloc(1, sizeof *v);
    char magic[8];

    if (v == NULL)
        return NULL;
    if (get(&r, magic, 8) != 0 || memcmp(magic, SAVE_MAGIC, 8) != 0)
        goto fail;
    v->mailbox = get_str(&r, NULL);
    v->uid = (uint32_t)get_u64(&r);
    v->internaldate = (int64_t)get_u64(&r);
    v->source_url = get_str(&r, NULL);
    if (v->mailbox == NULL || v->source_url == NULL || load_vtimezones(&r, v) != 0)
        goto fail;
    v->cap = get_count(&r);
    if (v->cap && (v->v = calloc(v->cap, sizeof *v->v)) == NULL)
        goto fail;
    for (; v->n < v->cap; v->n++) {
        v->v[v->n].msg = v;
        if (get_version(&r, &v->v[v->n], v->nvtz, f) != 0) {
            v->n++; /* so that cal_versions_free() frees what it holds */
            goto fail;
        }
    }
    if (r.left != 0)
        goto fail;
    return v;
fail:
    cal_versions_free(v);
    return NULL;
}
