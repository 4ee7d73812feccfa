"""What crossed the wire between imapcalfs and Dovecot, and ways to disturb it.

- Rawlog reading: Dovecot (rawlog=True) writes every post-login session to
  <id>.in (client -> server) and <id>.out (server -> client), decrypted,
  each line prefixed with a timestamp.  Session() strips the prefixes back
  off, so byte counts are the real IMAP bytes, and parses the commands.
  Sessions of imapcalfs (libetpan: numeric tags) are told apart from the
  harness's own imaplib sessions (tags like "PNAL2").  wait_closed() waits
  for Dovecot's disconnect log line of each session: then its rawlog is
  complete.
- Proxy: a loopback TCP forwarder in front of Dovecot that counts bytes and
  connections and can refuse, stall, slow down or cut connections on
  request (the TLS stream goes through untouched; the certificate names
  127.0.0.1).
- restart_same_ports(): brings a stopped Dovecot back on the ports the
  mount already knows.
- start_untouched(): starts a harness Mount without making any request to
  it (mount.Mount.start resolves the mountpoint with realpath, whose lstat
  is the mount's first FUSE request).
"""

import os
import re
import select
import socket
import subprocess
import threading
import time

from . import dovecot as dvmod
from . import mount

_STAMP = re.compile(rb"(?m)^\d+\.\d+ ")
# A command line: a tag (libetpan: digits; imaplib: four letters, digits), text.
_TAGGED = re.compile(rb"^(\d+|[A-Z]{4}\d+) ([A-Z].*)$")


def strip_stamps(raw):
    """The rawlog bytes without the "<seconds>.<micro> " line prefixes."""
    return _STAMP.sub(b"", raw)


class Command:
    """One client command of a session: its tag, text (first line, without
    literals) and the rawlog timestamp (epoch seconds)."""

    def __init__(self, when, tag, text):
        self.when, self.tag, self.text = when, tag, text

    def __repr__(self):
        return "<%s %s>" % (self.tag, self.text)


class Session:
    """One IMAP session from a rawlog file pair."""

    def __init__(self, base):
        self.base = base
        with open(base + ".in", "rb") as f:
            self.raw_in = f.read()
        try:
            with open(base + ".out", "rb") as f:
                self.raw_out = f.read()
        except FileNotFoundError:
            self.raw_out = b""
        self.data_in = strip_stamps(self.raw_in)
        self.data_out = strip_stamps(self.raw_out)
        self.commands = []
        for m in re.finditer(rb"(?m)^(\d+\.\d+) (.*?)\r?$", self.raw_in):
            tm = _TAGGED.match(m.group(2))
            if tm:
                self.commands.append(Command(float(m.group(1)), tm.group(1).decode(),
                                             tm.group(2).decode(errors="replace")))

    @property
    def is_imapcalfs(self):
        """libetpan numbers its tags; imaplib uses four letters and a number."""
        return bool(self.commands) and self.commands[0].tag.isdigit()

    def bytes_received(self):
        """Bytes the client received after login (server -> client)."""
        return len(self.data_out)

    def find(self, pattern):
        """Commands whose text matches the regex pattern."""
        return [c for c in self.commands if re.search(pattern, c.text, re.I)]

    def fetch_responses(self, item):
        """Untagged FETCH response lines that carry item (e.g. b"BODYSTRUCTURE")."""
        return [line for line in self.data_out.split(b"\r\n")
                if re.match(rb"^\* \d+ FETCH \(", line) and item in line]


class Rawlog:
    """The rawlog directory of one user: sessions and what happened in them."""

    def __init__(self, dv, user=None):
        self.dir = os.path.join(dv.rawlog_dir, user or dv.user)

    def bases(self):
        names = sorted(n[:-3] for n in os.listdir(self.dir) if n.endswith(".in"))
        return [os.path.join(self.dir, n) for n in names]

    def mark(self):
        """What exists now; sessions(since=mark) gives only newer ones."""
        return set(self.bases())

    def sessions(self, since=None, imapcalfs_only=True):
        out = []
        for b in self.bases():
            if since is not None and b in since:
                continue
            s = Session(b)
            if s.is_imapcalfs or not imapcalfs_only:
                out.append(s)
        return out

    def commands(self, since=None):
        return [c for s in self.sessions(since) for c in s.commands]


