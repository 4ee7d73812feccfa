/*
 * cal_internal.h — private to the calendar module (src/cal*.c).
 *
 * Versions hold text only (no libical trees): the component as folded
 * CRLF lines, the TZIDs it uses with the sender's VTIMEZONE for each, and
 * what the filters need, precomputed while the tree was at hand.
 */
#ifndef IMAPCALFS_CAL_INTERNAL_H
#define IMAPCALFS_CAL_INTERNAL_H

#include "cal.h"

#include <libical/ical.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* A sortable time key: "YYYYMMDD", "YYYYMMDDTHHMMSS" (floating) or "...Z". */
#define CAL_KEY_MAX 20
/* In-window occurrence keys kept per master; more are only counted. */
#define CAL_WIN_KEYS 32
/* "Unbounded or too many to count": an event that certainly stays. */
#define CAL_WIN_MANY 0xffffffffu
/* Most recurrence instances looked at per rule. */
#define CAL_RECUR_MAX 20000
/* Most match filters (the per-version match result is a 64-bit mask). */
#define CAL_MATCH_MAX 64

/* A growable byte buffer; on allocation failure oom is set and adds stop. */
struct cal_buf {
    char *p;
    size_t len, cap;
    int oom;
};

void cal_buf_add(struct cal_buf *b, const char *s, size_t n);
void cal_buf_adds(struct cal_buf *b, const char *s);
/* One logical line (no line end) folded at 75 octets, then CRLF. */
void cal_buf_add_line(struct cal_buf *b, const char *line, size_t n);
/* Text made of (possibly folded, LF or CRLF) lines, unfolded and refolded. */
void cal_buf_add_text(struct cal_buf *b, const char *text, size_t n);
/* NUL-terminated contents, or NULL after an allocation failure (freed). */
char *cal_buf_take(struct cal_buf *b, size_t *len);
void cal_buf_free(struct cal_buf *b);

/*
 * A rope being built (cal_rope.c): segments borrowed from static text or
 * from versions (named with cal_ropeb_from so the rope holds them), and
 * pieces it owns. On allocation failure oom is set and adds stop.
 */
struct cal_ropeb {
    struct iovec *seg;
    size_t nseg, capseg, len;
    char **owned;
    size_t nowned, capowned;
    const struct cal_versions **from;
    size_t nfrom, capfrom;
    int oom;
};

/* Borrowed text: static, or from versions named with cal_ropeb_from(). */
void cal_ropeb_add(struct cal_ropeb *b, const char *s, size_t n);
void cal_ropeb_adds(struct cal_ropeb *b, const char *s);
/* New text: the contents of buf are taken over (buf is left empty). */
void cal_ropeb_own(struct cal_ropeb *b, struct cal_buf *buf);
/* The rope points into v: it holds a reference to v. */
void cal_ropeb_from(struct cal_ropeb *b, const struct cal_versions *v);
/* The rope built so far into out (b is emptied). 0 or -ENOMEM (b freed). */
int cal_ropeb_take(struct cal_ropeb *b, struct cal_rope *out);
void cal_ropeb_free(struct cal_ropeb *b);

/* Walks folded text (CRLF or LF) one logical line at a time (RFC 5545
 * §3.1): struct cal_lines l = {text, len, 0, {0}}; ... cal_buf_free(&l.line). */
struct cal_lines {
    const char *text;
    size_t len, pos;
    struct cal_buf line; /* the unfolded line, NUL-terminated */
};
/* The next non-empty logical line into l->line, its physical bytes (line
 * ends included) at [*start, l->pos). 0 at the end or on ENOMEM (line.oom). */
int cal_lines_next(struct cal_lines *l, size_t *start);

/* A copy of text that is valid UTF-8 without NUL or control bytes. */
char *cal_sanitize(const char *text, size_t len);
/* 0 when BEGIN/END nesting stays within max, else -EINVAL with err. */
int cal_check_nesting(const char *text, size_t len, int max, char *err, size_t errlen);
/* 1 when a top-level property `prop` of the component text matches re. */
int cal_text_match(const char *text, size_t len, const char *prop, const regex_t *re);
/* A copy of component text with one more property line (folded) after
 * its other properties. NULL on ENOMEM. */
char *cal_text_insert_prop(const char *text, size_t len, const char *line, size_t *outlen);
/* 1 when the text has this logical (unfolded) line. */
int cal_text_has_line(const char *text, size_t len, const char *line);
/* A TZID parameter value, quoted when it holds ':', ';' or ','. */
void cal_buf_add_param(struct cal_buf *b, const char *value);

/* What the after/before filter needs of one component. */
struct cal_win {
    int has_after, has_before; /* the window this was computed for */
    int64_t after, before;
    unsigned total; /* occurrences in the window, or CAL_WIN_MANY */
    unsigned nkeys; /* keys[] of the first in-window occurrences */
    char (*keys)[CAL_KEY_MAX];
};

/* One component of one UID/RECURRENCE-ID as sent in one message. */
struct cal_version {
    char *uid;
    char rid[CAL_KEY_MAX]; /* normalised RECURRENCE-ID key; "" for the master */
    char *rid_value;       /* RECURRENCE-ID value as written (for an EXDATE) */
    char *rid_tzid;        /* its TZID, or NULL */
    int rid_is_date;
    int sequence;
    int64_t dtstamp;
    unsigned kind; /* CAL_VEVENT, ... */
    int cancel;    /* METHOD:CANCEL */
    char *text;    /* the component, folded CRLF lines */
    size_t len;
    size_t ntz;
    char **tzids; /* TZIDs it references, sorted, unique */
    int *tzdef;   /* index into the message's vtz pool, or -1 */
    /* privacy=busy hides what match= looks at, so the result is kept from
     * the sender's text, for the filter array it was computed with. */
    const struct cal_match *match_id;
    size_t match_n;
    uint64_t match_mask;
    int win_done;
    struct cal_win win;
    const struct cal_versions *msg;
};

