/*
 * imap_fetch.c — the IMAP driver's read operations: LIST, the listing of a
 * mailbox (one UID FETCH of UID, INTERNALDATE and BODYSTRUCTURE) and the
 * fetch of calendar parts (BODY.PEEK[section], many UIDs per command).
 */
#include <errno.h>
#include <glob.h>
#include <libetpan/libetpan.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_internal.h"
#include "log.h"
#include "source.h"

/* UIDs per part-fetch command: bounds the command line and the response. */
#define FETCH_CHUNK 1000

static struct imap_src *imap_of(struct source *s)
{
    return s->impl;
}

/* AUTHENTICATE goes through Cyrus SASL, which needs its PLAIN plugin. */
int imap_sasl_plain_available(void)
{
    glob_t g;
    int found;

    if (glob("/usr/lib/*/sasl2/libplain.so*", 0, NULL, &g) != 0)
        return 0;
    found = g.gl_pathc > 0;
    globfree(&g);
    return found;
}

/* ---- LIST ---------------------------------------------------------------- */

struct list_arg {
    struct src_mailbox *mb;
    size_t n, cap;
};

static int mailbox_not_selectable(const struct mailimap_mbx_list_flags *f)
{
    if (f == NULL)
        return 0;
    if (f->mbf_type == MAILIMAP_MBX_LIST_FLAGS_SFLAG &&
        f->mbf_sflag == MAILIMAP_MBX_LIST_SFLAG_NOSELECT)
        return 1;
    for (clistiter *it = f->mbf_oflags ? clist_begin(f->mbf_oflags) : NULL; it;
         it = clist_next(it)) {
        const struct mailimap_mbx_list_oflag *of = clist_content(it);

        if (of->of_type == MAILIMAP_MBX_LIST_OFLAG_FLAG_EXT && of->of_flag_ext &&
            (strcasecmp(of->of_flag_ext, "NonExistent") == 0 ||
             strcasecmp(of->of_flag_ext, "Noselect") == 0))
            return 1;
    }
    return 0;
}

static int list_add(struct list_arg *a, const struct mailimap_mailbox_list *m)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->mb[i].name, m->mb_name) == 0)
            return 0; /* matched by two patterns */
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        struct src_mailbox *mb = realloc(a->mb, cap * sizeof *mb);

        if (mb == NULL)
            return -ENOMEM;
        a->mb = mb;
        a->cap = cap;
    }
    if ((a->mb[a->n].name = strdup(m->mb_name)) == NULL)
        return -ENOMEM;
    a->mb[a->n].delim = m->mb_delimiter;
    a->mb[a->n].selectable = !mailbox_not_selectable(m->mb_flag);
    a->n++;
    return 0;
}

static int list_op(struct imap_src *src, struct imap_conn *c, void *arg, char *err, size_t errlen)
{
    struct list_arg *a = arg;
    char *patterns = strdup(src->patterns), *save = NULL;
    int rc = 0;

    if (patterns == NULL)
        return -ENOMEM;
    for (char *p = strtok_r(patterns, ":", &save); p && rc == 0; p = strtok_r(NULL, ":", &save)) {
        clist *res = NULL;
        int r = mailimap_list(c->imap, "", p, &res);

        if (r != MAILIMAP_NO_ERROR) {
            rc = imap_command_failed(src, c, r, "LIST", err, errlen);
            break;
        }
        for (clistiter *it = clist_begin(res); it && rc == 0; it = clist_next(it))
            rc = list_add(a, clist_content(it));
        mailimap_list_result_free(res);
    }
    free(patterns);
    return rc;
}

static int compare_mailbox(const void *a, const void *b)
{
    return strcmp(((const struct src_mailbox *)a)->name, ((const struct src_mailbox *)b)->name);
}

int imap_list_mailboxes(struct source *s, struct src_mailbox **out, size_t *n, char *err,
                        size_t errlen)
{
    struct list_arg a = {0};
    int rc = imap_with_session(imap_of(s), list_op, &a, err, errlen);

    if (rc != 0) {
        source_mailboxes_free(a.mb, a.n);
        return rc;
    }
    qsort(a.mb, a.n, sizeof *a.mb, compare_mailbox);
    *out = a.mb;
    *n = a.n;
    return 0;
}

