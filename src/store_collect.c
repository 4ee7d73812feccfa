/*
 * store_collect.c — the parsed versions of one mailbox's messages, for a
 * sync (store_sync.c): those of messages the last snapshot knew are kept,
 * the rest come from the cache (parsed versions, else cached parts parsed
 * again) or, what the cache lacks, are fetched from the source and parsed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "log.h"
#include "mime.h"
#include "opts.h"
#include "source.h"
#include "store_internal.h"

/* ---- the source URL of RFC 5092 ---------------------------------------- */

/* Appends s percent-encoded (RFC 3986: everything but unreserved and a few). */
static void url_append(char *out, size_t outlen, const char *s, const char *keep)
{
    size_t n = strlen(out);

    for (; *s && n + 4 < outlen; s++) {
        unsigned char ch = (unsigned char)*s;

        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~", ch) || (keep && strchr(keep, ch)))
            out[n++] = (char)ch;
        else
            n += (size_t)snprintf(out + n, outlen - n, "%%%02X", ch);
    }
    out[n] = '\0';
}

/* imap://user@host:port/Mailbox;UIDVALIDITY=v/;UID=u (RFC 5092 §6). */
static void source_url(const struct opts *o, const struct mbox *m, uint32_t uidvalidity,
                       uint32_t uid, char *out, size_t outlen)
{
    char tail[64];

    if (o->kind == OPTS_SRC_MAILDIR) {
        snprintf(out, outlen, "file://");
        url_append(out, outlen, o->maildir, "/");
        strncat(out, "#", outlen - strlen(out) - 1);
        url_append(out, outlen, m->display, "/");
    } else {
        snprintf(out, outlen, "imap://");
        url_append(out, outlen, o->user, NULL);
        strncat(out, "@", outlen - strlen(out) - 1);
        url_append(out, outlen, o->host, ":[]");
        snprintf(tail, sizeof tail, ":%u/", o->port);
        strncat(out, tail, outlen - strlen(out) - 1);
        url_append(out, outlen, m->display, "/");
    }
    snprintf(tail, sizeof tail, ";UIDVALIDITY=%u/;UID=%u", uidvalidity, uid);
    strncat(out, tail, outlen - strlen(out) - 1);
}

/* ---- fetching and parsing the parts of new messages ------------------ */

/* base64 of CAL_MAX_PART_BYTES, with room for line breaks. */
#define PART_MAX_ENCODED ((uint32_t)(CAL_MAX_PART_BYTES / 3 * 4 + CAL_MAX_PART_BYTES / 38 + 4096))

struct part_meta {
    struct msgver *mv;
    const struct mime_part *part;
    uint32_t uid;
};

struct fetch_ctx {
    struct store *s;
    struct mbox *m;
    uint32_t uidvalidity;
    struct cache_writer *writer; /* parts handed to on_part now come from the source */
    struct part_meta *meta;
    struct src_part_req *reqs;
    size_t n;
    unsigned char *seen; /* a part reported twice (after a reconnect) is parsed once */
};

/* Decodes one fetched part and parses it into its message's versions. */
static int on_part(void *arg, size_t i, const char *data, size_t len)
{
    struct fetch_ctx *c = arg;
    struct part_meta *pm = &c->meta[i];
    struct cal_stats *st = &pm->mv->stats;
    char err[256], *text = NULL;
    size_t tlen = 0;
    int rc;

    if (c->seen[i])
        return 0;
    c->seen[i] = 1;
    /* Kept as fetched: a remount parses it again without asking the server. */
    if (c->writer && cache_writer_add(c->writer, pm->uid, pm->part->section, data, len) != 0)
        log_warn("%s: cannot cache UID %u part %s", c->m->display, pm->uid, pm->part->section);
    rc = mime_decode_part(data, len, pm->part->encoding, pm->part->charset, &text, &tlen, err,
                          sizeof err);
    if (rc == -ENOMEM)
        return rc;
    if (rc != 0) {
        st->parts++;
        st->parts_bad++;
        log_warn("%s: UID %u part %s skipped: %s", c->m->display, pm->uid, pm->part->section, err);
        return 0;
    }
    rc = cal_versions_add_part(pm->mv->v, text, tlen, &c->s->o->filter, st, err, sizeof err);
    free(text);
    if (rc == -ENOMEM)
        return rc;
    if (rc < 0)
        log_warn("%s: UID %u part %s skipped: %s", c->m->display, pm->uid, pm->part->section, err);
    return 0;
}

/* Requests ordered by (uid, section), to match what the cache holds. */
static int compare_req(const void *a, const void *b, void *arg)
{
    const struct fetch_ctx *fc = arg;
    const struct part_meta *x = &fc->meta[*(const size_t *)a], *y = &fc->meta[*(const size_t *)b];

    if (x->uid != y->uid)
        return x->uid < y->uid ? -1 : 1;
    return strcmp(x->part->section, y->part->section);
}

