/*
 * mime.c — finding the calendar parts of a message and numbering them the
 * way IMAP does (RFC 3501 §6.4.5), from a server's BODYSTRUCTURE or from a
 * whole message parsed by libetpan. Decoding lives in mime_decode.c.
 *
 * Section numbers: the children of a multipart are p.1, p.2, ...; the body
 * of the message itself and of every message/rfc822 part is a "container":
 * when it is a multipart its children are p.1, p.2, ..., when it is a single
 * part it is p.1 (at the top level simply "1"). Both walkers below follow
 * exactly that rule, so a Maildir message and the same message on a server
 * give the same sections (checked against Dovecot 2.3).
 *
 * Limits: the message body is depth 1, each multipart child or message/rfc822
 * body one deeper; nodes deeper than MIME_MAX_DEPTH are not looked at (and
 * cannot be extracted). MIME_MAX_PARTS caps the calendar parts taken from
 * one message; other parts do not count, so an invitation after many photos
 * is still found (walking is cheap: the tree is already in memory).
 */
#include "mime.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libetpan/libetpan.h>

/* Room for a section string, as in struct mime_part. */
#define SECT_LEN sizeof(((struct mime_part *)0)->section)

/* One walk over one message: where found parts go and how many were added. */
struct walk {
    struct mime_part_list *list;
    size_t added;
    int err; /* first error (-ENOMEM); the walk stops once set */
};

/* What a leaf part looks like, whichever tree it came from. */
struct leaf {
    const char *type;    /* "text", "application", ... (may be NULL) */
    const char *subtype; /* may be NULL */
    const char *charset; /* NULL when the part names none */
    enum mime_encoding encoding;
    uint32_t size;
    int named_ics; /* a name/filename parameter ends in ".ics" */
};

void mime_part_list_free(struct mime_part_list *list)
{
    if (list == NULL)
        return;
    free(list->parts);
    list->parts = NULL;
    list->count = 0;
}

/* The walk stops at the first error and once MIME_MAX_PARTS parts were added. */
static int walk_done(const struct walk *w)
{
    return w->err != 0 || w->added >= MIME_MAX_PARTS;
}

/*
 * "p" + "." + n (or just n when p is empty) into out. Returns -1 when it does
 * not fit: such a part is unreachable by a 64-byte section and is skipped.
 */
static int section_child(char *out, size_t outlen, const char *pfx, unsigned long n)
{
    int r = snprintf(out, outlen, "%s%s%lu", pfx, *pfx ? "." : "", n);
    return (r < 0 || (size_t)r >= outlen) ? -1 : 0;
}

/* Case-insensitive "ends with .ics". */
static int ends_with_ics(const char *v, size_t len)
{
    return len >= 4 && strncasecmp(v + len - 4, ".ics", 4) == 0;
}

/*
 * Does a Content-Type or Content-Disposition parameter name a ".ics" file?
 * Accepts name/filename, their RFC 2231 forms (filename*, and the last piece
 * filename*1* of a continuation ends in ".ics" too), and RFC 2047
 * encoded-word values ("=?UTF-8?B?...?=", which Outlook sends and
 * servers pass through undecoded in BODYSTRUCTURE).
 */
static int param_names_ics(const char *name, const char *value)
{
    if (name == NULL || value == NULL)
        return 0;
    if (strcasecmp(name, "name") != 0 && strcasecmp(name, "filename") != 0 &&
        strncasecmp(name, "name*", 5) != 0 && strncasecmp(name, "filename*", 9) != 0)
        return 0;
    size_t len = strlen(value);
    if (ends_with_ics(value, len))
        return 1;
    if (strstr(value, "=?") == NULL)
        return 0;
    size_t idx = 0;
    char *decoded = NULL;
    int yes = 0;
    if (mailmime_encoded_phrase_parse("us-ascii", value, len, &idx, "utf-8", &decoded) ==
            MAILIMF_NO_ERROR &&
        decoded != NULL)
        yes = ends_with_ics(decoded, strlen(decoded));
    free(decoded);
    return yes;
}