/* ---- listing: UID FETCH 1:* (UID INTERNALDATE BODYSTRUCTURE) ------------ */

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* INTERNALDATE to seconds; dt_zone is ±HHMM read as a decimal number. */
static int64_t internaldate_seconds(const struct mailimap_date_time *dt)
{
    int zone = dt->dt_zone, sign = zone < 0 ? -1 : 1;
    int64_t offset, t;

    zone *= sign;
    offset = sign * ((zone / 100) * 3600 + (zone % 100) * 60);
    t = days_from_civil(dt->dt_year, (unsigned)dt->dt_month, (unsigned)dt->dt_day) * 86400 +
        dt->dt_hour * 3600 + dt->dt_min * 60 + dt->dt_sec;
    return t - offset;
}

struct listing_arg {
    struct src_listing *out;
    size_t cap;
    int rc;
};

/* Room for one more message in la->out. */
static int grow_listing(struct listing_arg *a)
{
    size_t cap = a->cap ? a->cap * 2 : 256;
    struct src_message *msgs = realloc(a->out->msgs, cap * sizeof *msgs);

    if (msgs == NULL)
        return -ENOMEM;
    a->out->msgs = msgs;
    a->cap = cap;
    return 0;
}

/* Called by libetpan for each FETCH response; nothing is accumulated. */
static void listing_handler(struct mailimap_msg_att *att, void *ctx)
{
    struct listing_arg *a = ctx;
    struct src_message m = {0};
    const struct mailimap_body *body = NULL;
    int has_date = 0;

    if (a->rc != 0)
        return;
    for (clistiter *it = clist_begin(att->att_list); it; it = clist_next(it)) {
        struct mailimap_msg_att_item *item = clist_content(it);
        struct mailimap_msg_att_static *st;

        if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
            continue;
        st = item->att_data.att_static;
        if (st->att_type == MAILIMAP_MSG_ATT_UID)
            m.uid = st->att_data.att_uid;
        else if (st->att_type == MAILIMAP_MSG_ATT_INTERNALDATE && st->att_data.att_internal_date) {
            m.internaldate = internaldate_seconds(st->att_data.att_internal_date);
            has_date = 1;
        } else if (st->att_type == MAILIMAP_MSG_ATT_BODYSTRUCTURE)
            body = st->att_data.att_bodystructure;
    }
    /* Unsolicited FETCH responses (flag changes) carry no UID or no body. */
    if (m.uid == 0 || body == NULL || !has_date)
        return;
    if (a->out->count == a->cap && grow_listing(a) != 0) {
        a->rc = -ENOMEM;
        return;
    }
    if (mime_find_calendar_parts(body, &m.parts) != 0) {
        a->rc = -ENOMEM;
        return;
    }
    a->out->msgs[a->out->count++] = m;
}

static int compare_message(const void *a, const void *b)
{
    uint32_t x = ((const struct src_message *)a)->uid, y = ((const struct src_message *)b)->uid;

    return x < y ? -1 : x > y;
}

struct messages_arg {
    const char *mailbox;
    const struct src_listing *known;
    struct src_listing *out;
};

/* UID FETCH set (UID INTERNALDATE BODYSTRUCTURE), appending to la->out. */
static int fetch_structure(struct imap_src *src, struct imap_conn *c, struct mailimap_set *set,
                           struct listing_arg *la, char *err, size_t errlen)
{
    struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
    clist *res = NULL;
    int rc, r;

