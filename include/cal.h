/*
 * cal.h — the calendar model: calendar parts in, merged calendar files out.
 *
 * Owns: every use of libical. Parses decoded calendar parts into "versions"
 * (one component of one UID/RECURRENCE-ID as sent in one message), merges
 * versions the way scheduling works (RFC 5546: SEQUENCE, DTSTAMP, message
 * order, CANCEL), applies the filters (components, after/before, match,
 * privacy) and renders deterministic VCALENDAR bytes (SPEC §2, §3).
 * Never does I/O and keeps no libical tree past a call: versions hold text.
 * Thread-safe after cal_global_init(): calls touch only their arguments.
 */
#ifndef IMAPCALFS_CAL_H
#define IMAPCALFS_CAL_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define CAL_PRODID "-//imapcalfs//imapcalfs 0.1//EN"

/*
 * Names the format of cal_versions_save(), the way components are chosen
 * and rendered into it, and the way merged.ics is rendered (a saved root
 * merged.ics is keyed by it too): change it whenever one of them changes,
 * so that what an older build saved is made again rather than trusted.
 * 3: VEVENTs without a valid DTSTART left out; a TZID defined twice renamed.
 */
#define CAL_SAVE_FORMAT "3"

/* Largest calendar part handed to libical, and deepest BEGIN nesting. */
#define CAL_MAX_PART_BYTES (16u << 20)
#define CAL_MAX_NESTING 8

enum cal_kind {
    CAL_VEVENT = 1,
    CAL_VTODO = 2,
    CAL_VJOURNAL = 4,
};

/* Where a calendar part came from; strings are copied. */
struct cal_origin {
    const char *mailbox;    /* mailbox name: orders equal-date messages across mailboxes */
    uint32_t uid;           /* IMAP UID of the message */
    int64_t internaldate;   /* INTERNALDATE, seconds since the epoch */
    const char *source_url; /* X-IMAPCALFS-SOURCE value (RFC 5092 IMAP URL) */
};

struct cal_match {
    char *spec;        /* "PROP~REGEX" as given (names the filter in cache keys) */
    char property[64]; /* upper case, e.g. "SUMMARY" */
    regex_t re;        /* POSIX ERE, REG_ICASE */
};

/* What to keep and how to show it; fixed for the life of a mount. */
struct cal_filter {
    unsigned kinds; /* CAL_* mask; 0 means CAL_VEVENT */
    int has_after;  /* keep events with an occurrence ending after `after` */
    int64_t after;
    int has_before; /* keep events with an occurrence starting before `before` */
    int64_t before;
    struct cal_match *match; /* all must match (AND); malloc'd array */
    size_t nmatch;
    int privacy_busy; /* SUMMARY "Busy"; DESCRIPTION, LOCATION, ATTENDEE, ATTACH, COMMENT dropped */
};

struct cal_stats {
    unsigned parts;     /* calendar parts read */
    unsigned parts_bad; /* parts that did not parse and were skipped */
    unsigned versions;  /* components kept as versions */
    unsigned warnings;  /* e.g. a TZID with no VTIMEZONE that could not be repaired */
};

/* What the segments of a rope point into that is not static text: the
 * pieces made for it, and references to the versions it borrows from. */
struct cal_hold;

/*
 * A rendered file as a list of segments (a rope): the header, the zones,
 * each component's text and the footer, borrowed rather than copied. The
 * segments stay valid while hold lives (and whatever else is alive: zones
 * repaired from IANA names are static); free with cal_rope_free(), or hand
 * seg to a new owner and call cal_hold_release(hold) when done with it.
 */
struct cal_rope {
    struct iovec *seg; /* malloc'd */
    size_t nseg;
    size_t len; /* bytes in all segments */
    struct cal_hold *hold;
};

/* One event file: every component of one UID (master + overrides). */
struct cal_event_file {
    char *uid;             /* NUL-terminated UID (a UID with NUL bytes is cut there) */
    struct cal_rope bytes; /* VCALENDAR bytes, CRLF, folded */
    int64_t mtime;         /* newest INTERNALDATE of the messages whose versions it holds */
};

