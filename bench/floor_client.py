#!/usr/bin/python3
"""The floor: the least an IMAP client must do to get every calendar part.

One connection (implicit TLS), LIST, then per mailbox: EXAMINE, one
`UID FETCH 1:* (BODYSTRUCTURE)`, and the calendar parts it names fetched
with `UID FETCH <uids> (BODY.PEEK[<section>])` -- one command per distinct
section (split so that no UID set exceeds 8,000 bytes), all of them sent
before the first answer is read (pipelined).
The parts' bytes are read and thrown away: no decoding, no parsing, no
merging.  What this costs is what the server and the wire cost; imapcalfs
cannot do less work on the network, only overlap it (two connections).

A calendar part is what SPEC §3 says: text/calendar, application/ics, or a
file name ending in .ics, anywhere in the tree, inside attached
message/rfc822 too.

Usage: floor_client.py --host H --port P --user U --cafile CA [--mailbox M]...
(password in $IMAPCALFS_PASSWORD).  Prints one JSON object: wall seconds
(connect to logout), messages, calendar parts, their bytes, bytes read.
"""

import argparse
import json
import os
import re
import select
import socket
import ssl
import sys
import time

TOKEN = re.compile(rb'[ \t]*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|(NIL)(?=[\s()])|([^\s()"]+))')
LITERAL = re.compile(rb"\{(\d+)\}$")
MAX_SET = 8000  # bytes of one UID set


class Conn:
    """An IMAP connection over TLS with a read buffer and literal handling.

    Commands are queued and written while answers are read (one select
    loop): a pipeline of large commands would otherwise deadlock, the
    client blocked writing commands the server does not read while the
    server is blocked writing answers the client does not read."""

    def __init__(self, host, port, cafile, timeout=120):
        ctx = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.sock.setblocking(False)
        self.timeout = timeout
        self.buf = bytearray()
        self.out = bytearray()
        self.received = 0
        self.ntag = 0
        self.readline()  # greeting

    def _write_some(self):
        try:
            n = self.sock.send(self.out[:1 << 16])
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            return
        del self.out[:n]

    def _fill(self):
        """Reads more into the buffer, writing queued commands meanwhile."""
        while True:
            if not self.sock.pending():
                r, w, _ = select.select([self.sock], [self.sock] if self.out else [], [],
                                        self.timeout)
                if not r and not w:
                    raise TimeoutError("no answer from the server in %ss" % self.timeout)
                if w:
                    self._write_some()
                if not r:
                    continue
            try:
                data = self.sock.recv(1 << 20)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                continue
            if not data:
                raise EOFError("server closed the connection")
            self.received += len(data)
            self.buf += data
            return

    def readline(self):
        """One line without its CRLF."""
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._fill()

    def read_literal(self, n, keep):
        """Reads n literal bytes; returns them, or None when not kept."""
        if keep:
            while len(self.buf) < n:
                self._fill()
            data = bytes(self.buf[:n])
            del self.buf[:n]
            return data
        while n:
            if not self.buf:
                self._fill()
            k = min(n, len(self.buf))
            del self.buf[:k]
            n -= k
        return None

    def response(self, keep_literals=True):
        """One whole response: [(text, literal or None), ...] segments.
        Literals that are not kept are counted in the returned size."""
        segs, skipped = [], 0
        while True:
            line = self.readline()
            m = LITERAL.search(line)
            if not m:
                segs.append((line, None))
                return segs, skipped
            n = int(m.group(1))
            lit = self.read_literal(n, keep_literals)
            if lit is None:
                skipped += n
            segs.append((line[:m.start()], lit))

    def tag(self):
        self.ntag += 1
        return b"F%d" % self.ntag

    def send(self, *lines):
        """Queues command lines; they are written while answers are read."""
        self.out += b"".join(line + b"\r\n" for line in lines)
        self._write_some()

    def command(self, line, on_untagged=None, keep_literals=True):
        """Sends one command and reads until its tagged answer."""
        tag = self.tag()
        self.send(tag + b" " + line)
        return self.until(tag, on_untagged, keep_literals)

    def until(self, tag, on_untagged=None, keep_literals=True):
        while True:
            segs, skipped = self.response(keep_literals)
            first = segs[0][0]
            if first.startswith(tag + b" "):
                if not first[len(tag) + 1:].startswith(b"OK"):
                    raise RuntimeError(first.decode(errors="replace"))
                return first
            if on_untagged:
                on_untagged(segs, skipped)


def quote(s):
    return b'"' + s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def tokens(segs):
    """Tokens of a response: '(' ')' bytes None, literals as bytes."""
    for text, lit in segs:
        pos = 0
        while True:
            m = TOKEN.match(text, pos)
            if not m:
                break
            pos = m.end()
            if m.group(1):
                yield "("
            elif m.group(2):
                yield ")"
            elif m.group(3) is not None:
                q = m.group(3)
                yield re.sub(rb"\\(.)", rb"\1", q) if b"\\" in q else q
            elif m.group(4):
                yield None
            else:
                yield m.group(5)
        if lit is not None:
            yield lit


def parse(segs):
    """A response as nested lists."""
    stack = [[]]
    for t in tokens(segs):
        if t == "(":
            stack.append([])
        elif t == ")":
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(t)
    return stack[0]


def lower(v):
    return v.lower() if isinstance(v, bytes) else b""


