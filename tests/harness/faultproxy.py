"""A fault-injecting IMAP proxy for the robustness tests.

It sits between imapcalfs and the test Dovecot and terminates TLS on both
sides: it serves TLS to imapcalfs with a certificate of the test CA and
connects to Dovecot's implicit-TLS port as a client, so in between it sees
plaintext IMAP (command lines, response lines and literals) and can break
them.  Faults are switched at run time (start clean, turn one on, later off)
so that recovery can be tested; exactly one fault is active at a time.

Faults (FaultProxy.set_fault(kind, ...)):

  drop        each connection is cut (TCP abort, no TLS close_notify) after
              `nbytes` more bytes from the server, mid-response
  stall       nothing more reaches the client, on every connection, new
              ones included (no greeting); a stalled connection stays stalled
  trickle     server bytes reach the client at `rate` bytes per second
  garbage     a line of binary junk before every response (fetch_only=True:
              only before untagged FETCH responses)
  longline    the answer to a FETCH becomes `nbytes` (10 MB) without CRLF,
              then the connection is cut; with `uid`, only that message's
              FETCH response grows by `nbytes` inside its line, which then
              ends normally
  bye         an unsolicited "* BYE" on every open connection, which is
              then closed; while on, every command is answered with BYE
  no / bad    every UID FETCH is answered with a tagged NO / BAD (the
              command never reaches the server)
  bad_bodystructure  the BODYSTRUCTURE of message `uid` is rewritten so that
              libetpan cannot parse it; the response stays well-formed IMAP
  deep_nesting  the BODYSTRUCTURE of message `uid` becomes a multipart
              nested `depth` (10,000) deep
  huge_literal  the BODY[...] of message `uid` is announced as a literal of
              `size` (1 GB) bytes and streamed lazily until the client
              hangs up
  gather      not a fault but a meeting point: the tagged answer to every
              `command` (default EXAMINE) is held until `count` connections
              each wait for one, or `wait` seconds pass; stats()["gathered"]
              is the most connections that were ever held at once, which
              shows whether a client really works on several at a time

The proxy runs an asyncio loop on a thread of its own; set_fault/clear are
safe to call from any thread.  stats() tells what happened (connections,
commands, bytes, how far a huge literal got before the client hung up).
"""

import asyncio
import contextlib
import re
import ssl
import threading
import time

HOST = "127.0.0.1"

KINDS = ("drop", "stall", "trickle", "garbage", "longline", "bye", "no", "bad",
         "bad_bodystructure", "deep_nesting", "huge_literal", "gather")

_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\r\n$")
_COMMAND = re.compile(rb"^([^\s+*]+) (?:(UID) )?([A-Za-z]+)")
_TAGGED = re.compile(rb"^([^\s+*]+) (OK|NO|BAD)\b", re.I)
_FETCH = re.compile(rb"^\* \d+ FETCH \(", re.I)
_FETCH_UID = re.compile(rb"^\* \d+ FETCH \(.*?\bUID (\d+)", re.I)
_BODY_SECTION = re.compile(rb"\bBODY\[([0-9.]*)\](?:<\d+>)? \{(\d+)\}\r\n$", re.I)

GARBAGE = b"* \x00\x01\xfe\xff ((( \"junk\\ ))) \x7f{x}\x1b[0m NIL)(\r\n"


def bodystructure_span(line, start=0):
    """(begin, end) of the parenthesised value after "BODYSTRUCTURE " in
    line (bytes without literals), honouring quoted strings; None if absent."""
    i = line.upper().find(b"BODYSTRUCTURE (", start)
    if i < 0:
        return None
    begin = i + len(b"BODYSTRUCTURE ")
    depth, j, quoted = 0, begin, False
    while j < len(line):
        ch = line[j:j + 1]
        if quoted:
            if ch == b"\\":
                j += 1
            elif ch == b'"':
                quoted = False
        elif ch == b'"':
            quoted = True
        elif ch == b"(":
            depth += 1
        elif ch == b")":
            depth -= 1
            if depth == 0:
                return begin, j + 1
        j += 1
    return None