/*
 * The media types that carry iCalendar data (SPEC §3): text/calendar
 * (RFC 5545 §8.1), application/ics (what Google attaches), and the older
 * application/calendar and text/x-vcalendar some clients still send.
 */
static int type_is_calendar(const char *type, const char *subtype)
{
    if (type == NULL || subtype == NULL)
        return 0;
    if (strcasecmp(type, "text") == 0)
        return strcasecmp(subtype, "calendar") == 0 || strcasecmp(subtype, "x-vcalendar") == 0;
    if (strcasecmp(type, "application") == 0)
        return strcasecmp(subtype, "ics") == 0 || strcasecmp(subtype, "calendar") == 0;
    return 0;
}

/* Lower-cases a charset name into dst; a name too long for dst is marked unusable. */
static void copy_charset(char *dst, size_t dstlen, const char *src)
{
    dst[0] = '\0';
    if (src == NULL)
        return;
    size_t n = strlen(src);
    if (n >= dstlen) {
        /* No real charset name is this long; keep a recognisable but unknown one so
         * decoding fails cleanly instead of guessing with a truncated name. */
        snprintf(dst, dstlen, "%.*s...", (int)(dstlen - 4), src);
        n = dstlen - 1;
    } else {
        memcpy(dst, src, n + 1);
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)tolower((unsigned char)dst[i]);
}

/* Adds a leaf to the list when it is calendar data. */
static void walk_leaf(struct walk *w, const struct leaf *leaf, const char *section)
{
    if (walk_done(w))
        return;
    if (!type_is_calendar(leaf->type, leaf->subtype) && !leaf->named_ics)
        return;
    struct mime_part_list *list = w->list;
    struct mime_part *p = realloc(list->parts, (list->count + 1) * sizeof *p);
    if (p == NULL) {
        w->err = -ENOMEM;
        return;
    }
    list->parts = p;
    p = &list->parts[list->count];
    memset(p, 0, sizeof *p);
    snprintf(p->section, sizeof p->section, "%s", section);
    p->encoding = leaf->encoding;
    copy_charset(p->charset, sizeof p->charset, leaf->charset);
    p->size = leaf->size;
    list->count++;
    w->added++;
}

/* ---- IMAP BODYSTRUCTURE (struct mailimap_body) ---- */

static enum mime_encoding bs_encoding(const struct mailimap_body_fld_enc *enc)
{
    if (enc == NULL)
        return MIME_ENC_7BIT;
    switch (enc->enc_type) {
    case MAILIMAP_BODY_FLD_ENC_BASE64:
        return MIME_ENC_BASE64;
    case MAILIMAP_BODY_FLD_ENC_QUOTED_PRINTABLE:
        return MIME_ENC_QP;
    default: /* 7bit, 8bit, binary and unknown tokens: bytes pass through */
        return MIME_ENC_7BIT;
    }
}

/* Looks at a parameter list for the charset and for a ".ics" name. */
static void bs_scan_params(const struct mailimap_body_fld_param *params, struct leaf *leaf)
{
    if (params == NULL || params->pa_list == NULL)
        return;
    for (clistiter *it = clist_begin(params->pa_list); it != NULL; it = clist_next(it)) {
        const struct mailimap_single_body_fld_param *p = clist_content(it);
        if (p == NULL || p->pa_name == NULL)
            continue;
        if (leaf->charset == NULL && strcasecmp(p->pa_name, "charset") == 0)
            leaf->charset = p->pa_value;
        if (param_names_ics(p->pa_name, p->pa_value))
            leaf->named_ics = 1;
    }
}

static const char *bs_basic_type(const struct mailimap_media_basic *m)
{
    switch (m->med_type) {
    case MAILIMAP_MEDIA_BASIC_APPLICATION:
        return "application";
    case MAILIMAP_MEDIA_BASIC_AUDIO:
        return "audio";
    case MAILIMAP_MEDIA_BASIC_IMAGE:
        return "image";
    case MAILIMAP_MEDIA_BASIC_MESSAGE:
        return "message";
    case MAILIMAP_MEDIA_BASIC_VIDEO:
        return "video";
    default:
        return m->med_basic_type;
    }
}

