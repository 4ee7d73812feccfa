"""Load (issue 7): many readers while the mail changes, a big mailbox read
with find | xargs cat, and nginx serving the mount with sendfile.

- 64 concurrent readers (8 processes x 8 threads) read merged.ics and
  random event files for 30 s while invitations are appended and old ones
  expunged (ttl=1): no error, every read parses and is one state the
  mailbox really went through, and the daemon's peak RSS is reported.
- `find MNT -type f | xargs cat` over a 10,000-message mailbox finishes
  with all events present (the time is reported).
- nginx (sendfile on, worker processes as www-data through allow_other)
  under a bounded curl loop while invitations arrive: Content-Length is
  always the length of the body, and the body parses.

Figures go to the table printed at the end of the run.
"""

import datetime
import os
import random
import re
import signal
import subprocess
import threading
import time

import icalendar
import pytest

from harness import dovecot as dvmod
from harness import fs, mount, stress

LOAD = "Calendars.Load"
BASE = datetime.datetime(2026, 5, 4, 8, 0, tzinfo=datetime.timezone.utc)
INITIAL = 40
LOAD_SECONDS = 30
BIG = 10000
# A sanitizer adds shadow memory and a quarantine of freed blocks (256 MB).
RSS_BOUND_KB = (256 + (512 if mount.slow_factor() > 1 else 0)) * 1024

TABLE = "imapcalfs under load"
HEADER = ["scenario", "figures", "result"]


@pytest.fixture(scope="module")
def report(request):
    return stress.Report.get(request.config)


def load_uid(n):
    return "load-%05d@load.example.org" % n


def message(n):
    return stress.calendar_message(load_uid(n), "Load meeting %d" % n,
                                   BASE + datetime.timedelta(hours=n))


def calendars(data):
    return icalendar.Calendar.from_ical(data, multiple=True)


def event_uids(data):
    cals = calendars(data)
    assert len(cals) == 1, "expected one VCALENDAR, got %d" % len(cals)
    return frozenset(str(e["UID"]) for e in cals[0].walk("VEVENT"))


@pytest.fixture(scope="module")
def load_server(dovecot_factory):
    """Dovecot with Calendars.Load (INITIAL invitations) and a plain INBOX
    mail.  Returns (server, {event uid: IMAP uid})."""
    dv = dovecot_factory.start()
    uids = {load_uid(n): dv.add_message(LOAD, message(n)) for n in range(INITIAL)}
    dv.add_message("INBOX", b"From: a@example.org\r\nSubject: hi\r\n\r\nno calendar\r\n")
    return dv, uids


class Mutator:
    """Appends a new invitation every `every` seconds and expunges the
    oldest every second step, on a thread; records every state the
    mailbox goes through (the set of event UIDs after each step)."""

    def __init__(self, dv, uids, first, every=0.5, expunge=True):
        self.dv, self.uids, self.next = dv, dict(uids), first
        self.every, self.expunge = every, expunge
        self.states = [frozenset(self.uids)]
        self.expunged = set()
        self.appended = 0
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        step = 0
        try:
            while not self._stop.wait(self.every):
                step += 1
                ev = load_uid(self.next)
                self.uids[ev] = self.dv.add_message(LOAD, message(self.next))
                self.next += 1
                self.appended += 1
                self.states.append(frozenset(self.uids))
                if self.expunge and step % 2 == 0:
                    oldest = min(self.uids, key=self.uids.get)
                    self.dv.expunge(LOAD, self.uids.pop(oldest))
                    self.expunged.add(oldest)
                    self.states.append(frozenset(self.uids))
        except Exception as e:  # reported by stop()
            self.error = e

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        """Stops the changes (safe to call twice); raises if one failed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)
        assert self.error is None, "changing the mailbox failed: %r" % self.error


class RssWatch:
    """Samples the daemon's VmHWM on a thread (it only grows)."""

    def __init__(self, pid):
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            v = stress.vm_hwm_kb(self.pid)
            if v:
                self.peak = max(self.peak, v)
            if self._stop.wait(0.5):
                return

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        return self.peak