struct cache_view {
    struct fetch_ctx *fc;
    size_t *order; /* request indices sorted by compare_req */
};

/* A cached part: if a request wants it, it is parsed like a fetched one. */
static int on_cached_part(void *arg, uint32_t uid, const char *section, const char *data,
                          size_t len)
{
    struct cache_view *v = arg;
    size_t lo = 0, hi = v->fc->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct part_meta *pm = &v->fc->meta[v->order[mid]];
        int c = pm->uid != uid ? (pm->uid < uid ? -1 : 1) : strcmp(pm->part->section, section);

        if (c == 0)
            return on_part(v->fc, v->order[mid], data, len);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0; /* an expunged message's part, or one no longer wanted */
}

/*
 * Serves what it can from the disk cache (one pass over its packs).
 * Requests it served are marked seen; *missing counts the rest.
 */
static int parts_from_cache(struct fetch_ctx *fc, size_t *missing)
{
    struct cache_view v = {fc, NULL};
    int rc = 0;

    *missing = fc->n;
    if (fc->s->cache == NULL || fc->n == 0)
        return 0;
    if ((v.order = malloc(fc->n * sizeof *v.order)) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < fc->n; i++)
        v.order[i] = i;
    qsort_r(v.order, fc->n, sizeof *v.order, compare_req, fc);
    rc = cache_each_part(fc->s->cache, fc->m->raw, fc->uidvalidity, NULL, on_cached_part, &v);
    free(v.order);
    *missing = 0;
    for (size_t i = 0; i < fc->n; i++)
        *missing += !fc->seen[i];
    return rc;
}

struct missing_view {
    struct fetch_ctx *fc;
    size_t *map; /* request index → index in fc */
};

static int on_missing_part(void *arg, size_t j, const char *data, size_t len)
{
    struct missing_view *v = arg;

    return on_part(v->fc, v->map[j], data, len);
}

/* Fetches, in one go, the parts the cache did not have. */
static int fetch_missing(struct fetch_ctx *fc, size_t nmissing, char *err, size_t errlen)
{
    struct src_part_req *reqs = calloc(nmissing, sizeof *reqs);
    struct missing_view v = {fc, calloc(nmissing, sizeof *v.map)};
    size_t j = 0;
    int rc = -ENOMEM;

    if (reqs && v.map) {
        for (size_t i = 0; i < fc->n; i++)
            if (!fc->seen[i]) {
                reqs[j] = fc->reqs[i];
                v.map[j++] = i;
            }
        /* What arrives goes to the cache as one pack (one fsync per sync). */
        if (fc->s->cache)
            fc->writer = cache_writer_begin(fc->s->cache, fc->m->raw, fc->uidvalidity, NULL);
        rc = source_fetch_parts(fc->s->src, fc->m->raw, fc->uidvalidity, reqs, j, on_missing_part,
                                &v, err, errlen);
        /* Even after a failure the parts that did arrive are good to keep. */
        if (fc->writer && cache_writer_commit(fc->writer) != 0)
            log_warn("%s: cannot write fetched parts to the cache", fc->m->display);
        fc->writer = NULL;
    }
    free(reqs);
    free(v.map);
    return rc;
}

/* The old snapshot's versions of uid, when they are whole (else parse again). */
static struct msgver *reusable_msgver(const struct mbox_snap *old, uint32_t uid)
{
    struct msgver *mv = old ? msgver_find(old->msgs, old->nmsgs, uid) : NULL;

    return mv && !mv->incomplete ? mv : NULL;
}

/*
 * The highest UID the cache can hold anything of: a sync writes its listing
 * before it fetches, UIDs only grow (RFC 3501 §2.3.1.1), so a message still
 * listed that any earlier sync saw is in known. UINT32_MAX: no bound known
 * (no listing, e.g. a damaged one: the parts may still be good).
 */
uint32_t cache_bound(const struct src_listing *known, const struct src_listing *l)
{
    uint32_t top = 0;

    if (known == NULL || known->uidvalidity != l->uidvalidity)
        return UINT32_MAX;
    for (size_t i = 0; i < known->count; i++)
        top = known->msgs[i].uid > top ? known->msgs[i].uid : top;
    return top;
}

/*
 * Fills snap->msgs for the listing: known messages are shared with the old
 * snapshot, new ones get fresh versions from their fetched parts.
 */