    if (ft == NULL ||
        mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid()) ||
        mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_internaldate()) ||
        mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_bodystructure())) {
        if (ft)
            mailimap_fetch_type_free(ft);
        return -ENOMEM;
    }
    mailimap_set_msg_att_handler(c->imap, listing_handler, la);
    r = mailimap_uid_fetch(c->imap, set, ft, &res);
    mailimap_set_msg_att_handler(c->imap, NULL, NULL);
    /* On a tagged NO libetpan has freed the list already and left res dangling. */
    if (res && r == MAILIMAP_NO_ERROR)
        mailimap_fetch_list_free(res);
    mailimap_fetch_type_free(ft);
    if (r != MAILIMAP_NO_ERROR)
        rc = imap_command_failed(src, c, r, "UID FETCH (BODYSTRUCTURE)", err, errlen);
    else
        rc = la->rc;
    return rc;
}

static int compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* UID SEARCH of the mailbox's messages (all, or the search= keys); sorted. */
static int search_uids(struct imap_src *src, struct imap_conn *c, uint32_t **uids, size_t *n,
                       char *err, size_t errlen)
{
    struct mailimap_search_key *key = NULL;
    clist *res = NULL;
    size_t i = 0;
    int r, rc;

    if ((rc = imap_search_key(src->search, &key, err, errlen)) != 0)
        return rc;
    r = mailimap_uid_search(c->imap, src->search ? "UTF-8" : NULL, key, &res);
    mailimap_search_key_free(key);
    if (r != MAILIMAP_NO_ERROR)
        return imap_command_failed(src, c, r, "UID SEARCH", err, errlen);
    *n = (size_t)clist_count(res);
    if ((*uids = malloc((*n ? *n : 1) * sizeof **uids)) == NULL) {
        mailimap_search_result_free(res);
        return -ENOMEM;
    }
    for (clistiter *it = clist_begin(res); it; it = clist_next(it))
        (*uids)[i++] = *(uint32_t *)clist_content(it);
    mailimap_search_result_free(res);
    qsort(*uids, *n, sizeof **uids, compare_u32);
    return 0;
}

/*
 * Lists by difference with a known listing: messages still present are
 * copied from it, and only new UIDs are asked for their structure.
 */
static int list_incremental(struct imap_src *src, struct imap_conn *c, struct messages_arg *ma,
                            struct listing_arg *la, char *err, size_t errlen)
{
    struct mailimap_set *set = NULL;
    uint32_t *uids = NULL;
    size_t n = 0, nnew = 0;
    int rc;

    if ((rc = search_uids(src, c, &uids, &n, err, errlen)) != 0)
        return rc;
    if ((ma->out->msgs = calloc(n ? n : 1, sizeof *ma->out->msgs)) == NULL) {
        free(uids);
        return -ENOMEM;
    }
    la->cap = n ? n : 1;
    if ((set = mailimap_set_new_empty()) == NULL)
        rc = -ENOMEM;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct src_message *m = source_listing_find(ma->known, uids[i]);

        /* An unreadable mark may come from a passing fault: ask again. */
        if (m && !m->unreadable) {
            rc = source_message_copy(m, &ma->out->msgs[ma->out->count]);
            ma->out->count += rc == 0;
        } else {
            nnew++;
            if (mailimap_set_add_single(set, uids[i]) != MAILIMAP_NO_ERROR)
                rc = -ENOMEM;
        }
    }
    if (rc == 0 && nnew)
        rc = fetch_structure(src, c, set, la, err, errlen);
    if (set)
        mailimap_set_free(set);
    free(uids);
    log_debug("%s: %zu messages, %zu new", ma->mailbox, n, nnew);
    return rc;
}

/*
 * Fetches the structure of uids[lo..hi), halving the range whenever the
 * server's answer cannot be read, so that one message libetpan cannot parse
 * costs that message and not the mailbox (notes §0.6). A message that fails
 * alone is skipped and counted in *broken.
 */