def test_64_readers_while_mail_arrives_and_goes(load_server, mounter, workroot, report):
    dv, uids = load_server
    m = mounter.mount(dv, options=["ttl=1"])
    load_dir = m.path("Calendars", "Load")
    assert event_uids(fs.cat(m.path("merged.ics"))) == frozenset(uids)
    rss = RssWatch(m.proc.pid)
    readers = stress.Readers(workroot, [{"file": m.path("merged.ics")},
                                        {"file": os.path.join(load_dir, "merged.ics")},
                                        {"dir": load_dir}],
                             procs=8, threads=8, grace=60)
    mut = Mutator(dv, uids, INITIAL)
    try:
        readers.start()
        mut.start()
        time.sleep(LOAD_SECONDS)  # the load run itself lasts this long
    finally:
        try:
            mut.stop()
        finally:
            res = readers.stop()
            peak = rss.stop()
    alive = m.proc.poll() is None
    sanitizer = stress.sanitizer_report(m.stderr())

    problems, mismatches = [], 0
    states = set(mut.states)
    for key, s in res["stats"].items():
        if key.endswith("/"):
            errors = s["errors"]
        elif key.endswith("merged.ics"):
            errors = s["errors"]
            for sha in s["hashes"]:
                data = readers.content(sha)
                try:
                    got = event_uids(data)
                except Exception as e:  # noqa: BLE001 - a parse failure is the finding
                    problems.append("%s: a read of %d bytes does not parse: %s"
                                    % (key, len(data), e))
                    continue
                if got not in states:
                    near = min(states, key=lambda st: len(st ^ got))
                    problems.append("%s: a read holds %d events, a set the mailbox never had "
                                    "(nearest state: missing %s, extra %s)" % (
                                        key, len(got), sorted(near - got)[:3],
                                        sorted(got - near)[:3]))
        else:
            uid = os.path.basename(key)[:-len(".ics")]
            errors = dict(s["errors"])
            if uid in mut.expunged:
                errors.pop("ENOENT", None)  # listed, then expunged before the open
            if len(s["hashes"]) > 1:
                problems.append("%s: %d different contents" % (key, len(s["hashes"])))
            for sha in s["hashes"]:
                data = readers.content(sha)
                try:
                    got = event_uids(data)
                except Exception as e:  # noqa: BLE001
                    problems.append("%s: a read does not parse: %s" % (key, e))
                    continue
                if got != {uid}:
                    problems.append("%s: holds events %s" % (key, sorted(got)))
        mismatch = errors.pop("SIZE_MISMATCH", 0) if errors else 0
        mismatches += mismatch
        if errors:
            problems.append("%s: failed reads %s" % (key, errors))
    if res["hung"]:
        problems.append("reads still blocked when the readers stopped: %s" % res["hung"][:5])
    if not alive:
        problems.append("daemon died: %s" % m.stderr()[-3000:])
    if sanitizer:
        problems.append("sanitizer report: %s" % sanitizer)
    if peak > RSS_BOUND_KB:
        problems.append("peak RSS %d MB above %d MB" % (peak // 1024, RSS_BOUND_KB // 1024))
    total = readers.total_reads()
    # Each version of a file is its own inode: an open file's fstat() gives
    # the size of the bytes it reads, always.
    if mismatches:
        problems.append("%d of %d reads whose fstat st_size differs from the bytes read"
                        % (mismatches, total))
    merged_versions = len(readers.hashes(m.path("merged.ics")))
    report.add(TABLE, HEADER, [
        "64 readers, %d s, ttl=1" % LOAD_SECONDS,
        "%d reads (%.0f/s), %d fstat/read mismatches, %d appended, %d expunged, "
        "%d versions of merged.ics, worst latency %.2f s, peak RSS %d MB" % (
            total, total / LOAD_SECONDS, mismatches, mut.appended, len(mut.expunged),
            merged_versions, readers.worst_latency(), peak // 1024),
        "ok" if not problems else "FAIL: %d problems%s" % (
            len(problems), ", st_size != bytes in %d reads" % mismatches if mismatches else "")])
    assert not problems, "\n".join(problems[:20])
    assert total > 64 and merged_versions > 1, "the load did not exercise anything"


@pytest.fixture(scope="module")
def big_server(dovecot_factory):
    """Dovecot with Calendars.Big: BIG invitations written straight into
    the Maildir (fast), indexed by Dovecot at the first EXAMINE."""
    dv = dovecot_factory.start()
    msgs = [stress.calendar_message("big-%05d@big.example.org" % n, "Big %d" % n,
                                    BASE + datetime.timedelta(minutes=n)) for n in range(BIG)]
    stress.maildir_fill(dv, "Calendars.Big", msgs, int(BASE.timestamp()))
    return dv


def test_find_xargs_cat_over_10000_messages(big_server, mounter, tmp_path, report):
    dv = big_server
    m = mounter.mount(dv, options=["mailboxes=Calendars.Big"])
    out = tmp_path / "all.ics"
    limit = 600 * mount.slow_factor()
    start = time.monotonic()
    with open(out, "wb") as f:
        proc = subprocess.run(["bash", "-c", 'find "$1" -type f -print0 | xargs -0 cat', "-",
                               m.mountpoint], stdin=subprocess.DEVNULL, stdout=f,
                              stderr=subprocess.PIPE, timeout=limit)
    took = time.monotonic() - start
    peak = stress.vm_hwm_kb(m.proc.pid) or 0
    data = out.read_bytes()
    text = re.sub(r"\r\n[ \t]", "", data.decode())
    uids = re.findall(r"^UID:(big-\d+@big\.example\.org)\r?$", text, re.M)
    want = {"big-%05d@big.example.org" % n for n in range(BIG)}
    files = [f for f in fs.find(m.mountpoint, kind="f") if not f.endswith("merged.ics")]
    ok = proc.returncode == 0 and set(uids) == want and len(uids) == 3 * BIG
    report.add(TABLE, HEADER, [
        "find | xargs cat, %d messages" % BIG,
        "%.1f s, %d event files, %d MB read, peak RSS %d MB" % (
            took, len(files), len(data) >> 20, peak // 1024),
        "ok" if ok else "FAIL"])
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert len(files) == BIG, "%d event files for %d events" % (len(files), BIG)
    assert set(uids) == want, "%d of %d events missing" % (len(want - set(uids)), BIG)
    # Each event twice: in its own file and in the mailbox's merged.ics; the
    # root's merged.ics holds them all a third time.
    assert len(uids) == 3 * BIG, "%d UID lines for %d events" % (len(uids), BIG)


NGINX_CONF = """
daemon off;
master_process on;
user www-data;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    sendfile on;
    tcp_nopush on;
    access_log off;
    default_type text/calendar;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path):
    """Starts nginx on a free port serving root (set by the test through
    the returned function); stops it at teardown."""
    procs = []

    def start(root):
        port = dvmod.free_port()
        d = tmp_path / "nginx"
        d.mkdir()
        conf = d / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=d, port=port, root=root))
        err = open(d / "stderr", "wb")
        proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(d)],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                start_new_session=True)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while not dvmod.port_accepts(port):
            assert proc.poll() is None, (d / "stderr").read_text()
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.05)
        return port, d

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


def test_nginx_sendfile_content_length_matches_body(load_server, mounter, nginx, tmp_path,
                                                    report):
    dv, uids = load_server
    m = mounter.mount(dv, options=["ttl=1", "allow_other"])
    port, ndir = nginx(m.mountpoint)
    names = [n for n in fs.ls(m.path("Calendars", "Load")) if n != "merged.ics"]
    assert names
    mut = Mutator(dv, {}, 100000, every=0.7, expunge=False)
    body, hdr = tmp_path / "body", tmp_path / "headers"
    problems, n, sizes = [], 0, set()
    rng = random.Random(7)
    mut.start()
    start = time.monotonic()
    try:
        while n < 300 and time.monotonic() - start < 60:
            path = rng.choice(["merged.ics", "Calendars/Load/merged.ics",
                               "Calendars/Load/" + rng.choice(names)])
            n += 1
            proc = subprocess.run(["curl", "-sS", "--max-time", "30", "-o", str(body), "-D",
                                   str(hdr), "-w", "%{http_code} %{size_download}",
                                   "http://127.0.0.1:%d/%s" % (port, path)],
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            got = body.read_bytes() if body.exists() else b""
            headers = hdr.read_text(errors="replace") if hdr.exists() else ""
            cl = re.search(r"^Content-Length: (\d+)", headers, re.M | re.I)
            what = "%s: curl %d %s" % (path, proc.returncode, proc.stdout.decode())
            if proc.returncode != 0 or not proc.stdout.startswith(b"200 "):
                problems.append("%s %s" % (what, proc.stderr.decode(errors="replace").strip()))
                continue
            if cl is None or int(cl.group(1)) != len(got):
                problems.append("%s: Content-Length %s, body %d bytes" % (
                    what, cl.group(1) if cl else None, len(got)))
                continue
            try:
                event_uids(got)
            except Exception as e:  # noqa: BLE001
                problems.append("%s: body does not parse (%s): %r ... %r" % (
                    what, str(e).split("\n")[0], got[:80], got[-80:]))
            if path == "merged.ics":
                sizes.add(len(got))
    finally:
        mut.stop()
    err_log = (ndir / "error.log").read_text(errors="replace")
    report.add(TABLE, HEADER, [
        "nginx sendfile, allow_other",
        "%d requests, %d appended, %d sizes of merged.ics" % (n, mut.appended, len(sizes)),
        "ok" if not problems else "FAIL: %d bad responses of %d (%d bodies do not parse)" % (
            len(problems), n, sum("does not parse" in p for p in problems))])
    # Every response, including those that straddle a sync.
    assert not problems, "\n".join(problems[:20]) + "\nnginx error.log:\n" + err_log[-2000:]
    assert len(sizes) > 1, "merged.ics never changed during the loop"
    assert m.proc.poll() is None


_STAT_THEN_READ = r"""
import os, sys
path = sys.argv[1]
os.stat(path)              # the kernel now holds this file's attributes (attr_timeout)
sys.stdout.write("statted\n")
sys.stdout.flush()
sys.stdin.readline()       # meanwhile: a new message, and .refresh
with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    data = f.read()
sys.stdout.write("%d %d\n" % (size, len(data)))
"""


def test_open_file_size_matches_its_bytes_after_change(dovecot_factory, mounter):
    """What the 64-reader run and nginx stumble on, made deterministic: a
    file's st_size was looked at, the mailbox changes (.refresh syncs it),
    then the file is opened: fstat of the open file must give the length of
    the bytes it reads (SPEC §2: st_size is always exact; web servers send
    st_size bytes)."""
    dv = dovecot_factory.start()
    dv.add_message(LOAD, message(0))
    m = mounter.mount(dv)
    results = []
    for i, rel in enumerate(["Calendars/Load/merged.ics", "merged.ics"] * 2):
        fs.cat(m.path(rel))
        child = subprocess.Popen([stress.PYTHON, "-I", "-c", _STAT_THEN_READ, m.path(rel)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"statted\n", child.stderr.read()
            dv.add_message(LOAD, message(1 + i))
            fs.cat(m.path("Calendars", "Load", ".refresh"))
            out, err = child.communicate(b"\n", timeout=mount.ACCESS_TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(30)
        size, got = (int(x) for x in out.split())
        results.append((rel, size, got))
    wrong = [r for r in results if r[1] != r[2]]
    assert not wrong, "fstat size != bytes read (path, st_size, bytes): %s" % wrong
