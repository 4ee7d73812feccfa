"""A private, throwaway Dovecot IMAP server for tests and the demo.

Each instance lives in its own directory (config, runtime sockets, state,
log, Maildir++ storage), listens on 127.0.0.1 only, on free ports picked at
start, and has a unique instance_name so that its processes can be found
(and only they) with pgrep.  It serves IMAPS (implicit TLS) and IMAP with
STARTTLS; the `tls=False` variant serves plain IMAP without STARTTLS (a
"STARTTLS stripped" server).  Mail goes in and is inspected through IMAP
(imaplib over TLS, verifying the test CA), so Dovecot keeps its own indexes
consistent.  Dovecot runs as root here, as the tests do; mail is owned by
`nobody`, because Dovecot refuses mail access as uid 0.
"""

import base64
import contextlib
import datetime
import grp
import imaplib
import os
import pwd
import re
import secrets
import signal
import socket
import ssl
import subprocess
import time

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
HOST = "127.0.0.1"

# Dovecot's LIST separator for Maildir++ ("Calendars.Alice").
SEPARATOR = "."


class DovecotError(RuntimeError):
    """Dovecot failed to start or to do what the harness asked."""


def free_port():
    """Returns a TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_accepts(port, host=HOST):
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def imap_quote(name):
    """Quotes a mailbox name as an IMAP quoted string (RFC 3501 §4.3)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mutf7_encode(name):
    """Encodes a Unicode mailbox name to modified UTF-7 (RFC 3501 §5.1.3)."""
    out, buf = [], []

    def flush():
        if buf:
            raw = "".join(buf).encode("utf-16-be")
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=")
            out.append("&" + b64.replace("/", ",") + "-")
            buf.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


def _internaldate_arg(when):
    """Turns a datetime (naive = UTC) or epoch seconds into an APPEND date."""
    if when is None:
        return None
    if isinstance(when, (int, float)):
        when = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return imaplib.Time2Internaldate(when)