static void bs_walk_part(struct walk *w, const struct mailimap_body *b, const char *sect,
                         int depth);

/* Children of a multipart: pfx.1, pfx.2, ... */
static void bs_walk_children(struct walk *w, const struct mailimap_body_type_mpart *mp,
                             const char *pfx, int depth)
{
    char sect[SECT_LEN];
    unsigned long i = 1;
    if (mp == NULL || mp->bd_list == NULL)
        return;
    for (clistiter *it = clist_begin(mp->bd_list); it != NULL && !walk_done(w);
         it = clist_next(it), i++) {
        if (section_child(sect, sizeof sect, pfx, i) == 0)
            bs_walk_part(w, clist_content(it), sect, depth);
    }
}

/* The body of a message (top level or message/rfc822): see the rule at the top. */
static void bs_walk_container(struct walk *w, const struct mailimap_body *b, const char *pfx,
                              int depth)
{
    char sect[SECT_LEN];
    if (b == NULL || depth > MIME_MAX_DEPTH || walk_done(w))
        return;
    if (b->bd_type == MAILIMAP_BODY_MPART)
        bs_walk_children(w, b->bd_data.bd_body_mpart, pfx, depth + 1);
    else if (section_child(sect, sizeof sect, pfx, 1) == 0)
        bs_walk_part(w, b, sect, depth);
}

static void bs_walk_part(struct walk *w, const struct mailimap_body *b, const char *sect, int depth)
{
    if (b == NULL || depth > MIME_MAX_DEPTH || walk_done(w))
        return;
    if (b->bd_type == MAILIMAP_BODY_MPART) {
        bs_walk_children(w, b->bd_data.bd_body_mpart, sect, depth + 1);
        return;
    }
    if (b->bd_type != MAILIMAP_BODY_1PART || b->bd_data.bd_body_1part == NULL)
        return;
    const struct mailimap_body_type_1part *p = b->bd_data.bd_body_1part;
    const struct mailimap_body_fields *f = NULL;
    struct leaf leaf = {0};
    switch (p->bd_type) {
    case MAILIMAP_BODY_TYPE_1PART_MSG:
        if (p->bd_data.bd_type_msg != NULL)
            bs_walk_container(w, p->bd_data.bd_type_msg->bd_body, sect, depth + 1);
        return;
    case MAILIMAP_BODY_TYPE_1PART_TEXT:
        if (p->bd_data.bd_type_text == NULL)
            return;
        leaf.type = "text";
        leaf.subtype = p->bd_data.bd_type_text->bd_media_text;
        f = p->bd_data.bd_type_text->bd_fields;
        break;
    case MAILIMAP_BODY_TYPE_1PART_BASIC:
        if (p->bd_data.bd_type_basic == NULL || p->bd_data.bd_type_basic->bd_media_basic == NULL)
            return;
        leaf.type = bs_basic_type(p->bd_data.bd_type_basic->bd_media_basic);
        leaf.subtype = p->bd_data.bd_type_basic->bd_media_basic->med_subtype;
        f = p->bd_data.bd_type_basic->bd_fields;
        break;
    default:
        return;
    }
    if (f != NULL) {
        bs_scan_params(f->bd_parameter, &leaf);
        leaf.encoding = bs_encoding(f->bd_encoding);
        leaf.size = f->bd_size;
    }
    if (p->bd_ext_1part != NULL && p->bd_ext_1part->bd_disposition != NULL)
        bs_scan_params(p->bd_ext_1part->bd_disposition->dsp_attributes, &leaf);
    walk_leaf(w, &leaf, sect);
}

int mime_find_calendar_parts(const struct mailimap_body *body, struct mime_part_list *list)
{
    struct walk w = {.list = list};
    bs_walk_container(&w, body, "", 1);
    return w.err;
}

/* ---- whole messages (struct mailmime from mailmime_parse) ---- */

