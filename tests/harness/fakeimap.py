"""A scripted IMAP server over TLS, for what no well-behaved server does.

Real tests use Dovecot.  This stand-in exists for the cases Dovecot cannot
be configured into: a server that offers no AUTH=PLAIN yet accepts LOGIN,
or a hostile one whose LIST answers carry mailbox names no real server
would create ("..", names with "/", control characters).  It speaks just
enough IMAP4rev1 (RFC 3501) for a mount: CAPABILITY, LOGIN, AUTHENTICATE
PLAIN, LIST, EXAMINE/SELECT (every mailbox is empty), STATUS, SEARCH, FETCH
(no messages), NOOP, LOGOUT; anything else is answered OK.  Every command
line it receives is recorded (literals inline) for the tests to inspect.

It serves implicit TLS with a certificate of the test CA on 127.0.0.1, one
thread per connection, and stops cleanly (stop() joins every thread).
"""

import base64
import re
import socket
import ssl
import threading

HOST = "127.0.0.1"


def imap_literal(data):
    """data (bytes) as an IMAP literal: {n}CRLF followed by the bytes."""
    return b"{%d}\r\n" % len(data) + data


class FakeImap:
    """capabilities: what CAPABILITY answers (list of str); mailboxes: list
    of (name bytes, delimiter str or None) that LIST returns, names sent as
    literals so that any byte but NUL gets through."""

    def __init__(self, cert, key, user="alice", password="secret",
                 capabilities=("IMAP4rev1", "AUTH=PLAIN"), mailboxes=((b"INBOX", "."),)):
        self.user, self.password = user, password
        self.capabilities = list(capabilities)
        self.mailboxes = list(mailboxes)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(cert, key)
        self.commands = []  # every command line received, as bytes
        self.logins = []  # ("LOGIN" | "AUTHENTICATE PLAIN", ok)
        self._lock = threading.Lock()
        self._threads = []
        self._conns = set()
        self._stopping = threading.Event()
        self._sock = None
        self.port = None

    # ----- lifecycle -----

    def start(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stopping.set()
        with self._lock:
            for c in list(self._conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in list(self._threads):
            t.join(timeout=10)
        if self._sock:
            self._sock.close()
        assert not any(t.is_alive() for t in self._threads), "fake IMAP threads left"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, scheme="imaps", user=None):
        return "%s://%s@%s:%d" % (scheme, user or self.user, HOST, self.port)

    def command_names(self):
        """The command verbs received, in order (e.g. ["CAPABILITY", "LOGIN"])."""
        names = []
        for line in self.commands:
            parts = line.split(b" ")
            if len(parts) >= 2:
                verb = parts[1].upper()
                if verb == b"UID" and len(parts) >= 3:
                    verb += b" " + parts[2].upper()
                names.append(verb.decode(errors="replace"))
        return names

    # ----- connections -----

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                raw, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, raw):
        raw.settimeout(30)
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with self._lock:
            self._conns.add(conn)
        try:
            Session(self, conn).run()
        except (OSError, ssl.SSLError, ConnectionError):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass


_LITERAL_END = re.compile(rb"\{(\d+)(\+?)\}\r\n$")