struct cal_versions {
    atomic_int refs; /* references besides the first (0 from calloc) */
    char *mailbox;
    uint32_t uid;
    int64_t internaldate;
    char *source_url;
    struct cal_version *v;
    size_t n, cap;
    const char **vtz; /* VTIMEZONE texts (folded CRLF) of this message, interned */
    size_t *vtz_len;
    size_t nvtz, capvtz;
    struct cal_part_digest *parsed; /* parts that parsed, to skip the same bytes again */
    size_t nparsed;
};

/* SHA-256 of a decoded part that cal_versions_add_part() parsed whole. */
struct cal_part_digest {
    size_t len;
    unsigned char sha[32];
};

/* cal_intern.c: shared copies of texts many messages carry (VTIMEZONEs). */
const char *cal_intern(const char *text, size_t len); /* NULL on ENOMEM */
void cal_unintern(const char *text);

/* cal_zone.c: UTC offsets from yearly VTIMEZONE rules, without libical. */
struct cal_tzrules;
/* NULL when the zone has a rule of another shape (then use libical). */
struct cal_tzrules *cal_tzrules_compile(icalcomponent *vtz);
void cal_tzrules_free(struct cal_tzrules *r);
/* Offset east of UTC, in seconds, at a local wall time / a UTC time
 * (times as seconds of their fields read as UTC). */
int cal_tzrules_offset(const struct cal_tzrules *r, int64_t local);
int cal_tzrules_offset_utc(const struct cal_tzrules *r, int64_t utc);

/* cal_tz.c: one mutex around builtin zones, and the TZID repair cache. */
void cal_tz_init(void);
/* VTIMEZONE text (TZID set to tzid) for a TZID that names an IANA or a
 * Windows zone; static until exit. NULL when it names neither. */
const char *cal_tz_repair_text(const char *tzid, size_t *len);
/* Its compiled rules (shared, immutable, static until exit), or NULL. */
const struct cal_tzrules *cal_tz_repair_rules(const char *tzid);
/* A private libical zone for it, for rules cal_zone.c cannot compute;
 * free with icaltimezone_free(z, 1). NULL when not repairable. */
icaltimezone *cal_tz_repair_zone(const char *tzid);

/* cal_time.c: the zones of one calendar, and time arithmetic. */
struct cal_zone {
    char *tzid;
    const struct cal_tzrules *rules; /* preferred */
    struct cal_tzrules *own_rules;   /* compiled from the sender's zone */
    icaltimezone *lz;                /* fallback: libical does the arithmetic */
    int own_lz;
};

struct cal_zctx {
    icalcomponent *container; /* holds the sender's VTIMEZONEs */
    struct cal_zone **zones;  /* every TZID looked up, found or not */
    size_t n;
};

void cal_zctx_free(struct cal_zctx *z);
/* The sender's zone, else a repaired one, else NULL (floating). */
const struct cal_zone *cal_zone_find(struct cal_zctx *z, const char *tzid);
/* Seconds since the epoch; DATE is midnight UTC, floating counts as UTC. */
int64_t cal_time_utc(struct cal_zctx *z, struct icaltimetype t, const char *tzid);
/* Sortable key of a time (see CAL_KEY_MAX). */
void cal_time_key(struct cal_zctx *z, struct icaltimetype t, const char *tzid,
                  char out[CAL_KEY_MAX]);
int64_t cal_days_from_civil(int64_t y, unsigned m, unsigned d);
/* Fills v->win for the filter's window from the component. 0 or -ENOMEM. */
int cal_window_compute(struct cal_zctx *z, icalcomponent *comp, const struct cal_filter *f,
                       struct cal_win *w);
void cal_win_free(struct cal_win *w);
/* TZID parameter text of a property, or NULL. */
const char *cal_prop_tzid(icalproperty *p);

/* cal_parse.c, used again by cal_resolve.c for a window computed late. */
int cal_window_from_text(const struct cal_version *v, const struct cal_filter *f,
                         struct cal_win *w);

/* cal_mergetz.c: the VTIMEZONEs of merged.ics, one per definition; a TZID
 * defined differently by two events gets a second name for the later one
 * (SPEC §2). Strings passed in must outlive the object. */
struct cal_mergetz;
struct cal_mergetz *cal_mergetz_new(void); /* NULL on ENOMEM */
void cal_mergetz_free(struct cal_mergetz *m);
/* Event ev (numbered in output order, never decreasing) uses tzid, defined
 * by def[0..len) or by nothing (def NULL); def is borrowed from the
 * versions from (NULL: static). 0, -ENOMEM or -EINVAL. */
int cal_mergetz_use(struct cal_mergetz *m, size_t ev, const char *tzid, const char *def, size_t len,
                    const struct cal_versions *from);
/* Groups the definitions and names the extra ones. 0 or -ENOMEM. */
int cal_mergetz_resolve(struct cal_mergetz *m);
/* After resolve: the VTIMEZONEs, sorted by the TZID they carry. */
void cal_mergetz_add_zones(const struct cal_mergetz *m, struct cal_ropeb *b);
/* After resolve: a component of event ev, its TZID parameters renamed;
 * text is borrowed from the versions from, or copied when from is NULL. */
void cal_mergetz_add_comp(const struct cal_mergetz *m, size_t ev, struct cal_ropeb *b,
                          const char *text, size_t len, const struct cal_versions *from);

#endif