static int bisect_structure(struct imap_src *src, struct imap_conn *c, const char *mailbox,
                            const uint32_t *uids, size_t lo, size_t hi, struct listing_arg *la,
                            uint32_t *broken, char *err, size_t errlen)
{
    struct mailimap_set *set = mailimap_set_new_empty();
    size_t mid;
    int rc = 0;

    if (set == NULL)
        return -ENOMEM;
    for (size_t i = lo; i < hi && rc == 0; i++)
        if (mailimap_set_add_single(set, uids[i]) != MAILIMAP_NO_ERROR)
            rc = -ENOMEM;
    if (rc == 0) {
        la->rc = 0;
        rc = fetch_structure(src, c, set, la, err, errlen);
    }
    mailimap_set_free(set);
    if (rc != -EBADMSG)
        return rc;
    if ((rc = imap_conn_reopen(src, c, mailbox, err, errlen)) != 0)
        return rc;
    if (hi - lo == 1) {
        /* Listed without parts, so later syncs know it and do not try again. */
        log_warn("%s: UID %u skipped: its structure cannot be read", mailbox, uids[lo]);
        if (la->out->count == la->cap && grow_listing(la) != 0)
            return -ENOMEM;
        la->out->msgs[la->out->count++] = (struct src_message){.uid = uids[lo], .unreadable = 1};
        (*broken)++;
        return 0;
    }
    mid = lo + (hi - lo) / 2;
    if ((rc = bisect_structure(src, c, mailbox, uids, lo, mid, la, broken, err, errlen)) != 0)
        return rc;
    return bisect_structure(src, c, mailbox, uids, mid, hi, la, broken, err, errlen);
}

/*
 * The listing after an unreadable answer: start again on a new session,
 * keep what is known, and bisect over the rest.
 */
static int list_by_bisection(struct imap_src *src, struct imap_conn *c, struct messages_arg *ma,
                             struct listing_arg *la, char *err, size_t errlen)
{
    uint32_t *uids = NULL, *need = NULL, broken = 0;
    size_t n = 0, nneed = 0;
    int rc;

    log_warn("%s: %s; looking for the message at fault", ma->mailbox, err);
    for (size_t i = 0; i < ma->out->count; i++)
        mime_part_list_free(&ma->out->msgs[i].parts);
    ma->out->count = 0;
    if ((rc = imap_conn_reopen(src, c, ma->mailbox, err, errlen)) != 0 ||
        (rc = search_uids(src, c, &uids, &n, err, errlen)) != 0)
        goto out;
    if ((need = malloc((n ? n : 1) * sizeof *need)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const struct src_message *m = source_listing_find(ma->known, uids[i]);

        if (m == NULL)
            need[nneed++] = uids[i];
        else if (la->out->count < la->cap || grow_listing(la) == 0) {
            if ((rc = source_message_copy(m, &la->out->msgs[la->out->count])) != 0)
                goto out;
            la->out->count++;
        }
    }
    if (nneed)
        rc = bisect_structure(src, c, ma->mailbox, need, 0, nneed, la, &broken, err, errlen);
out:
    free(uids);
    free(need);
    return rc;
}

/* Sorts by UID and drops repeats (a chunk that failed half-way may have delivered some). */
static void listing_sort_unique(struct src_listing *l)
{
    size_t w = 0;

    qsort(l->msgs, l->count, sizeof *l->msgs, compare_message);
    for (size_t r = 0; r < l->count; r++) {
        if (w > 0 && l->msgs[w - 1].uid == l->msgs[r].uid) {
            mime_part_list_free(&l->msgs[r].parts);
            continue;
        }
        l->msgs[w++] = l->msgs[r];
    }
    l->count = w;
}

/* Messages marked unreadable are asked for again: the fault may have passed. */
static int listing_has_unreadable(const struct src_listing *l)
{
    for (size_t i = 0; i < l->count; i++)
        if (l->msgs[i].unreadable)
            return 1;
    return 0;
}

static int messages_op(struct imap_src *src, struct imap_conn *c, void *arg, char *err,
                       size_t errlen)
{
    struct messages_arg *ma = arg;
    struct listing_arg la = {.out = ma->out};
    const struct src_listing *k = ma->known;
    struct mailimap_set *set;
    int rc;

    source_listing_free(ma->out);
    if ((rc = imap_conn_examine(src, c, ma->mailbox, 1, err, errlen)) != 0)
        return rc == -EIO && c->imap == NULL ? -EPIPE : rc;
    ma->out->uidvalidity = c->uidvalidity;
    ma->out->highestmodseq = c->highestmodseq;
    ma->out->exists = c->exists;
    if (k && k->uidvalidity != c->uidvalidity)
        k = ma->known = NULL;
    if (c->exists == 0)
        return 0;
    /* RFC 7162 §3.1.2: an unchanged HIGHESTMODSEQ means nothing changed. */
    if (k && c->highestmodseq && k->highestmodseq == c->highestmodseq && k->exists == c->exists &&
        !listing_has_unreadable(k)) {
        if ((ma->out->msgs = calloc(k->count ? k->count : 1, sizeof *ma->out->msgs)) == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < k->count; i++, ma->out->count++)
            if (source_message_copy(&k->msgs[i], &ma->out->msgs[i]) != 0)
                return -ENOMEM;
        log_debug("%s: unchanged (HIGHESTMODSEQ %llu)", ma->mailbox,
                  (unsigned long long)c->highestmodseq);
        return 0;
    }
    if (k || src->search)
        rc = list_incremental(src, c, ma, &la, err, errlen);
    else if ((set = mailimap_set_new_interval(1, 0)) == NULL)
        rc = -ENOMEM;
    else {
        rc = fetch_structure(src, c, set, &la, err, errlen);
        mailimap_set_free(set);
    }
    if (rc == -EBADMSG)
        rc = list_by_bisection(src, c, ma, &la, err, errlen);
    if (rc == 0)
        listing_sort_unique(ma->out);
    return rc;
}

int imap_list_messages(struct source *s, const char *mailbox, const struct src_listing *known,
                       struct src_listing *out, char *err, size_t errlen)
{
    struct messages_arg ma = {.mailbox = mailbox, .known = known, .out = out};
    int rc;