int collect_versions(struct store *s, struct mbox *m, const struct mbox_snap *old,
                     const struct src_listing *l, uint32_t cached_top, struct mbox_snap *snap,
                     int offline, char *err, size_t errlen)
{
    size_t ncached = 0;

    struct fetch_ctx fc = {.s = s, .m = m, .uidvalidity = l->uidvalidity};
    struct msgver **fresh = NULL;
    const struct src_message **fresh_msg = NULL;
    size_t nparts = 0, k = 0, nreqs = 0, nfresh = 0;
    int rc = 0;

    if (old && old->uidvalidity != l->uidvalidity) {
        log_info("%s: UIDVALIDITY changed (%u -> %u): reading it anew", m->display,
                 old->uidvalidity, l->uidvalidity);
        old = NULL;
    }
    for (size_t i = 0; i < l->count; i++)
        if (l->msgs[i].parts.count && !reusable_msgver(old, l->msgs[i].uid))
            nparts += l->msgs[i].parts.count;
    snap->msgs = calloc(l->count ? l->count : 1, sizeof *snap->msgs);
    fresh = calloc(l->count ? l->count : 1, sizeof *fresh);
    fresh_msg = calloc(l->count ? l->count : 1, sizeof *fresh_msg);
    fc.meta = calloc(nparts ? nparts : 1, sizeof *fc.meta);
    fc.reqs = calloc(nparts ? nparts : 1, sizeof *fc.reqs);
    fc.seen = calloc(nparts ? nparts : 1, 1);
    if (!snap->msgs || !fresh || !fresh_msg || !fc.meta || !fc.reqs || !fc.seen) {
        rc = -ENOMEM;
        goto out;
    }
    /* Messages known from the last sync keep their versions: IMAP messages never change. */
    for (size_t i = 0; i < l->count; i++) {
        const struct src_message *msg = &l->msgs[i];
        struct msgver *mv;
        char url[1024];
        struct cal_origin origin;

        if (msg->parts.count == 0)
            continue;
        if ((mv = reusable_msgver(old, msg->uid)) != NULL) {
            atomic_fetch_add(&mv->refs, 1);
            snap->msgs[snap->nmsgs++] = mv;
            continue;
        }
        source_url(s->o, m, l->uidvalidity, msg->uid, url, sizeof url);
        origin = (struct cal_origin){.mailbox = m->display,
                                     .uid = msg->uid,
                                     .internaldate = msg->internaldate,
                                     .source_url = url};
        if ((mv = msgver_new(msg->uid, msg->internaldate, &origin)) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        snap->msgs[snap->nmsgs++] = mv;
        fresh[nfresh] = mv;
        fresh_msg[nfresh++] = msg;
    }
    /*
     * New to this mount but parsed by an earlier one: no libical needed.
     * Messages past what the cache can know (fresh is in UID order) are not
     * looked for: an incremental sync then reads no pack at all.
     */
    while (ncached < nfresh && fresh[ncached]->uid <= cached_top)
        ncached++;
    if ((rc = store_versions_load(s, m, l->uidvalidity, fresh, ncached)) != 0)
        goto out;
    for (size_t i = 0; i < nfresh; i++) {
        const struct src_message *msg = fresh_msg[i];
        struct msgver *mv = fresh[i];

        if (mv->from_cache)
            continue;
        for (size_t p = 0; p < msg->parts.count; p++) {
            /* Too big to be an invitation once decoded: not worth the download. */
            if (msg->parts.parts[p].size > PART_MAX_ENCODED) {
                log_warn("%s: UID %u part %s skipped: %u bytes", m->display, msg->uid,
                         msg->parts.parts[p].section, msg->parts.parts[p].size);
                mv->stats.parts++;
                mv->stats.parts_bad++;
                continue;
            }
            fc.meta[k] = (struct part_meta){mv, &msg->parts.parts[p], msg->uid};
            fc.reqs[k] = (struct src_part_req){msg->uid, msg->parts.parts[p].section};
            k++;
        }
    }
    fc.n = k;
    nreqs = k;
    if (k && fc.meta[0].uid <= cached_top)
        rc = parts_from_cache(&fc, &nreqs);
    /* Offline, what the cache lacks is simply not shown yet. */
    if (rc == 0 && nreqs && !offline)
        rc = fetch_missing(&fc, nreqs, err, errlen);
    /*
     * A part the source could not deliver (unreadable answer), or offline
     * one the cache does not have, is skipped for now; the message stays
     * incomplete, so the next sync asks again.
     */
    for (size_t i = 0; rc == 0 && i < fc.n; i++)
        if (!fc.seen[i]) {
            if (!offline) {
                fc.meta[i].mv->stats.parts++;
                fc.meta[i].mv->stats.parts_bad++;
            }
            fc.meta[i].mv->incomplete = 1;
        }
    /* Each message's parts were all offered: a part repeated later is a new sync's. */
    for (size_t i = 0; i < nfresh; i++)
        cal_versions_seal(fresh[i]->v);
    /* Complete versions only (store_versions_save skips incomplete ones). */
    if (rc == 0)
        store_versions_save(s, m, l->uidvalidity, fresh, nfresh);
out:
    free(fresh);
    free(fresh_msg);
    free(fc.meta);
    free(fc.reqs);
    free(fc.seen);
    return rc;
}
