/*
 * mime.h — finding calendar data in a message's MIME structure, and decoding it.
 *
 * Owns: the rule for what counts as calendar data (SPEC §3: text/calendar,
 * application/ics, or a name/filename ending ".ics", anywhere in the tree,
 * message/rfc822 included), IMAP section numbering (RFC 3501 §6.4.5), and
 * decoding a part (transfer encoding, then charset) to UTF-8 text.
 * Never does I/O. Thread-safe: no shared state.
 */
#ifndef IMAPCALFS_MIME_H
#define IMAPCALFS_MIME_H

#include <stddef.h>
#include <stdint.h>

/* Depth and count limits for untrusted structures (see the man page). */
#define MIME_MAX_DEPTH 32
#define MIME_MAX_PARTS 64

enum mime_encoding {
    MIME_ENC_7BIT = 0, /* also 8bit, binary and unknown: bytes pass through */
    MIME_ENC_BASE64,
    MIME_ENC_QP,
};

struct mime_part {
    char section[64];            /* IMAP section, e.g. "2" or "1.3" or "2.2.1" */
    enum mime_encoding encoding; /* Content-Transfer-Encoding */
    char charset[40];            /* lower case; "" when the part names none */
    uint32_t size;               /* encoded size in octets as announced */
};

struct mime_part_list {
    struct mime_part *parts; /* malloc'd array, in tree order */
    size_t count;
};

struct mailimap_body;

/*
 * Appends the calendar parts of an IMAP BODYSTRUCTURE to *list, in tree
 * order. Parts below MIME_MAX_DEPTH and beyond MIME_MAX_PARTS are ignored.
 * Returns 0, or -ENOMEM. Free the list with mime_part_list_free().
 */
int mime_find_calendar_parts(const struct mailimap_body *body, struct mime_part_list *list);

/*
 * The same for a whole RFC 5322 message held in memory (Maildir source);
 * section numbers match what an IMAP server would give. Returns 0, -ENOMEM,
 * or -EINVAL when libetpan cannot parse the message at all.
 */
int mime_find_calendar_parts_in_message(const char *msg, size_t len, struct mime_part_list *list);

/*
 * Copies the still-encoded body of SECTION of a whole message (what IMAP
 * BODY.PEEK[SECTION] returns) into a malloc'd buffer *out of *outlen bytes.
 * Returns 0, -ENOENT (no such section), -EINVAL, or -ENOMEM.
 */
int mime_extract_section(const char *msg, size_t len, const char *section, char **out,
                         size_t *outlen);

/*
 * Decodes one part: transfer encoding, then CHARSET (may be "" or NULL:
 * UTF-8 assumed) to UTF-8. NUL bytes are dropped, so *out is a C string of
 * *outlen bytes; invalid UTF-8 is replaced. *out is malloc'd: caller frees.
 * Returns 0, -ENOMEM, or -EINVAL with the reason in err (unknown charset).
 */
int mime_decode_part(const char *raw, size_t rawlen, enum mime_encoding enc, const char *charset,
                     char **out, size_t *outlen, char *err, size_t errlen);

void mime_part_list_free(struct mime_part_list *list);

#endif