def crlf(raw):
    """Normalises line ends to CRLF, as IMAP APPEND requires (RFC 3501 §2.2)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Dovecot:
    """One private Dovecot instance.

    root: an empty (or not yet existing) directory that the instance owns.
    cert/key: the server certificate and key (PEM files); ca_file: the CA
    that the harness's own IMAP clients trust.  users: names to create,
    each with a generated password (see .passwords).
    """

    def __init__(self, root, cert=None, key=None, ca_file=None, users=("alice",),
                 tls=True, rawlog=False):
        if os.geteuid() != 0:
            raise DovecotError("the Dovecot harness needs root (it runs as root in CI)")
        self.root = os.path.abspath(root)
        self.cert, self.key, self.ca_file = cert, key, ca_file
        self.tls = tls
        if tls and not (cert and key):
            raise DovecotError("a TLS instance needs cert and key")
        self.rawlog = rawlog
        self.instance = "icfs-" + secrets.token_hex(4)
        self.conf = os.path.join(self.root, "dovecot.conf")
        self.log_path = os.path.join(self.root, "dovecot.log")
        self.base_dir = os.path.join(self.root, "run")
        self.mail_dir = os.path.join(self.root, "mail")
        self.rawlog_dir = os.path.join(self.root, "rawlog")
        self.passwd_file = os.path.join(self.root, "passwd")
        self.passwords = {u: secrets.token_urlsafe(12) for u in users}
        self.imaps_port = None
        self.imap_port = None
        self.pid = None
        self._passwd_mtime = 0
        self._mail_uid = pwd.getpwnam("nobody").pw_uid
        self._mail_gid = grp.getgrnam("nogroup").gr_gid

    # ----- configuration and lifecycle -----

    _STATE_KEYS = ("root", "conf", "log_path", "cert", "key", "ca_file", "tls", "rawlog",
                   "instance", "passwords", "imap_port", "imaps_port", "pid", "_passwd_mtime")

    def to_state(self):
        """What another process needs to use or stop this instance (JSON-able)."""
        return {k: getattr(self, k) for k in self._STATE_KEYS}

    @classmethod
    def from_state(cls, state):
        """Rebuilds a Dovecot object for an instance started elsewhere (the
        demo's `stop` runs in a later process than its `start`)."""
        d = cls(state["root"], state["cert"], state["key"], state["ca_file"],
                users=list(state["passwords"]), tls=state["tls"], rawlog=state["rawlog"])
        for k in cls._STATE_KEYS:
            setattr(d, k, state[k])
        return d

    @property
    def password(self):
        """The password of the first user (alice by default)."""
        return next(iter(self.passwords.values()))

    @property
    def user(self):
        return next(iter(self.passwords))

    def url(self, scheme="imaps", user=None):
        """SOURCE for imapcalfs: imaps:// (implicit TLS) or imap:// (STARTTLS)."""
        port = self.imaps_port if scheme == "imaps" else self.imap_port
        return "%s://%s@%s:%d" % (scheme, user or self.user, HOST, port)

    def _write_passwd(self):
        """passwd-file with {PLAIN} passwords, readable by Dovecot's auth user."""
        with open(self.passwd_file, "w") as f:
            for user, pw in self.passwords.items():
                f.write("%s:{PLAIN}%s::::::\n" % (user, pw))
        os.chown(self.passwd_file, 0, grp.getgrnam("dovecot").gr_gid)
        os.chmod(self.passwd_file, 0o640)
        # Dovecot re-reads a passwd-file when its mtime (in whole seconds)
        # changes: make every rewrite visible, even within one second.
        self._passwd_mtime = max(int(time.time()), self._passwd_mtime + 1)
        os.utime(self.passwd_file, (self._passwd_mtime, self._passwd_mtime))

    def add_user(self, name, timeout=10):
        """Adds a user while running and returns its password.

        Dovecot looks at the passwd-file's mtime at most once a second, so
        wait until the new user can log in."""
        self.passwords[name] = secrets.token_urlsafe(12)
        self._write_passwd()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.imap(name):
                    return self.passwords[name]
            except imaplib.IMAP4.error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _config(self):
        """The whole dovecot.conf: nothing comes from /etc/dovecot."""
        r = self.root
        lines = [
            "# private test instance written by tests/harness/dovecot.py",
            "instance_name = " + self.instance,
            "base_dir = " + self.base_dir,
            "state_dir = " + os.path.join(r, "state"),
            "log_path = " + self.log_path,
            "info_log_path = " + self.log_path,
            "protocols = imap",
            "listen = " + HOST,
            "auth_mechanisms = plain login",
            # Wrong-password tests should not wait the default 2 s.
            "auth_failure_delay = 0",
            "auth_verbose = yes",
            "passdb {",
            "  driver = passwd-file",
            "  args = scheme=PLAIN username_format=%%u %s" % self.passwd_file,
            "}",
            "userdb {",
            "  driver = static",
            "  args = uid=%d gid=%d home=%s/home/%%u"
            % (self._mail_uid, self._mail_gid, r),
            "}",
            "mail_location = maildir:%s/%%u" % self.mail_dir,
            "namespace inbox {",
            "  inbox = yes",
            "  separator = " + SEPARATOR,
            "}",
            "mail_max_userip_connections = 100",
        ]
        if self.tls:
            lines += [
                "ssl = yes",
                "ssl_cert = <" + self.cert,
                "ssl_key = <" + self.key,
                "ssl_min_protocol = TLSv1.2",
            ]
        else:
            lines += ["ssl = no"]
        if self.rawlog:
            lines += ["protocol imap {", "  rawlog_dir = %s/%%u" % self.rawlog_dir, "}"]
        # Both listeners are always named: Dovecot's defaults (143 and 993)
        # would otherwise stay active; port 0 switches a listener off.
        lines += [
            "service imap-login {",
            "  inet_listener imap {",
            "    address = " + HOST,
            "    port = %d" % self.imap_port,
            "  }",
            "  inet_listener imaps {",
            "    address = " + HOST,
            "    port = %d" % (self.imaps_port or 0),
            "    ssl = yes" if self.tls else "    ssl = no",
            "  }",
            "}",
        ]
        return "\n".join(lines) + "\n"

    def _prepare_dirs(self):
        """Creates the tree; mail, home and rawlog belong to the mail user.

        Dovecot's auth process (user dovecot) and mail processes (nobody)
        must traverse every parent directory: a root made under a 0700
        directory (mkdtemp, pytest's tmp_path) cannot work."""
        os.makedirs(self.root, exist_ok=True)
        parent = os.path.dirname(self.root)
        while parent != "/":
            if not os.stat(parent).st_mode & 0o001:
                raise DovecotError("%s is not searchable by others (o+x); Dovecot's "
                                   "unprivileged processes could not reach %s"
                                   % (parent, self.root))
            parent = os.path.dirname(parent)
        os.chmod(self.root, 0o755)  # auth (user dovecot) reads passwd below it
        for d in ("mail", "home", "rawlog"):
            path = os.path.join(self.root, d)
            os.makedirs(path, exist_ok=True)
            os.chown(path, self._mail_uid, self._mail_gid)
            os.chmod(path, 0o700)
        for user in self.passwords:
            path = os.path.join(self.rawlog_dir, user)
            os.makedirs(path, exist_ok=True)
            os.chown(path, self._mail_uid, self._mail_gid)

    def start(self, timeout=15):
        """Starts the instance on fresh free ports and waits until it accepts.

        Retries with other ports when one was taken between picking and
        binding.  Raises DovecotError with the log tail if it cannot start.
        """
        self._prepare_dirs()
        self._write_passwd()
        last = ""
        for _ in range(5):
            self.imap_port = free_port()
            self.imaps_port = free_port() if self.tls else None
            while self.imaps_port == self.imap_port:
                self.imaps_port = free_port()
            with open(self.conf, "w") as f:
                f.write(self._config())
            # The daemonised master inherits stdout/stderr: a file, not a
            # pipe, or whoever reads the pipe would wait for it forever.
            errfile = os.path.join(self.root, "dovecot.stderr")
            with open(errfile, "w+") as err:
                rc = subprocess.run([DOVECOT, "-c", self.conf], stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=err, timeout=30).returncode
                err.seek(0)
                if rc != 0:
                    raise DovecotError("dovecot -c %s failed (%d): %s%s" % (
                        self.conf, rc, err.read(), self.log_tail()))
            if self._wait_ready(timeout):
                return self
            last = self.log_tail()
            self.stop()
            if "in use" not in last:
                break
        raise DovecotError("Dovecot did not start:\n" + last)

    def _wait_ready(self, timeout):
        """Polls until every listener accepts; False if the master died."""
        deadline = time.monotonic() + timeout
        ports = [p for p in (self.imap_port, self.imaps_port) if p]
        while time.monotonic() < deadline:
            self.pid = self._read_pid()
            if self.pid and not _alive(self.pid):
                return False
            if self.pid and all(port_accepts(p) for p in ports):
                return True
            time.sleep(0.02)
        return False

    def _read_pid(self):
        try:
            with open(os.path.join(self.base_dir, "master.pid")) as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def processes(self):
        """PIDs of this instance: the master (its argv names our config)
        and its children (their titles start with dovecot-<instance>/)."""
        pids = []
        prefix = ("dovecot-%s/" % self.instance).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if cmd.startswith(prefix) or self.conf.encode() + b"\0" in cmd:
                pids.append(int(entry))
        return pids

    def running(self):
        return bool(self.processes())

    def stop(self, timeout=15):
        """Stops the instance: SIGTERM to the master, wait, then SIGKILL any
        process of this instance still there.  Safe to call twice."""
        pid = self.pid or self._read_pid()
        if pid and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.05)
        for leftover in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.05)
        self.pid = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, lines=30):
        """The end of the instance's log, for error messages."""
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def session_bytes(self, user=None, expect=0, timeout=10):
        """(in, out) byte counts of every finished IMAP session of user, from
        Dovecot's disconnect log lines ("... in=N out=N ...").  The line is
        written just after the client has gone, so wait (up to timeout) for
        at least `expect` of them."""
        user = user or self.user
        pat = re.compile(r"imap\(%s\)\S*: \w+: .*?\bin=(\d+) out=(\d+)" % re.escape(user))
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_path, errors="replace") as f:
                found = [(int(m.group(1)), int(m.group(2))) for m in pat.finditer(f.read())]
            if len(found) >= expect or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def rawlog_files(self, user=None):
        """Paths of the rawlog files (*.in / *.out) of user's sessions, when
        the instance was made with rawlog=True: what crossed the wire after
        login, decrypted."""
        d = os.path.join(self.rawlog_dir, user or self.user)
        return sorted(os.path.join(d, n) for n in os.listdir(d))

    def doveadm(self, *args):
        """Runs doveadm against this instance; returns stdout."""
        proc = subprocess.run([DOVEADM, "-c", self.conf] + list(args),
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise DovecotError("doveadm %s: %s" % (" ".join(args), proc.stderr))
        return proc.stdout

    # ----- IMAP client side -----

    def ssl_context(self):
        """A client context that trusts only the test CA, host name checked."""
        return ssl.create_default_context(cafile=self.ca_file)

    @contextlib.contextmanager
    def imap(self, user=None, starttls=False):
        """A logged-in imaplib connection: IMAPS, or IMAP + STARTTLS.

        On a tls=False instance the connection stays plaintext."""
        user = user or self.user
        if self.tls and not starttls:
            conn = imaplib.IMAP4_SSL(HOST, self.imaps_port, ssl_context=self.ssl_context(),
                                     timeout=30)
        else:
            conn = imaplib.IMAP4(HOST, self.imap_port, timeout=30)
            if self.tls:
                conn.starttls(self.ssl_context())
        try:
            conn.login(user, self.passwords[user])
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def create_mailbox(self, name, user=None):
        """Creates and subscribes mailbox `name` (Unicode; sent as mUTF-7)."""
        with self.imap(user) as c:
            wire = imap_quote(mutf7_encode(name))
            _ok(c.create(wire), "CREATE " + name)
            _ok(c.subscribe(wire), "SUBSCRIBE " + name)

    def add_message(self, mailbox, raw, internaldate=None, flags=None, user=None):
        """APPENDs raw (bytes or str; line ends made CRLF) to mailbox, with
        the given INTERNALDATE (datetime, naive = UTC, or epoch seconds).
        Creates the mailbox if needed.  Returns the new message's UID."""
        wire = imap_quote(mutf7_encode(mailbox))
        with self.imap(user) as c:
            if mailbox.upper() != "INBOX":
                typ, data = c.list('""', wire)
                if typ != "OK" or not data or data == [None]:
                    _ok(c.create(wire), "CREATE " + mailbox)
                    _ok(c.subscribe(wire), "SUBSCRIBE " + mailbox)
            flag_arg = "(%s)" % " ".join(flags) if flags else None
            typ, data = c.append(wire, flag_arg, _internaldate_arg(internaldate), crlf(raw))
            _ok((typ, data), "APPEND to " + mailbox)
            m = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            if not m:
                raise DovecotError("no APPENDUID in %r" % data)
            return int(m.group(1))

    def expunge(self, mailbox, uid, user=None):
        """Removes message UID from mailbox (STORE \\Deleted + UID EXPUNGE)."""
        with self.imap(user) as c:
            _ok(c.select(imap_quote(mutf7_encode(mailbox))), "SELECT " + mailbox)
            _ok(c.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)"), "STORE")
            _ok(c.uid("EXPUNGE", str(uid)), "UID EXPUNGE")

    def _fetch_all(self, mailbox, item, user=None):
        """UID FETCH 1:* (item) in EXAMINE mode: {uid: raw response line}."""
        out = {}
        with self.imap(user) as c:
            _ok(c.select(imap_quote(mutf7_encode(mailbox)), readonly=True), "EXAMINE")
            typ, data = c.uid("FETCH", "1:*", "(UID %s)" % item)
            _ok((typ, data), "FETCH")
            for line in data:
                if isinstance(line, tuple):
                    line = line[0]
                if not line:
                    continue
                m = re.search(rb"UID (\d+)", line)
                if m:
                    out[int(m.group(1))] = line
        return out

    def flags(self, mailbox, user=None):
        """{uid: frozenset of stored flags} of every message in mailbox, read
        with EXAMINE.  \\Recent is left out: it is a per-session flag that
        changes by itself, not something a client can set."""
        res = {}
        for uid, line in self._fetch_all(mailbox, "FLAGS", user).items():
            m = re.search(rb"FLAGS \(([^)]*)\)", line)
            names = m.group(1).decode().split() if m else []
            res[uid] = frozenset(n for n in names if n.lower() != "\\recent")
        return res

    def internaldates(self, mailbox, user=None):
        """{uid: INTERNALDATE as epoch seconds} of every message in mailbox."""
        res = {}
        for uid, line in self._fetch_all(mailbox, "INTERNALDATE", user).items():
            m = re.search(rb'INTERNALDATE "([^"]+)"', line)
            if m:
                when = datetime.datetime.strptime(m.group(1).decode(), "%d-%b-%Y %H:%M:%S %z")
                res[uid] = int(when.timestamp())
        return res

    def uidvalidity(self, mailbox, user=None):
        """The mailbox's UIDVALIDITY (STATUS)."""
        with self.imap(user) as c:
            typ, data = c.status(imap_quote(mutf7_encode(mailbox)), "(UIDVALIDITY)")
            _ok((typ, data), "STATUS")
            return int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))

    def set_uidvalidity(self, mailbox, value, user=None):
        """Changes the mailbox's UIDVALIDITY (what a server rebuild does)."""
        self.doveadm("mailbox", "update", "-u", user or self.user,
                     "--uid-validity", str(value), mailbox)

    def mailboxes(self, user=None):
        """Names (as on the wire) of all mailboxes, from LIST "" *."""
        names = []
        with self.imap(user) as c:
            typ, data = c.list('""', "*")
            _ok((typ, data), "LIST")
            for line in data:
                m = re.match(rb'\([^)]*\) (?:"[^"]*"|NIL) (.*)$', line)
                if m:
                    names.append(m.group(1).decode().strip('"'))
        return names


def _ok(result, what):
    """Raises DovecotError unless an imaplib result is OK."""
    typ, data = result
    if typ != "OK":
        raise DovecotError("%s failed: %s %r" % (what, typ, data))
    return data


def _alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