struct cal_result {
    struct cal_event_file *events; /* sorted by UID (bytewise); malloc'd */
    size_t nevents;
    struct cal_rope merged; /* one VCALENDAR with every event */
    int64_t merged_mtime;
};

/* Versions parsed from the calendar parts of one message. */
struct cal_versions;

/* Once, before threads start: builds libical's zone table (see notes A3). */
void cal_global_init(void);

/* "PROP~REGEX" → one more match filter. Returns 0 or -EINVAL (err says why). */
int cal_filter_add_match(struct cal_filter *f, const char *spec, char *err, size_t errlen);

/* "YYYY-MM-DD" (midnight UTC) or RFC 3339 date-time → seconds. 0 or -EINVAL. */
int cal_parse_date(const char *s, int64_t *out);

void cal_filter_free(struct cal_filter *f);

/* A new, empty version set for one message. NULL on allocation failure. */
struct cal_versions *cal_versions_new(const struct cal_origin *origin);

/*
 * Parses one decoded calendar part (UTF-8 text of len bytes; a bare
 * component, one VCALENDAR or several) and keeps each component of the
 * filter's kinds, plus CANCELs, as a version. The same component seen twice
 * in one message (inline part and .ics attachment) is kept once.
 * Returns the number of versions added (0 is fine: e.g. a REPLY), or
 * -EINVAL when the part does not parse (err says why; stats->parts_bad++).
 * A VEVENT without a valid DTSTART (outside a CANCEL) is no event: left
 * out and counted in stats->warnings, or -EINVAL when the part holds
 * nothing else. A part holding U+FFFD (bytes its charset label did not
 * fit, replaced while decoding) counts one warning.
 */
int cal_versions_add_part(struct cal_versions *v, const char *text, size_t len,
                          const struct cal_filter *f, struct cal_stats *stats, char *err,
                          size_t errlen);

/*
 * Says that no part will be added to v any more: drops what only adding
 * needed (the digests that make a part sent twice in one message count
 * once). A part added after this is read again even when it repeats one.
 */
void cal_versions_seal(struct cal_versions *v);

size_t cal_versions_count(const struct cal_versions *v);

/*
 * v as bytes (malloc'd into *out) that cal_versions_load() turns back into
 * the same versions without libical: a remount then parses nothing again.
 * The bytes hold what the filter made of the parts, so they are only valid
 * with an equal filter. 0 or -ENOMEM.
 */
int cal_versions_save(const struct cal_versions *v, char **out, size_t *len);
/* NULL when buf is not such bytes (of this build's format). */
struct cal_versions *cal_versions_load(const char *buf, size_t len, const struct cal_filter *f);
/* One more reference (the ropes made of v hold one each); returns v. */
struct cal_versions *cal_versions_ref(struct cal_versions *v);
/* Drops one reference; the last frees v. */
void cal_versions_free(struct cal_versions *v);

/*
 * Merges the versions of n messages (any order, any mailboxes) into the
 * resulting event files and merged calendar. Deterministic: the same input
 * set gives the same bytes whatever its order. Returns 0 or -ENOMEM.
 * The ropes point into the texts of msgs, and each holds a reference to
 * the versions it borrows from: they outlive cal_result_free() as long
 * as their holds do. Free with cal_result_free().
 */
#define CAL_WANT_EVENTS 1
#define CAL_WANT_MERGED 2
int cal_resolve(struct cal_versions *const *msgs, size_t n, const struct cal_filter *f,
                unsigned want, struct cal_result *out);

void cal_result_free(struct cal_result *r);

/* Frees the hold of a rope (what its segments point into); for blobs. */
void cal_hold_release(void *hold);
/* Frees the segments of r and its hold. */
void cal_rope_free(struct cal_rope *r);
/* The bytes of r as one malloc'd NUL-terminated string (tests, tools). */
char *cal_rope_flatten(const struct cal_rope *r);

#endif