def parse_uid_set(text):
    """UIDs named by an IMAP sequence set like "1:3,7" (no "*")."""
    uids = set()
    for piece in text.split(","):
        if ":" in piece:
            lo, hi = piece.split(":")
            lo, hi = int(lo), int(hi)
            uids.update(range(min(lo, hi), max(lo, hi) + 1))
        else:
            uids.add(int(piece))
    return uids


_PEEK = re.compile(r"^UID FETCH (\S+) \((.*)\)$", re.I)


def body_peeks(commands):
    """[(uids, [sections])] of every UID FETCH that asks for BODY.PEEK parts."""
    out = []
    for c in commands:
        m = _PEEK.match(c.text)
        if not m or "BODY.PEEK[" not in m.group(2).upper():
            continue
        sections = re.findall(r"BODY\.PEEK\[([^\]]*)\]", m.group(2), re.I)
        out.append((parse_uid_set(m.group(1)), sections))
    return out


def whole_message_fetches(commands):
    """FETCH commands that would download whole messages or bodies: RFC822,
    BODY[] / BODY.PEEK[] / [TEXT] / BINARY[] without a section."""
    bad = re.compile(r"RFC822(?!\.SIZE)|BODY(?:\.PEEK)?\[(?:TEXT)?\]"
                     r"|BINARY(?:\.PEEK)?\[\]", re.I)
    return [c for c in commands
            if re.match(r"(UID )?FETCH ", c.text, re.I) and bad.search(c.text)]


def session_pid(session):
    """Dovecot names rawlog files <date>-<time>.<pid>.<n>."""
    return int(os.path.basename(session.base).split(".")[1])


def wait_closed(dv, sessions, user=None, timeout=20):
    """Waits until Dovecot logged the end of every session (then its rawlog
    is complete) and returns {pid: (in, out)}, the byte counts Dovecot
    itself reports at disconnect.  Raises AssertionError after timeout."""
    user = user or dv.user
    pids = {session_pid(s) for s in sessions}
    pat = re.compile(r"imap\(%s\)<(\d+)><[^>]*>: \w+: .*?\bin=(\d+) out=(\d+)" % re.escape(user))
    deadline = time.monotonic() + timeout
    while True:
        with open(dv.log_path, errors="replace") as f:
            found = {int(m.group(1)): (int(m.group(2)), int(m.group(3)))
                     for m in pat.finditer(f.read())}
        if pids <= set(found):
            return {p: found[p] for p in pids}
        if time.monotonic() > deadline:
            raise AssertionError("sessions %s of %s did not end within %ss"
                                 % (sorted(pids - set(found)), user, timeout))
        time.sleep(0.05)


# ---- a TCP proxy ---------------------------------------------------------

