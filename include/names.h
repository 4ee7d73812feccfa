/*
 * names.h — turning untrusted names from mail into safe path components.
 *
 * Owns: the event file-name rule of SPEC §2 (UID kept as is when made of
 * A-Z a-z 0-9 . _ - @ +, at most 200 bytes, not starting with '.'; otherwise
 * a stable, injective, safe encoding), mailbox-name decoding from modified
 * UTF-7 (RFC 3501 §5.1.3), and making any string a safe single component.
 * Never does I/O. Thread-safe.
 */
#ifndef IMAPCALFS_NAMES_H
#define IMAPCALFS_NAMES_H

#include <stddef.h>

/* Names imapcalfs itself puts in a directory; no event file may take one. */
#define NAME_MERGED "merged.ics"
#define NAME_STATUS ".status"
#define NAME_REFRESH ".refresh"
#define NAME_DISPLAYNAME "displayname"

/*
 * File name ("<something>.ics") for an event UID of ulen bytes (may contain
 * any byte, NUL included). Never contains '/' or NUL, is never ".", "..",
 * "merged.ics", ".status", ".refresh" or "displayname", never starts with
 * '.', is at most 255 bytes, and two different UIDs never share a name.
 * Returns a malloc'd string (caller frees), or NULL on allocation failure.
 */
char *name_for_uid(const char *uid, size_t ulen);

/*
 * Decodes a modified-UTF-7 mailbox name to UTF-8. Returns a malloc'd string,
 * or NULL when the input is not valid modified UTF-7 (the caller then shows
 * the raw name through name_safe_component()).
 */
char *name_mailbox_decode(const char *mutf7);

/*
 * Makes one path component out of an untrusted string (a piece of a mailbox
 * name between delimiters): "", "." and "..", '/' and control bytes are
 * escaped (%XX) so the result is a usable, non-special name. malloc'd.
 */
char *name_safe_component(const char *s);

#endif
