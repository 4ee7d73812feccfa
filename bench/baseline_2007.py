#!/usr/bin/python3
"""The 2007 algorithm (mailbox2ics, Python Magazine, October 2007),
re-implemented for the benchmark from its description: log in with
imaplib, and for every mailbox: select it, SEARCH ALL, FETCH (RFC822) each
message one by one, walk the message with the email package, and copy
every VEVENT of every text/calendar part into one merged calendar
(python3-icalendar), which is written out at the end.  No caching, no
RFC 5546 merging: updates and cancellations are copied like invitations.

Two deliberate differences from the original: mailboxes are opened
read-only (EXAMINE), so that the benchmark's mailboxes keep their flags
(FETCH RFC822 on a read-write SELECT sets \\Seen; the bytes moved are the
same), and a part that python3-icalendar cannot parse is counted and
skipped instead of ending the run.

Usage: baseline_2007.py --host H --port P --user U --cafile CA
       [--mailbox M]... [-o OUTPUT]   (password in $IMAPCALFS_PASSWORD)
Prints one JSON object: wall seconds, messages, VEVENTs copied, parts that
failed, bytes of RFC822 data fetched, size of the output.
"""

import argparse
import email
import imaplib
import json
import os
import re
import ssl
import sys
import time

from icalendar import Calendar


def mailbox_names(conn):
    typ, data = conn.list()
    names = []
    for line in data:
        m = re.match(rb'\(([^)]*)\) (?:"[^"]*"|NIL) (.*)$', line)
        if m and b"\\noselect" not in m.group(1).lower():
            names.append(m.group(2).decode().strip('"'))
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--mailbox", action="append", default=[])
    ap.add_argument("-o", "--output", default=os.devnull)
    a = ap.parse_args()
    stats = {"messages": 0, "events": 0, "bad_parts": 0, "fetched": 0}
    t0 = time.perf_counter()
    conn = imaplib.IMAP4_SSL(a.host, a.port, ssl_context=ssl.create_default_context(
        cafile=a.cafile), timeout=120)
    conn.login(a.user, os.environ["IMAPCALFS_PASSWORD"])
    merged = Calendar()
    merged.add("prodid", "-//mailbox2ics//doughellmann.com//")
    merged.add("version", "2.0")
    for mailbox in a.mailbox or mailbox_names(conn):
        typ, _ = conn.select('"%s"' % mailbox, readonly=True)
        if typ != "OK":
            continue
        typ, data = conn.search(None, "ALL")
        for num in data[0].split():
            typ, msg_data = conn.fetch(num, "(RFC822)")
            raw = msg_data[0][1]
            stats["messages"] += 1
            stats["fetched"] += len(raw)
            msg = email.message_from_bytes(raw)
            for part in msg.walk():
                if part.get_content_type() != "text/calendar":
                    continue
                try:
                    cal = Calendar.from_ical(part.get_payload(decode=True))
                except Exception:
                    stats["bad_parts"] += 1
                    continue
                for event in cal.walk("VEVENT"):
                    merged.add_component(event)
                    stats["events"] += 1
    conn.logout()
    out = merged.to_ical()
    with open(a.output, "wb") as f:
        f.write(out)
    stats["wall"] = time.perf_counter() - t0
    stats["output_bytes"] = len(out)
    json.dump(stats, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
