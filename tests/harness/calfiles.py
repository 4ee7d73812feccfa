"""Comparing calendar files produced from different sources of the same mail.

An IMAP mount and a Maildir mount of the same messages must give the same
bytes except for X-IMAPCALFS-SOURCE, which names where each event came from
(an imap:// URL or a file:// URL).  The property may be folded over several
lines (RFC 5545 §3.1), and removing it changes the folding of nothing else,
so the comparison unfolds, drops that property, and compares the rest.
"""

import re

_FOLD = re.compile(rb"\r\n[ \t]")


def unfold(data):
    """The content lines of an iCalendar stream, unfolded."""
    return _FOLD.sub(b"", data).split(b"\r\n")


def source_urls(data):
    """Every X-IMAPCALFS-SOURCE value, in order."""
    return [line.split(b":", 1)[1].decode() for line in unfold(data)
            if line.upper().startswith(b"X-IMAPCALFS-SOURCE")]


def without_source(data):
    """data unfolded, minus the X-IMAPCALFS-SOURCE lines (bytes, CRLF)."""
    return b"\r\n".join(line for line in unfold(data)
                        if not line.upper().startswith(b"X-IMAPCALFS-SOURCE"))