class Session:
    def __init__(self, server, conn):
        self.s, self.conn = server, conn
        self.buf = b""
        self.authenticated = False

    def send(self, data):
        self.conn.sendall(data)

    def read_raw_line(self):
        while b"\r\n" not in self.buf:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise ConnectionError("client closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def read_bytes(self, n):
        while len(self.buf) < n:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise ConnectionError("client closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_command(self):
        """One command with its literals inlined (synchronising ones get
        their "+" continuation first)."""
        out = b""
        while True:
            line = self.read_raw_line()
            m = _LITERAL_END.search(line)
            if not m:
                return out + line[:-2]
            out += line[:m.start()]
            if not m.group(2):
                self.send(b"+ go ahead\r\n")
            data = self.read_bytes(int(m.group(1)))
            out += b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'

    def run(self):
        self.send(b"* OK fake IMAP server ready\r\n")
        while True:
            line = self.read_command()
            with self.s._lock:
                self.s.commands.append(line)
            parts = line.split(b" ", 2)
            if len(parts) < 2:
                self.send(b"* BAD no command\r\n")
                continue
            tag, verb = parts[0], parts[1].upper()
            args = parts[2] if len(parts) > 2 else b""
            if not self.dispatch(tag, verb, args):
                return

    def ok(self, tag, text=b"done"):
        self.send(tag + b" OK " + text + b"\r\n")

    def dispatch(self, tag, verb, args):
        if verb == b"CAPABILITY":
            self.send(b"* CAPABILITY " + " ".join(self.s.capabilities).encode() + b"\r\n")
            self.ok(tag)
        elif verb == b"LOGIN":
            user, password = _astrings(args)[:2] if len(_astrings(args)) >= 2 else (b"", b"")
            self._finish_login(tag, "LOGIN", user, password)
        elif verb == b"AUTHENTICATE":
            words = args.split(b" ")
            if words[0].upper() != b"PLAIN":
                self.send(tag + b" NO unsupported mechanism\r\n")
                return True
            if len(words) > 1:
                resp = words[1]
            else:
                self.send(b"+ \r\n")
                resp = self.read_raw_line()[:-2]
            try:
                _, user, password = base64.b64decode(resp).split(b"\0", 2)
            except ValueError:
                user, password = b"", b""
            self._finish_login(tag, "AUTHENTICATE PLAIN", user, password)
        elif verb == b"LOGOUT":
            self.send(b"* BYE logging out\r\n")
            self.ok(tag)
            return False
        elif not self.authenticated and verb not in (b"NOOP", b"ID"):
            self.send(tag + b" BAD log in first\r\n")
        elif verb == b"LIST" or verb == b"LSUB":
            for name, delim in self.s.mailboxes:
                d = b"NIL" if delim is None else b'"' + delim.encode() + b'"'
                self.send(b"* " + verb + b" () " + d + b" " + imap_literal(name) + b"\r\n")
            self.ok(tag)
        elif verb in (b"EXAMINE", b"SELECT"):
            self.send(b"* FLAGS (\\Seen)\r\n* 0 EXISTS\r\n* 0 RECENT\r\n"
                      b"* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 1] ok\r\n")
            self.ok(tag, b"[READ-ONLY] done")
        elif verb == b"STATUS":
            name = _astrings(args)[0] if _astrings(args) else b""
            self.send(b"* STATUS " + imap_literal(name)
                      + b" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 7 UNSEEN 0)\r\n")
            self.ok(tag)
        elif verb == b"SEARCH" or (verb == b"UID" and args.upper().startswith(b"SEARCH")):
            self.send(b"* SEARCH\r\n")
            self.ok(tag)
        else:
            self.ok(tag)
        return True

    def _finish_login(self, tag, how, user, password):
        ok = user == self.s.user.encode() and password == self.s.password.encode()
        with self.s._lock:
            self.s.logins.append((how, ok))
        if ok:
            self.authenticated = True
            self.ok(tag, b"logged in")
        else:
            self.send(tag + b" NO [AUTHENTICATIONFAILED] wrong password\r\n")


def _astrings(args):
    """The astring arguments of a command line (atoms and quoted strings;
    literals were inlined as quoted strings by read_command)."""
    out, i = [], 0
    while i < len(args):
        if args[i:i + 1] == b" ":
            i += 1
        elif args[i:i + 1] == b'"':
            j, val = i + 1, bytearray()
            while j < len(args) and args[j:j + 1] != b'"':
                if args[j:j + 1] == b"\\":
                    j += 1
                val += args[j:j + 1]
                j += 1
            out.append(bytes(val))
            i = j + 1
        else:
            j = args.find(b" ", i)
            j = len(args) if j < 0 else j
            out.append(args[i:j])
            i = j
    return out