static const char *mm_type_name(const struct mailmime_type *t)
{
    if (t == NULL)
        return NULL;
    if (t->tp_type == MAILMIME_TYPE_DISCRETE_TYPE && t->tp_data.tp_discrete_type != NULL) {
        switch (t->tp_data.tp_discrete_type->dt_type) {
        case MAILMIME_DISCRETE_TYPE_TEXT:
            return "text";
        case MAILMIME_DISCRETE_TYPE_IMAGE:
            return "image";
        case MAILMIME_DISCRETE_TYPE_AUDIO:
            return "audio";
        case MAILMIME_DISCRETE_TYPE_VIDEO:
            return "video";
        case MAILMIME_DISCRETE_TYPE_APPLICATION:
            return "application";
        default:
            return t->tp_data.tp_discrete_type->dt_extension;
        }
    }
    if (t->tp_type == MAILMIME_TYPE_COMPOSITE_TYPE && t->tp_data.tp_composite_type != NULL) {
        switch (t->tp_data.tp_composite_type->ct_type) {
        case MAILMIME_COMPOSITE_TYPE_MESSAGE:
            return "message";
        case MAILMIME_COMPOSITE_TYPE_MULTIPART:
            return "multipart";
        default:
            return t->tp_data.tp_composite_type->ct_token;
        }
    }
    return NULL;
}

/* Content-Transfer-Encoding and Content-Disposition parameters of one part. */
static void mm_scan_fields(const struct mailmime_fields *fields, struct leaf *leaf)
{
    if (fields == NULL || fields->fld_list == NULL)
        return;
    for (clistiter *it = clist_begin(fields->fld_list); it != NULL; it = clist_next(it)) {
        const struct mailmime_field *f = clist_content(it);
        if (f->fld_type == MAILMIME_FIELD_TRANSFER_ENCODING && f->fld_data.fld_encoding != NULL) {
            int t = f->fld_data.fld_encoding->enc_type;
            leaf->encoding = t == MAILMIME_MECHANISM_BASE64             ? MIME_ENC_BASE64
                             : t == MAILMIME_MECHANISM_QUOTED_PRINTABLE ? MIME_ENC_QP
                                                                        : MIME_ENC_7BIT;
        } else if (f->fld_type == MAILMIME_FIELD_DISPOSITION &&
                   f->fld_data.fld_disposition != NULL &&
                   f->fld_data.fld_disposition->dsp_parms != NULL) {
            clist *parms = f->fld_data.fld_disposition->dsp_parms;
            for (clistiter *pi = clist_begin(parms); pi != NULL; pi = clist_next(pi)) {
                const struct mailmime_disposition_parm *dp = clist_content(pi);
                if (dp->pa_type == MAILMIME_DISPOSITION_PARM_FILENAME &&
                    param_names_ics("filename", dp->pa_data.pa_filename))
                    leaf->named_ics = 1;
                else if (dp->pa_type == MAILMIME_DISPOSITION_PARM_PARAMETER &&
                         dp->pa_data.pa_parameter != NULL &&
                         param_names_ics(dp->pa_data.pa_parameter->pa_name,
                                         dp->pa_data.pa_parameter->pa_value))
                    leaf->named_ics = 1;
            }
        }
    }
}

static void mm_walk_part(struct walk *w, const struct mailmime *m, const char *sect, int depth);

static void mm_walk_children(struct walk *w, const struct mailmime *m, const char *pfx, int depth)
{
    char sect[SECT_LEN];
    unsigned long i = 1;
    if (m->mm_data.mm_multipart.mm_mp_list == NULL)
        return;
    for (clistiter *it = clist_begin(m->mm_data.mm_multipart.mm_mp_list);
         it != NULL && !walk_done(w); it = clist_next(it), i++) {
        if (section_child(sect, sizeof sect, pfx, i) == 0)
            mm_walk_part(w, clist_content(it), sect, depth);
    }
}