    memset(out, 0, sizeof *out);
    rc = imap_with_session(imap_of(s), messages_op, &ma, err, errlen);
    if (rc != 0)
        source_listing_free(out);
    return rc;
}

struct state_arg {
    const char *mailbox;
    struct src_state *out;
};

static int state_op(struct imap_src *src, struct imap_conn *c, void *arg, char *err, size_t errlen)
{
    struct state_arg *sa = arg;
    int rc = imap_conn_examine(src, c, sa->mailbox, 1, err, errlen);

    if (rc != 0)
        return rc == -EIO && c->imap == NULL ? -EPIPE : rc;
    sa->out->uidvalidity = c->uidvalidity;
    sa->out->exists = c->exists;
    sa->out->highestmodseq = c->highestmodseq;
    return 0;
}

/* One EXAMINE (forced: a selected mailbox's state may be old), no FETCH. */
int imap_mailbox_state(struct source *s, const char *mailbox, struct src_state *out, char *err,
                       size_t errlen)
{
    struct state_arg sa = {.mailbox = mailbox, .out = out};

    return imap_with_session(imap_of(s), state_op, &sa, err, errlen);
}

/* ---- parts: UID FETCH set (UID BODY.PEEK[section]) ---------------------- */

/* "1.3" → a section for BODY.PEEK[1.3]; NULL on bad input or no memory. */
static struct mailimap_section *section_from_string(const char *s)
{
    clist *ids = clist_new();
    struct mailimap_section_part *part;
    struct mailimap_section *sec;

    if (ids == NULL)
        return NULL;
    while (*s) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        uint32_t *id;

        if (end == s || v == 0 || v > UINT32_MAX || (*end != '.' && *end != '\0') ||
            (id = malloc(sizeof *id)) == NULL)
            goto fail;
        *id = (uint32_t)v;
        if (clist_append(ids, id) != 0) {
            free(id);
            goto fail;
        }
        s = *end ? end + 1 : end;
    }
    if ((part = mailimap_section_part_new(ids)) == NULL)
        goto fail;
    if ((sec = mailimap_section_new_part(part)) == NULL) {
        mailimap_section_part_free(part);
        return NULL;
    }
    return sec;
fail:
    for (clistiter *it = clist_begin(ids); it; it = clist_next(it))
        free(clist_content(it));
    clist_free(ids);
    return NULL;
}