class Proxy:
    """Forwards 127.0.0.1:<port> to the target port, one thread per
    connection.  Modes, switchable at any time:
      "forward"  pass bytes through;
      "refuse"   close new connections at once (a server that is down);
      "stall"    accept but pass nothing, in either direction, on new and
                 existing connections (a server that stopped answering).
    cut_after(n): the next connection that has carried n bytes from the
    server is closed in the middle of the stream (once).
    connect_delay: seconds a new connection waits before it is passed on
    (a slow network: the client's handshake takes that much longer).
    Counts: connections accepted, bytes each way."""

    def __init__(self, target_port, host=dvmod.HOST):
        self.target = (host, target_port)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.mode = "forward"
        self.lock = threading.Lock()
        self.connections = 0
        self.cut_connections = 0
        self.to_client = 0
        self.to_server = 0
        self._cut_at = None
        self.connect_delay = 0.0
        self._stop = False
        self._socks = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def url(self, user, scheme="imaps"):
        return "%s://%s@%s:%d" % (scheme, user, self.target[0], self.port)

    def set_mode(self, mode):
        assert mode in ("forward", "refuse", "stall")
        self.mode = mode

    def cut_after(self, nbytes):
        with self.lock:
            self._cut_at = nbytes

    def _accept_loop(self):
        while not self._stop:
            try:
                r, _, _ = select.select([self.lsock], [], [], 0.2)
                if not r:
                    continue
                client, _ = self.lsock.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        if self.connect_delay:
            time.sleep(self.connect_delay)
        try:
            server = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        with self.lock:
            self._socks += [client, server]
        from_server = 0
        try:
            while not self._stop:
                r, _, _ = select.select([client, server], [], [], 0.2)
                if self.mode == "stall":
                    continue
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is server:
                        with self.lock:
                            cut = self._cut_at
                            if cut is not None and from_server + len(data) >= cut:
                                self._cut_at = None
                                self.cut_connections += 1
                                keep = max(0, cut - from_server)
                                client.sendall(data[:keep])
                                return
                        client.sendall(data)
                        from_server += len(data)
                        with self.lock:
                            self.to_client += len(data)
                    else:
                        server.sendall(data)
                        with self.lock:
                            self.to_server += len(data)
        except OSError:
            return
        finally:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self._stop = True
        self.lsock.close()
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        self._thread.join(timeout=5)


# ---- a server that comes back ---------------------------------------------

def restart_same_ports(dv, timeout=15):
    """Starts a stopped Dovecot instance again with its old configuration,
    so it listens on the ports a running mount already uses."""
    if dv.running():
        raise dvmod.DovecotError("Dovecot is still running")
    errfile = os.path.join(dv.root, "dovecot.restart.stderr")
    with open(errfile, "w+") as err:
        rc = subprocess.run([dvmod.DOVECOT, "-c", dv.conf], stdin=subprocess.DEVNULL,
                            stdout=err, stderr=err, timeout=30).returncode
        err.seek(0)
        if rc != 0:
            raise dvmod.DovecotError("restart failed (%d): %s" % (rc, err.read()))
    deadline = time.monotonic() + timeout
    ports = [p for p in (dv.imap_port, dv.imaps_port) if p]
    while time.monotonic() < deadline:
        if all(dvmod.port_accepts(p) for p in ports):
            return dv
        time.sleep(0.05)
    raise dvmod.DovecotError("Dovecot did not come back on %s:\n%s" % (ports, dv.log_tail()))


# ---- a mount that nobody touches ------------------------------------------------

def _mounted_exactly(path):
    """Like mount.is_mounted, for a path that is already real: no lstat of
    the mountpoint (os.path.realpath would make the first FUSE request)."""
    return any(mp == path for mp, _, _ in mount.mounts())


def start_untouched(m, timeout=None):
    """Starts an unstarted harness Mount and waits until it is live without
    making any request to it, so a test can see what the daemon does of
    its own accord before the first access."""
    with open(m.stderr_path, "wb") as err:
        m.proc = subprocess.Popen(m.argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                  env=m.env, start_new_session=True)
    deadline = time.monotonic() + (timeout or mount.MOUNT_TIMEOUT)
    while time.monotonic() < deadline:
        if _mounted_exactly(m.mountpoint):
            return m
        if m.proc.poll() is not None:
            m.returncode = m.proc.returncode
            raise mount.MountError("imapcalfs exited with status %d before mounting:\n%s"
                                   % (m.returncode, m.stderr()))
        time.sleep(0.05)
    m.stop()
    raise mount.MountError("%s was not mounted after %ss:\n%s"
                           % (m.mountpoint, timeout or mount.MOUNT_TIMEOUT, m.stderr()))