static void mm_walk_container(struct walk *w, const struct mailmime *m, const char *pfx, int depth)
{
    char sect[SECT_LEN];
    if (m == NULL || depth > MIME_MAX_DEPTH || walk_done(w))
        return;
    if (m->mm_type == MAILMIME_MULTIPLE)
        mm_walk_children(w, m, pfx, depth + 1);
    else if (section_child(sect, sizeof sect, pfx, 1) == 0)
        mm_walk_part(w, m, sect, depth);
}

static void mm_walk_part(struct walk *w, const struct mailmime *m, const char *sect, int depth)
{
    if (m == NULL || depth > MIME_MAX_DEPTH || walk_done(w))
        return;
    if (m->mm_type == MAILMIME_MULTIPLE) {
        mm_walk_children(w, m, sect, depth + 1);
        return;
    }
    if (m->mm_type == MAILMIME_MESSAGE) {
        mm_walk_container(w, m->mm_data.mm_message.mm_msg_mime, sect, depth + 1);
        return;
    }
    if (m->mm_type != MAILMIME_SINGLE)
        return;
    struct leaf leaf = {0};
    const struct mailmime_content *ct = m->mm_content_type;
    if (ct != NULL) {
        leaf.type = mm_type_name(ct->ct_type);
        leaf.subtype = ct->ct_subtype;
        if (ct->ct_parameters != NULL) {
            for (clistiter *it = clist_begin(ct->ct_parameters); it; it = clist_next(it)) {
                const struct mailmime_parameter *p = clist_content(it);
                if (p->pa_name == NULL)
                    continue;
                if (leaf.charset == NULL && strcasecmp(p->pa_name, "charset") == 0)
                    leaf.charset = p->pa_value;
                if (param_names_ics(p->pa_name, p->pa_value))
                    leaf.named_ics = 1;
            }
        }
    }
    /* RFC 2045 §5.2: text without a charset is US-ASCII; IMAP servers report it so. */
    if (leaf.charset == NULL && (leaf.type == NULL || strcasecmp(leaf.type, "text") == 0))
        leaf.charset = "us-ascii";
    mm_scan_fields(m->mm_mime_fields, &leaf);
    if (m->mm_body != NULL && m->mm_body->dt_type == MAILMIME_DATA_TEXT)
        leaf.size = m->mm_body->dt_data.dt_text.dt_length > UINT32_MAX
                        ? UINT32_MAX
                        : (uint32_t)m->mm_body->dt_data.dt_text.dt_length;
    walk_leaf(w, &leaf, sect);
}

/* Parses a whole message; the tree points into msg, which must outlive it. */
static int mm_parse(const char *msg, size_t len, struct mailmime **root)
{
    size_t idx = 0;
    *root = NULL;
    int r = mailmime_parse(msg, len, &idx, root);
    if (r == MAILIMF_ERROR_MEMORY)
        return -ENOMEM;
    if (r != MAILIMF_NO_ERROR || *root == NULL) {
        *root = NULL;
        return -EINVAL;
    }
    return 0;
}

/* The body of the top-level message: where section numbering starts. */
static const struct mailmime *mm_top_body(const struct mailmime *root)
{
    if (root->mm_type == MAILMIME_MESSAGE)
        return root->mm_data.mm_message.mm_msg_mime;
    return root;
}

int mime_find_calendar_parts_in_message(const char *msg, size_t len, struct mime_part_list *list)
{
    struct mailmime *root;
    int r = mm_parse(msg, len, &root);
    if (r < 0)
        return r;
    struct walk w = {.list = list};
    mm_walk_container(&w, mm_top_body(root), "", 1);
    mailmime_free(root);
    return w.err;
}

/*
 * Splits "2.1.3" into numbers. Returns the count, or -1 for anything that is
 * not a dot-separated list of positive decimal numbers (e.g. "", "1..2",
 * "0", "1.TEXT") or is deeper than any part the walkers report.
 */
