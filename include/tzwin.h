/*
 * tzwin.h — Windows time-zone names to IANA zone names.
 *
 * Owns the table of Windows zone ids (the CLDR windowsZones "001" mapping)
 * and the display names Outlook writes as TZIDs ("(UTC+01:00) Amsterdam,
 * Berlin, Bern, Rome, Stockholm, Vienna"). Pure lookup, no libical, no I/O.
 * Thread-safe: the index is built once (tzwin_init() or the first lookup).
 */
#ifndef IMAPCALFS_TZWIN_H
#define IMAPCALFS_TZWIN_H

#include <stddef.h>

/* Builds the lookup index; optional (lookups build it on first use). */
void tzwin_init(void);

/*
 * The IANA zone for a Windows zone id ("W. Europe Standard Time"), an
 * Outlook display name ("(UTC+01:00) Amsterdam, Berlin, ..." or the older
 * "(GMT+01.00) Amsterdam / Berlin / ..."), or a numbered copy Outlook makes
 * ("W. Europe Standard Time 1"). Case and punctuation are ignored.
 * Returns a static string, possibly holding several candidate names
 * separated by spaces (newest first, e.g. "Europe/Kyiv Europe/Kiev"),
 * or NULL when the name is not a Windows zone.
 */
const char *tzwin_to_iana(const char *name);

/* The table's Windows zone ids, for checks: tzwin_id(i) for i < tzwin_count(). */
size_t tzwin_count(void);
const char *tzwin_id(size_t i);

#endif