def params(lst):
    out = {}
    if isinstance(lst, list):
        for k, v in zip(lst[0::2], lst[1::2]):
            if isinstance(k, bytes) and isinstance(v, bytes):
                out[k.lower()] = v
    return out


def is_multipart(body):
    return isinstance(body, list) and body and isinstance(body[0], list)


def leaf(body, section, out):
    t, st = lower(body[0]), lower(body[1]) if len(body) > 1 else b""
    names = [params(body[2] if len(body) > 2 else None).get(b"name", b"")]
    disp_at = 9 if t == b"text" else 11 if (t, st) == (b"message", b"rfc822") else 8
    if len(body) > disp_at and isinstance(body[disp_at], list) and len(body[disp_at]) > 1:
        names.append(params(body[disp_at][1]).get(b"filename", b""))
    if (t, st) in ((b"text", b"calendar"), (b"application", b"ics")) or \
            any(n.lower().endswith(b".ics") for n in names):
        out.append(".".join(map(str, section)))
    elif (t, st) == (b"message", b"rfc822") and len(body) > 8 and isinstance(body[8], list):
        message_parts(body[8], section, out)


def multipart_parts(body, prefix, out):
    i = 0
    for child in body:
        if not isinstance(child, list):
            break
        i += 1
        if is_multipart(child):
            multipart_parts(child, prefix + [i], out)
        else:
            leaf(child, prefix + [i], out)


def message_parts(body, prefix, out):
    """Sections of the calendar parts of a message (or an attached one)."""
    if is_multipart(body):
        multipart_parts(body, prefix, out)
    elif isinstance(body, list) and body:
        leaf(body, prefix + [1], out)


def uid_ranges(uids):
    """1,2,3,7 -> [b'1:3', b'7']."""
    out, start, prev = [], None, None
    for u in sorted(uids):
        if start is None:
            start = prev = u
        elif u == prev + 1:
            prev = u
        else:
            out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
            start = prev = u
    if start is not None:
        out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return out


def uid_set(uids):
    """1,2,3,7 -> b'1:3,7'."""
    return b",".join(uid_ranges(uids))


def uid_sets(uids, limit=MAX_SET):
    """UID sets of at most `limit` bytes covering uids: servers refuse
    longer command lines (Dovecot: 64 KiB; RFC 7162 §4 asks clients to
    stay under 8 KiB)."""
    sets, cur, size = [], [], 0
    for r in uid_ranges(uids):
        if cur and size + 1 + len(r) > limit:
            sets.append(b",".join(cur))
            cur, size = [], 0
        cur.append(r)
        size += len(r) + (1 if size else 0)
    if cur:
        sets.append(b",".join(cur))
    return sets


def list_mailboxes(conn):
    names = []

    def on(segs, skipped):
        resp = parse(segs)
        if len(resp) >= 5 and resp[1] == b"LIST":
            flags = [f.lower() for f in resp[2] if isinstance(f, bytes)]
            if b"\\noselect" not in flags and b"\\nonexistent" not in flags:
                names.append(resp[4])

    conn.command(b'LIST "" "*"', on)
    return names


def fetch_mailbox(conn, mailbox, stats):
    conn.command(b"EXAMINE " + quote(mailbox))
    by_section = {}

    def on_structure(segs, skipped):
        resp = parse(segs)
        if len(resp) < 4 or resp[2] != b"FETCH" or not isinstance(resp[3], list):
            return
        att = resp[3]
        uid = body = None
        for k, v in zip(att[0::2], att[1::2]):
            if k == b"UID":
                uid = int(v)
            elif k == b"BODYSTRUCTURE":
                body = v
        if uid is None or body is None:
            return
        stats["messages"] += 1
        found = []
        message_parts(body, [], found)
        for sec in dict.fromkeys(found):
            by_section.setdefault(sec, []).append(uid)

    conn.command(b"UID FETCH 1:* (BODYSTRUCTURE)", on_structure)
    tags = []
    cmds = []
    for sec, uids in sorted(by_section.items()):
        for uset in uid_sets(uids):
            tag = conn.tag()
            tags.append(tag)
            cmds.append(tag + b" UID FETCH " + uset + b" (BODY.PEEK[" + sec.encode() + b"])")
        stats["parts"] += len(uids)
    if cmds:
        conn.send(*cmds)

    def on_part(segs, skipped):
        stats["part_bytes"] += skipped

    for tag in tags:
        conn.until(tag, on_part, keep_literals=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--mailbox", action="append", default=[])
    a = ap.parse_args()
    password = os.environ["IMAPCALFS_PASSWORD"]
    stats = {"messages": 0, "parts": 0, "part_bytes": 0}
    t0 = time.perf_counter()
    conn = Conn(a.host, a.port, a.cafile)
    conn.command(b"LOGIN " + quote(a.user.encode()) + b" " + quote(password.encode()))
    mailboxes = [m.encode() for m in a.mailbox] or list_mailboxes(conn)
    for mb in mailboxes:
        fetch_mailbox(conn, mb, stats)
    conn.command(b"LOGOUT")
    conn.sock.setblocking(True)
    conn.sock.close()
    stats["wall"] = time.perf_counter() - t0
    stats["received"] = conn.received
    stats["mailboxes"] = [m.decode() for m in mailboxes]
    json.dump(stats, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
