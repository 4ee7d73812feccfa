/*
 * store_versions.c — parsed versions kept in the cache.
 *
 * Parsing a calendar part with libical is the costliest step of a sync. A
 * message's versions never change (its UID and UIDVALIDITY name fixed
 * bytes), so once parsed they are saved on a cache shelf of their own, and
 * a remount loads them instead of parsing every part again. What a version
 * holds depends on the filter (components, privacy, match, dates) and on
 * this build, so the shelf is named after both: another filter simply finds
 * an empty shelf.
 *
 * A record is the message's parse statistics followed by the bytes of
 * cal_versions_save(), under (uid, section "0").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "log.h"
#include "opts.h"
#include "store_internal.h"
#include "version.h"

#define VERSIONS_SECTION "0"

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s)
{
    return fnv(h, s, strlen(s) + 1);
}

void store_versions_shelf(const struct opts *o, char *out, size_t outlen)
{
    const struct cal_filter *f = &o->filter;
    char num[96];
    uint64_t h = 0xcbf29ce484222325ull;

    /*
     * The release and the format of saved versions: a release that renders
     * components differently must change one of them (CAL_SAVE_FORMAT).
     */
    h = fnv_str(h, CAL_PRODID);
    h = fnv_str(h, IMAPCALFS_VERSION);
    h = fnv_str(h, CAL_SAVE_FORMAT);
    snprintf(num, sizeof num, "%u %d %d %lld %d %lld", f->kinds, f->privacy_busy, f->has_after,
             (long long)f->after, f->has_before, (long long)f->before);
    h = fnv_str(h, num);
    for (size_t i = 0; i < f->nmatch; i++)
        h = fnv_str(h, f->match[i].spec ? f->match[i].spec : "");
    snprintf(out, outlen, "v-%016llx", (unsigned long long)h);
}

struct load_ctx {
    struct store *s;
    struct msgver **fresh; /* sorted by uid (the listing's order) */
    size_t n;
    size_t loaded;
};

static int on_record(void *arg, uint32_t uid, const char *section, const char *data, size_t len)
{
    struct load_ctx *c = arg;
    struct msgver *mv = msgver_find(c->fresh, c->n, uid);
    struct cal_versions *v;
    struct cal_stats st;

    if (mv == NULL || mv->from_cache || strcmp(section, VERSIONS_SECTION) != 0 || len < sizeof st)
        return 0;
    memcpy(&st, data, sizeof st);
    if ((v = cal_versions_load(data + sizeof st, len - sizeof st, &c->s->o->filter)) == NULL)
        return 0; /* not of this format: it is parsed again */
    cal_versions_free(mv->v);
    mv->v = v;
    mv->stats = st;
    mv->from_cache = 1;
    c->loaded++;
    return 0;
}

int store_versions_load(struct store *s, struct mbox *m, uint32_t uidvalidity,
                        struct msgver **fresh, size_t n)
{
    struct load_ctx c = {s, fresh, n, 0};
    int rc;

    if (s->cache == NULL || n == 0)
        return 0;
    rc = cache_each_part(s->cache, m->raw, uidvalidity, s->versions_shelf, on_record, &c);
    if (c.loaded)
        log_debug("%s: %zu of %zu new messages' versions from the cache", m->display, c.loaded, n);
    return rc;
}

void store_versions_save(struct store *s, struct mbox *m, uint32_t uidvalidity,
                         struct msgver **fresh, size_t n)
{
    struct cache_writer *w;

    if (s->cache == NULL || n == 0)
        return;
    if ((w = cache_writer_begin(s->cache, m->raw, uidvalidity, s->versions_shelf)) == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        char *bytes = NULL, *rec;
        size_t len = 0;

        if (fresh[i]->from_cache || fresh[i]->incomplete ||
            cal_versions_save(fresh[i]->v, &bytes, &len) != 0)
            continue;
        if ((rec = malloc(sizeof fresh[i]->stats + len)) != NULL) {
            memcpy(rec, &fresh[i]->stats, sizeof fresh[i]->stats);
            memcpy(rec + sizeof fresh[i]->stats, bytes, len);
            cache_writer_add(w, fresh[i]->uid, VERSIONS_SECTION, rec, sizeof fresh[i]->stats + len);
            free(rec);
        }
        free(bytes);
    }
    if (cache_writer_commit(w) != 0)
        log_warn("%s: cannot write parsed versions to the cache", m->display);
}