struct parts_arg {
    const char *mailbox;
    uint32_t uidvalidity;
    const struct src_part_req *reqs;
    size_t *order; /* request indices sorted by (section, uid) */
    size_t n;
    unsigned char *got; /* got[i]: order[i] was delivered (a retry skips it) */
    src_part_fn fn;
    void *ctx;
    /* the chunk being fetched: order[lo..hi) */
    size_t lo, hi;
    int rc;
};

static void parts_handler(struct mailimap_msg_att *att, void *ctx)
{
    struct parts_arg *a = ctx;
    const struct mailimap_msg_att_body_section *body = NULL;
    uint32_t uid = 0;

    if (a->rc != 0)
        return;
    for (clistiter *it = clist_begin(att->att_list); it; it = clist_next(it)) {
        struct mailimap_msg_att_item *item = clist_content(it);

        if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
            continue;
        if (item->att_data.att_static->att_type == MAILIMAP_MSG_ATT_UID)
            uid = item->att_data.att_static->att_data.att_uid;
        else if (item->att_data.att_static->att_type == MAILIMAP_MSG_ATT_BODY_SECTION)
            body = item->att_data.att_static->att_data.att_body_section;
    }
    if (uid == 0 || body == NULL)
        return;
    /* Binary search of uid in the chunk (same section, ascending UIDs). */
    for (size_t lo = a->lo, hi = a->hi; lo < hi;) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t u = a->reqs[a->order[mid]].uid;

        if (u == uid) {
            a->got[mid] = 1;
            a->rc = a->fn(a->ctx, a->order[mid], body->sec_body_part ? body->sec_body_part : "",
                          body->sec_body_part ? body->sec_length : 0);
            return;
        }
        if (u < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
}

static int fetch_chunk(struct imap_src *src, struct imap_conn *c, struct parts_arg *a, char *err,
                       size_t errlen)
{
    const char *section = a->reqs[a->order[a->lo]].section;
    struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
    struct mailimap_set *set = mailimap_set_new_empty();
    struct mailimap_section *sec = section_from_string(section);
    struct mailimap_fetch_att *body_att =
        sec ? mailimap_fetch_att_new_body_peek_section(sec) : NULL;
    clist *res = NULL;
    int rc = 0, r;

    if (ft == NULL || set == NULL || body_att == NULL ||
        mailimap_fetch_type_new_fetch_att_list_add(ft, mailimap_fetch_att_new_uid())) {
        if (body_att)
            mailimap_fetch_att_free(body_att);
        else if (sec)
            mailimap_section_free(sec);
        rc = -ENOMEM;
        goto out;
    }
    if (mailimap_fetch_type_new_fetch_att_list_add(ft, body_att)) {
        mailimap_fetch_att_free(body_att);
        rc = -ENOMEM;
        goto out;
    }
    /* Consecutive UIDs become ranges: "3:9,12" rather than "3,4,5,...". */
    for (size_t i = a->lo; i < a->hi;) {
        uint32_t first = a->reqs[a->order[i]].uid, last = first;

        while (++i < a->hi && a->reqs[a->order[i]].uid <= last + 1)
            last = a->reqs[a->order[i]].uid;
        if (mailimap_set_add_interval(set, first, last) != MAILIMAP_NO_ERROR) {
            rc = -ENOMEM;
            goto out;
        }
    }
    mailimap_set_msg_att_handler(c->imap, parts_handler, a);
    r = mailimap_uid_fetch(c->imap, set, ft, &res);
    mailimap_set_msg_att_handler(c->imap, NULL, NULL);
    /* On a tagged NO libetpan has freed the list already and left res dangling. */
    if (res && r == MAILIMAP_NO_ERROR)
        mailimap_fetch_list_free(res);
    if (r != MAILIMAP_NO_ERROR)
        rc = imap_command_failed(src, c, r, "UID FETCH (BODY.PEEK)", err, errlen);
    else
        rc = a->rc;
out:
    if (set)
        mailimap_set_free(set);
    if (ft)
        mailimap_fetch_type_free(ft);
    return rc;
}

/*
 * Fetches the requests order[lo..hi) (one section), halving on an
 * unreadable answer; a part that fails alone is skipped (never reported to
 * the caller, which counts it as missing).
 */
static int bisect_parts(struct imap_src *src, struct imap_conn *c, struct parts_arg *a, size_t lo,
                        size_t hi, char *err, size_t errlen)
{
    size_t mid;
    int rc;

    a->lo = lo;
    a->hi = hi;
    a->rc = 0;
    if ((rc = fetch_chunk(src, c, a, err, errlen)) != -EBADMSG)
        return rc;
    if ((rc = imap_conn_reopen(src, c, a->mailbox, err, errlen)) != 0)
        return rc;
    if (c->uidvalidity != a->uidvalidity)
        return -ESTALE;
    if (hi - lo == 1) {
        log_warn("%s: UID %u part %s skipped: %s", a->mailbox, a->reqs[a->order[lo]].uid,
                 a->reqs[a->order[lo]].section, err);
        return 0;
    }
    mid = lo + (hi - lo) / 2;
    if ((rc = bisect_parts(src, c, a, lo, mid, err, errlen)) != 0)
        return rc;
    return bisect_parts(src, c, a, mid, hi, err, errlen);
}

/*
 * Leaves in order[] only the requests not delivered yet: when a session
 * breaks mid-fetch, its replacement asks for the rest, not for the whole
 * mailbox's parts again.
 */
static void drop_delivered(struct parts_arg *a)
{
    size_t k = 0;

    for (size_t i = 0; i < a->n; i++)
        if (!a->got[i]) {
            a->order[k] = a->order[i];
            a->got[k++] = 0;
        }
    a->n = k;
}

static int parts_op(struct imap_src *src, struct imap_conn *c, void *arg, char *err, size_t errlen)
{
    struct parts_arg *a = arg;
    int rc;

    drop_delivered(a);
    if (a->n == 0)
        return 0;
    if ((rc = imap_conn_examine(src, c, a->mailbox, 0, err, errlen)) != 0)
        return rc == -EIO && c->imap == NULL ? -EPIPE : rc;
    if (c->uidvalidity != a->uidvalidity) {
        snprintf(err, errlen, "UIDVALIDITY of %s changed", a->mailbox);
        return -ESTALE;
    }
    for (size_t lo = 0; lo < a->n;) {
        size_t hi = lo + 1;
        const char *section = a->reqs[a->order[lo]].section;

        while (hi < a->n && hi - lo < FETCH_CHUNK &&
               strcmp(a->reqs[a->order[hi]].section, section) == 0)
            hi++;
        if ((rc = bisect_parts(src, c, a, lo, hi, err, errlen)) != 0)
            return rc;
        lo = hi;
    }
    return 0;
}

static int compare_req(const void *x, const void *y, void *reqs)
{
    const struct src_part_req *a = &((const struct src_part_req *)reqs)[*(const size_t *)x];
    const struct src_part_req *b = &((const struct src_part_req *)reqs)[*(const size_t *)y];
    int c = strcmp(a->section, b->section);

    if (c)
        return c;
    return a->uid < b->uid ? -1 : a->uid > b->uid;
}

int imap_fetch_parts(struct source *s, const char *mailbox, uint32_t uidvalidity,
                     const struct src_part_req *reqs, size_t n, src_part_fn fn, void *ctx,
                     char *err, size_t errlen)
{
    struct parts_arg a = {
        .mailbox = mailbox, .uidvalidity = uidvalidity, .reqs = reqs, .n = n, .fn = fn, .ctx = ctx};
    int rc;

    if (n == 0)
        return 0;
    if ((a.order = malloc(n * sizeof *a.order)) == NULL)
        return -ENOMEM;
    if ((a.got = calloc(n, 1)) == NULL) {
        free(a.order);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        a.order[i] = i;
    qsort_r(a.order, n, sizeof *a.order, compare_req, (void *)reqs);
    rc = imap_with_session(imap_of(s), parts_op, &a, err, errlen);
    free(a.order);
    free(a.got);
    return rc;
}