# Well-formed IMAP (balanced parentheses, quoted strings, atoms) that the
# body grammar of RFC 3501 does not allow: body-fld-octets must be a number.
UNPARSEABLE_BODYSTRUCTURE = (b'("TEXT" "CALENDAR" ("CHARSET" "UTF-8" "METHOD" "REQUEST") NIL NIL '
                             b'"7BIT" not-a-number 12 NIL NIL NIL NIL)')


def nested_bodystructure(depth):
    """A multipart/mixed holding a multipart/mixed ... `depth` levels deep
    around one text/calendar leaf."""
    leaf = b'("TEXT" "CALENDAR" ("CHARSET" "UTF-8") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL)'
    return b"(" * depth + leaf + b' "MIXED")' * depth


class _Conn:
    """One client connection and its upstream session."""

    def __init__(self, proxy, n, cwriter):
        self.proxy, self.n, self.cwriter = proxy, n, cwriter
        self.swriter = None
        self.closed = asyncio.Event()
        self.pending = {}  # tag -> command name, commands without a tagged reply yet
        self.epoch = -1
        self.drop_left = None

    def abort(self):
        """Cuts both sides at once: no TLS close_notify, no LOGOUT."""
        for w in (self.cwriter, self.swriter):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.transport.abort()
        self.closed.set()