static int parse_section(const char *section, unsigned long *ids, int max)
{
    int n = 0;
    const char *p = section;
    if (section == NULL || *section == '\0')
        return -1;
    for (;;) {
        if (n == max || !isdigit((unsigned char)*p))
            return -1;
        unsigned long v = 0;
        while (isdigit((unsigned char)*p)) {
            v = v * 10 + (unsigned long)(*p++ - '0');
            if (v > 1000000)
                return -1;
        }
        if (v == 0)
            return -1;
        ids[n++] = v;
        if (*p == '\0')
            return n;
        if (*p++ != '.')
            return -1;
    }
}

static const struct mailmime *mm_nth_child(const struct mailmime *m, unsigned long k)
{
    unsigned long i = 1;
    if (m->mm_data.mm_multipart.mm_mp_list == NULL)
        return NULL;
    for (clistiter *it = clist_begin(m->mm_data.mm_multipart.mm_mp_list); it;
         it = clist_next(it), i++)
        if (i == k)
            return clist_content(it);
    return NULL;
}

static const struct mailmime *mm_find_part(const struct mailmime *m, const unsigned long *ids,
                                           int n, int depth);

/* Mirrors mm_walk_container(): a container's single part is number 1. */
static const struct mailmime *mm_find_container(const struct mailmime *m, const unsigned long *ids,
                                                int n, int depth)
{
    if (m == NULL || n == 0 || depth > MIME_MAX_DEPTH)
        return NULL;
    if (m->mm_type == MAILMIME_MULTIPLE)
        return mm_find_part(mm_nth_child(m, ids[0]), ids + 1, n - 1, depth + 1);
    return ids[0] == 1 ? mm_find_part(m, ids + 1, n - 1, depth) : NULL;
}

/* Mirrors mm_walk_part(). */
static const struct mailmime *mm_find_part(const struct mailmime *m, const unsigned long *ids,
                                           int n, int depth)
{
    if (m == NULL || depth > MIME_MAX_DEPTH)
        return NULL;
    if (n == 0)
        return m;
    if (m->mm_type == MAILMIME_MULTIPLE)
        return mm_find_part(mm_nth_child(m, ids[0]), ids + 1, n - 1, depth + 1);
    if (m->mm_type == MAILMIME_MESSAGE)
        return mm_find_container(m->mm_data.mm_message.mm_msg_mime, ids, n, depth + 1);
    return NULL;
}

/*
 * For a leaf this is byte for byte what Dovecot returns for BODY[section]
 * (the encoded body, without the CRLF that belongs to the next boundary,
 * RFC 2046 §5.1.1). For a message/rfc822 part it is the embedded message,
 * for a multipart its body; when such a container ends in a close-delimiter
 * directly followed by the outer boundary, Dovecot adds that CRLF and we do
 * not. Only leaves are calendar data, so nothing depends on it. A section
 * "leaf.1" is -ENOENT here (Dovecot answers it with the leaf itself).
 */
int mime_extract_section(const char *msg, size_t len, const char *section, char **out,
                         size_t *outlen)
{
    unsigned long ids[MIME_MAX_DEPTH];
    struct mailmime *root = NULL;
    int r;

    *out = NULL;
    *outlen = 0;
    int n = parse_section(section, ids, MIME_MAX_DEPTH);
    if (n < 0)
        return -EINVAL;
    r = mm_parse(msg, len, &root);
    if (r < 0)
        return r;
    const struct mailmime *m = mm_find_container(mm_top_body(root), ids, n, 1);
    if (m == NULL || m->mm_body == NULL || m->mm_body->dt_type != MAILMIME_DATA_TEXT) {
        r = -ENOENT;
        goto out;
    }
    const char *data = m->mm_body->dt_data.dt_text.dt_data;
    size_t dlen = m->mm_body->dt_data.dt_text.dt_length;
    char *copy = malloc(dlen + 1);
    if (copy == NULL) {
        r = -ENOMEM;
        goto out;
    }
    if (dlen > 0)
        memcpy(copy, data, dlen);
    copy[dlen] = '\0';
    *out = copy;
    *outlen = dlen;
    r = 0;
out:
    mailmime_free(root);
    return r;
}