class FaultProxy:
    """The proxy in front of Dovecot's IMAPS port `upstream_port`.

    cert/key: a server certificate of the test CA for 127.0.0.1/localhost;
    ca_file: the CA that Dovecot's certificate is checked against."""

    def __init__(self, upstream_port, cert, key, ca_file, upstream_host=HOST):
        self.upstream = (upstream_host, upstream_port)
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.load_cert_chain(cert, key)
        self.client_ctx = ssl.create_default_context(cafile=ca_file)
        self.port = None
        self._loop = None
        self._thread = None
        self._server = None
        self._conns = set()
        self._lock = threading.Lock()
        self._fault = ("none", {})
        self._epoch = 0
        self._stats = {"connections": 0, "commands": {}, "to_client": 0, "faulted": 0,
                       "huge_sent": [], "longline_sent": 0, "gathered": 0}
        self._held = set()  # connections whose answer the gather point holds
        self._released = set()  # held connections let go because the count was met

    # ----- life cycle -----

    def start(self):
        ready = threading.Event()
        errors = []

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(asyncio.start_server(
                    self._handle, HOST, 0, ssl=self.server_ctx, limit=1 << 20))
                self.port = self._server.sockets[0].getsockname()[1]
            except Exception as e:  # reported to start()
                errors.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._shutdown())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        if self.port is None:
            raise RuntimeError("fault proxy did not start")
        return self

    async def _shutdown(self):
        self._server.close()
        for c in list(self._conns):
            c.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def stop(self):
        """Closes the listener and every connection; safe to call twice."""
        if self._loop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, user):
        return "imaps://%s@%s:%d" % (user, HOST, self.port)

    # ----- faults -----

    def set_fault(self, kind, **params):
        """Turns fault `kind` on (see the module docstring), replacing any other."""
        if kind not in KINDS:
            raise ValueError("unknown fault %r" % kind)
        with self._lock:
            self._fault = (kind, dict(params))
            self._epoch += 1
            if kind == "gather":
                self._stats["gathered"] = 0
        if kind == "bye":
            self._loop.call_soon_threadsafe(self._bye_everyone)

    def clear(self):
        """Back to a transparent proxy (stalled connections stay stalled)."""
        with self._lock:
            self._fault = ("none", {})
            self._epoch += 1

    def fault(self):
        with self._lock:
            return self._fault[0], self._fault[1], self._epoch

    def stats(self):
        with self._lock:
            s = dict(self._stats)
            s["commands"] = dict(self._stats["commands"])
            s["huge_sent"] = list(self._stats["huge_sent"])
        s["open"] = len(self._conns)
        s["in_flight"] = sum(len(c.pending) for c in list(self._conns))
        return s

    def in_flight(self):
        """Commands forwarded whose tagged answer has not reached the client."""
        return sum(len(c.pending) for c in list(self._conns))

    def _count(self, key, n=1):
        with self._lock:
            self._stats[key] += n

    def _bye_everyone(self):
        for c in list(self._conns):
            self._loop.create_task(self._send_bye(c))

    async def _send_bye(self, c):
        with contextlib.suppress(Exception):
            c.cwriter.write(b"* BYE fault injected: server going away\r\n")
            await asyncio.wait_for(c.cwriter.drain(), 2)
        self._count("faulted")
        c.abort()

    # ----- connections -----

    async def _handle(self, creader, cwriter):
        with self._lock:
            self._stats["connections"] += 1
            n = self._stats["connections"]
        c = _Conn(self, n, cwriter)
        self._conns.add(c)
        try:
            try:
                sreader, c.swriter = await asyncio.wait_for(asyncio.open_connection(
                    *self.upstream, ssl=self.client_ctx, server_hostname="localhost",
                    limit=1 << 26), 15)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                return
            up = asyncio.ensure_future(self._server_to_client(c, sreader))
            down = asyncio.ensure_future(self._client_to_server(c, creader))
            closed = asyncio.ensure_future(c.closed.wait())
            await asyncio.wait({up, down, closed}, return_when=asyncio.FIRST_COMPLETED)
            for t in (up, down, closed):
                t.cancel()
            for t in (up, down, closed):
                with contextlib.suppress(BaseException):
                    await t
        finally:
            c.abort()
            self._conns.discard(c)

    async def _client_to_server(self, c, creader):
        """Forwards command lines; answers UID FETCH itself under no/bad/bye."""
        while True:
            try:
                line = await creader.readuntil(b"\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError,
                    ssl.SSLError):
                return
            kind, _, _ = self.fault()
            m = _COMMAND.match(line)
            name = None
            if m:
                name = ((m.group(2) or b"") + b" " + m.group(3)).strip().upper().decode()
                with self._lock:
                    self._stats["commands"][name] = self._stats["commands"].get(name, 0) + 1
            if m and kind == "bye":
                await self._send_bye(c)
                return
            if m and name == "UID FETCH" and kind in ("no", "bad"):
                tag = m.group(1)
                answer = b" NO [UNAVAILABLE] fault injected\r\n" if kind == "no" else \
                    b" BAD fault injected\r\n"
                self._count("faulted")
                c.cwriter.write(tag + answer)
                with contextlib.suppress(Exception):
                    await c.cwriter.drain()
                continue
            if m:
                c.pending[m.group(1)] = name
            try:
                c.swriter.write(line)
                await c.swriter.drain()
            except (OSError, ssl.SSLError):
                return

    async def _read_unit(self, sreader):
        """One server response: a line, plus its literals and continuation
        lines.  Returns the list of segments (line, literal, line, ...)."""
        parts = []
        while True:
            line = await sreader.readuntil(b"\r\n")
            parts.append(line)
            m = _LITERAL_AT_END.search(line)
            if not m:
                return parts
            parts.append(await sreader.readexactly(int(m.group(1))))

    async def _server_to_client(self, c, sreader):
        while True:
            try:
                parts = await self._read_unit(sreader)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError,
                    ssl.SSLError):
                return
            m = _TAGGED.match(parts[0])
            name = c.pending.pop(m.group(1), None) if m else None
            if name is not None:
                await self._gather(c, name)
            if not await self._deliver(c, parts):
                return

    async def _gather(self, c, name):
        """Under the gather fault, holds the tagged answer to the chosen
        command until enough connections wait together (or time runs out)."""
        kind, params, _ = self.fault()
        if kind != "gather" or name != params.get("command", "EXAMINE"):
            return
        count, wait = int(params.get("count", 2)), float(params.get("wait", 3))
        self._held.add(c.n)
        deadline = time.monotonic() + wait
        try:
            while c.n not in self._released and time.monotonic() < deadline \
                    and not c.closed.is_set():
                with self._lock:
                    self._stats["gathered"] = max(self._stats["gathered"], len(self._held))
                if len(self._held) >= count:
                    self._released |= self._held  # everyone held goes on together
                    break
                await asyncio.sleep(0.02)
        finally:
            self._held.discard(c.n)
            self._released.discard(c.n)

    async def _write(self, c, data):
        """Writes to the client under the drop and trickle faults; False
        once the connection is gone (or was cut on purpose)."""
        kind, params, epoch = self.fault()
        if c.closed.is_set() or c.cwriter.transport.is_closing():
            c.abort()
            return False
        if kind == "drop":
            if c.epoch != epoch:
                c.epoch, c.drop_left = epoch, int(params.get("nbytes", 1000))
            if len(data) >= c.drop_left:
                data = data[:c.drop_left]
                with contextlib.suppress(Exception):
                    c.cwriter.write(data)
                    await asyncio.wait_for(c.cwriter.drain(), 2)
                self._count("to_client", len(data))
                self._count("faulted")
                c.abort()
                return False
            c.drop_left -= len(data)
        try:
            if kind == "trickle":
                self._count("faulted")
                rate = float(params.get("rate", 100))
                step = max(1, int(rate / 10))
                for i in range(0, len(data), step):
                    if c.closed.is_set() or c.cwriter.transport.is_closing():
                        c.abort()
                        return False
                    c.cwriter.write(data[i:i + step])
                    await c.cwriter.drain()
                    self._count("to_client", len(data[i:i + step]))
                    await asyncio.sleep(step / rate)
                    if self.fault()[0] != "trickle":
                        c.cwriter.write(data[i + step:])
                        await c.cwriter.drain()
                        self._count("to_client", len(data[i + step:]))
                        break
            else:
                c.cwriter.write(data)
                await c.cwriter.drain()
                self._count("to_client", len(data))
                # drain() returns without yielding while the buffer is low:
                # yield, so that a hang-up of the client is noticed.
                await asyncio.sleep(0)
        except (OSError, ssl.SSLError, RuntimeError):
            c.abort()
            return False
        return True

    async def _deliver(self, c, parts):
        """Sends one response to the client, broken as the fault says."""
        kind, params, _ = self.fault()
        first = parts[0]
        is_fetch = bool(_FETCH.match(first))
        uid_m = _FETCH_UID.match(first)
        uid = int(uid_m.group(1)) if uid_m else None
        target = params.get("uid")
        if kind == "stall":
            self._count("faulted")
            await c.closed.wait()
            return False
        if kind == "garbage" and (is_fetch or not params.get("fetch_only")):
            self._count("faulted")
            if not await self._write(c, GARBAGE):
                return False
        if kind == "longline" and is_fetch and target in (None, uid):
            self._count("faulted")
            chunk = b"A" * 65536
            total = int(params.get("nbytes", 10 << 20))
            sent = 0
            try:
                if target is not None:  # inside that message's response
                    sent = len(first) - 2
                    if not await self._write(c, first[:-2] + b" X-"):
                        return False
                while sent < total:
                    if not await self._write(c, chunk[:total - sent]):
                        break
                    sent += min(len(chunk), total - sent)
            finally:
                self._count("longline_sent", sent)
            if target is not None and sent >= total:
                # The line ends after all, so the session could go on.
                for p in [b"\r\n"] + parts[1:]:
                    if not await self._write(c, p):
                        return False
                return True
            c.abort()
            return False
        if kind in ("bad_bodystructure", "deep_nesting") and is_fetch and uid == target \
                and len(parts) == 1:
            span = bodystructure_span(first)
            if span:
                self._count("faulted")
                new = UNPARSEABLE_BODYSTRUCTURE if kind == "bad_bodystructure" else \
                    nested_bodystructure(int(params.get("depth", 10000)))
                parts = [first[:span[0]] + new + first[span[1]:]]
        if kind == "huge_literal" and is_fetch and uid == target:
            m = _BODY_SECTION.search(first)
            if m:
                self._count("faulted")
                return await self._huge(c, first, m, int(params.get("size", 10 ** 9)))
        for p in parts:
            if not await self._write(c, p):
                return False
        return True

    async def _huge(self, c, first, m, size):
        """Replaces a BODY[...] literal by one of `size` bytes, streamed
        lazily; records how much was sent before the client hung up."""
        head = first[:m.start(2) - 1] + b"{%d}\r\n" % size
        sent = 0
        chunk = b"x" * 65536
        ok = await self._write(c, head)
        start = time.monotonic()
        try:
            while ok and sent < size and not c.closed.is_set():
                n = min(len(chunk), size - sent)
                ok = await self._write(c, chunk[:n])
                sent += n if ok else 0
                if time.monotonic() - start > 120:
                    break
        finally:
            with self._lock:
                self._stats["huge_sent"].append(sent)
        if ok and sent == size:
            # The client swallowed it all (it should not): end the response.
            return await self._write(c, b")\r\n")
        c.abort()
        return False
