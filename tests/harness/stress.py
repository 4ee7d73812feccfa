"""Tools of the robustness tests (faults, load, shutdown).

- Readers: reader processes that read files of a mount in a loop from many
  threads, time every access and record what they read (a SHA-256 per
  read, each distinct content saved once; an fstat size that differs from
  the bytes read counts as error SIZE_MISMATCH), so that the test can check that
  every read was one whole published version and that no reader was
  blocked.  A reader that hangs cannot hang the test: the processes are
  killed at a deadline and report what was still in flight.
- calendar_message / maildir_fill: test mail made here, and a fast way to
  put thousands of messages into a Dovecot Maildir.
- vm_hwm / cache_problems / sanitizer_report: what the tests check on the
  daemon afterwards.
- Report: tables of measurements printed in pytest's terminal summary (so
  they show in CI logs without -s).
"""

import datetime
import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import tempfile
import time

PYTHON = "/usr/bin/python3"

# ---------------------------------------------------------------- readers

_READER = r"""
import errno, hashlib, json, os, random, sys, threading, time
cfg = json.loads(sys.argv[1])
out_dir, stop_file = cfg["out_dir"], cfg["stop_file"]
rng = random.Random(cfg["seed"])
lock = threading.Lock()
stats = {}          # key -> {"n", "errors": {}, "hashes": {}, "max": s, "sum": s}
inflight = {}       # thread index -> (key, start)
worst = []          # (latency, key, start offset)
t_start = time.monotonic()
saved = set()

def note(key, start, result, data=None):
    lat = time.monotonic() - start
    with lock:
        s = stats.setdefault(key, {"n": 0, "errors": {}, "hashes": {}, "max": 0.0, "sum": 0.0})
        s["n"] += 1
        s["sum"] += lat
        if lat > s["max"]:
            s["max"] = lat
        if result != "OK":
            s["errors"][result] = s["errors"].get(result, 0) + 1
        elif data is not None:
            h = hashlib.sha256(data).hexdigest()
            s["hashes"][h] = s["hashes"].get(h, 0) + 1
            if h not in saved:
                saved.add(h)
                with open(os.path.join(out_dir, h), "wb") as f:
                    f.write(data)
        worst.append((lat, key, start - t_start))
        worst.sort(reverse=True)
        del worst[5:]

def access(i, key, fn, keep=True):
    start = time.monotonic()
    with lock:
        inflight[i] = (key, start)
    try:
        data = fn()
        note(key, start, "OK", data if keep else None)
        return data
    except SizeMismatch:
        note(key, start, "SIZE_MISMATCH")
        return None
    except OSError as e:
        note(key, start, errno.errorcode.get(e.errno, str(e.errno)))
        return None
    finally:
        with lock:
            inflight.pop(i, None)

class SizeMismatch(OSError):
    pass

def read(path):
    # st_size must be exact (web servers send st_size bytes): fstat of the
    # open file has to agree with the bytes read from it.
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read()
    if size != len(data):
        raise SizeMismatch(errno.EIO, "fstat says %d bytes, read %d" % (size, len(data)))
    return data

def worker(i):
    r = random.Random(cfg["seed"] * 1000 + i)
    targets = cfg["targets"]
    while not os.path.exists(stop_file) and time.monotonic() - t_start < cfg["max_seconds"]:
        t = targets[r.randrange(len(targets))]
        if "file" in t:
            access(i, t["file"], lambda: read(t["file"]))
        else:
            names = access(i, t["dir"] + "/", lambda: os.listdir(t["dir"]), keep=False)
            if names is None:
                continue
            files = [n for n in names if n.endswith(".ics") and n != "merged.ics"]
            if files:
                p = os.path.join(t["dir"], r.choice(files))
                access(i, p, lambda: read(p))
        if cfg.get("pause"):
            time.sleep(cfg["pause"])

threads = [threading.Thread(target=worker, args=(i,), daemon=True)
           for i in range(cfg["threads"])]
for t in threads:
    t.start()
print("started", flush=True)
while any(t.is_alive() for t in threads):
    if os.path.exists(stop_file) or time.monotonic() - t_start >= cfg["max_seconds"]:
        break
    time.sleep(0.05)
grace_end = time.monotonic() + cfg["grace"]
for t in threads:
    t.join(max(0.0, grace_end - time.monotonic()))
now = time.monotonic()
with lock:
    hung = [(k, now - s) for k, s in inflight.values()]
    res = {"stats": stats, "worst": worst, "hung": hung}
sys.stdout.write(json.dumps(res) + "\n")
sys.stdout.flush()
os._exit(0)
"""


class Readers:
    """Reader processes over a mount.

    targets: list of {"file": path} (read it) or {"dir": path} (list it and
    read one random event file in it).  procs x threads readers in all.
    After stop(), result() holds per-path counts, errors, distinct contents
    (content(sha) gives the bytes), latencies, and reads still in flight
    (hung) when the readers were told to stop plus `grace` seconds."""

    def __init__(self, workdir, targets, procs=1, threads=4, grace=30.0, max_seconds=600,
                 pause=0.0, seed=1):
        self.dir = tempfile.mkdtemp(prefix="readers-", dir=workdir)
        self.out_dir = os.path.join(self.dir, "contents")
        os.makedirs(self.out_dir)
        self.stop_file = os.path.join(self.dir, "stop")
        self.targets, self.nprocs, self.nthreads = targets, procs, threads
        self.grace, self.max_seconds, self.pause, self.seed = grace, max_seconds, pause, seed
        self.procs = []
        self._result = None
        self.started_at = None

    def start(self):
        for p in range(self.nprocs):
            cfg = {"targets": self.targets, "threads": self.nthreads, "out_dir": self.out_dir,
                   "stop_file": self.stop_file, "max_seconds": self.max_seconds,
                   "grace": self.grace, "pause": self.pause, "seed": self.seed * 100 + p}
            proc = subprocess.Popen([PYTHON, "-I", "-c", _READER, json.dumps(cfg)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
            self.procs.append(proc)
        for proc in self.procs:
            line = proc.stdout.readline()
            if line.strip() != b"started":
                self.stop()
                raise RuntimeError("reader process failed to start: %r %r"
                                   % (line, proc.stderr.read()))
        self.started_at = time.monotonic()
        return self

    def stop(self):
        """Tells the readers to stop and collects their results; a process
        that does not answer within grace + 30 s is killed (and its reads
        count as hung)."""
        if self._result is not None:
            return self._result
        open(self.stop_file, "w").close()
        merged = {"stats": {}, "worst": [], "hung": [], "killed": 0}
        for proc in self.procs:
            try:
                out, err = proc.communicate(timeout=self.grace + 30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate(timeout=30)
                merged["killed"] += 1
            lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
            if not lines:
                merged["hung"].append(("reader process output missing: %s" % err[-2000:], 0))
                continue
            res = json.loads(lines[-1])
            for key, s in res["stats"].items():
                m = merged["stats"].setdefault(key, {"n": 0, "errors": {}, "hashes": {},
                                                     "max": 0.0, "sum": 0.0})
                m["n"] += s["n"]
                m["sum"] += s["sum"]
                m["max"] = max(m["max"], s["max"])
                for k, v in s["errors"].items():
                    m["errors"][k] = m["errors"].get(k, 0) + v
                for k, v in s["hashes"].items():
                    m["hashes"][k] = m["hashes"].get(k, 0) + v
            merged["worst"] += [tuple(w) for w in res["worst"]]
            merged["hung"] += [tuple(h) for h in res["hung"]]
        merged["worst"].sort(reverse=True)
        self._result = merged
        return merged

    def kill(self):
        """Kills the reader processes at once (for teardown after a failure)."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.communicate(timeout=30)

    @property
    def result(self):
        """What stop() collected (None before)."""
        return self._result

    def content(self, sha):
        with open(os.path.join(self.out_dir, sha), "rb") as f:
            return f.read()

    # ----- summaries -----

    def total_reads(self):
        return sum(s["n"] for s in self._result["stats"].values())

    def worst_latency(self):
        lat = max([s["max"] for s in self._result["stats"].values()] or [0.0])
        hung = max([h[1] for h in self._result["hung"]] or [0.0])
        return max(lat, hung)

    def errors(self):
        """{path: {errno name: count}} of failed accesses."""
        return {k: s["errors"] for k, s in self._result["stats"].items() if s["errors"]}

    def hashes(self, key):
        s = self._result["stats"].get(key)
        return dict(s["hashes"]) if s else {}


# ---------------------------------------------------------------- mail

def ics_utc(dt):
    return dt.strftime("%Y%m%dT%H%M%SZ")


def calendar_message(uid, summary, start, sequence=0, method="REQUEST",
                     sender="organizer@example.org"):
    """A small invitation (multipart/alternative: text + text/calendar),
    as a mail client sends it; bytes with CRLF line ends."""
    end = start + datetime.timedelta(hours=1)
    ics = "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//imapcalfs tests//stress//EN",
        "METHOD:" + method, "BEGIN:VEVENT", "UID:" + uid, "SEQUENCE:%d" % sequence,
        "DTSTAMP:" + ics_utc(start - datetime.timedelta(days=7)),
        "DTSTART:" + ics_utc(start), "DTEND:" + ics_utc(end), "SUMMARY:" + summary,
        "ORGANIZER:mailto:" + sender, "END:VEVENT", "END:VCALENDAR", ""])
    boundary = "b-" + hashlib.sha1(uid.encode()).hexdigest()[:16]
    msg = "\r\n".join([
        "From: Organizer <%s>" % sender, "To: alice@example.org",
        "Subject: Invitation: " + summary,
        "Date: " + start.strftime("%a, %d %b %Y %H:%M:%S +0000"),
        "Message-ID: <%s>" % uid, "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="%s"' % boundary, "",
        "--" + boundary, "Content-Type: text/plain; charset=utf-8", "",
        "You are invited: " + summary, "",
        "--" + boundary, 'Content-Type: text/calendar; charset=utf-8; method=' + method,
        "Content-Transfer-Encoding: 7bit", "", ics,
        "--" + boundary + "--", ""])
    return msg.encode()


def maildir_fill(dv, mailbox, messages, mtime):
    """Writes messages (bytes) straight into mailbox's Maildir++ folder of
    Dovecot instance dv (its `new/`), owned by the mail user, with the given
    mtime (Dovecot's INTERNALDATE for Maildir).  Dovecot indexes them when
    the mailbox is next opened.  The mailbox is created over IMAP first so
    that Dovecot made the folder and its permissions itself."""
    dv.create_mailbox(mailbox)
    folder = os.path.join(dv.mail_dir, dv.user, "." + mailbox)
    new = os.path.join(folder, "new")
    if not os.path.isdir(new):
        raise RuntimeError("no Maildir folder at %s" % folder)
    st = os.stat(new)
    for i, raw in enumerate(messages):
        name = "%d.M%dP%d.stress,S=%d" % (mtime, i, os.getpid(), len(raw))
        tmp = os.path.join(folder, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(raw)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, 0o600)
        os.utime(tmp, (mtime, mtime))
        os.rename(tmp, os.path.join(new, name))
    return folder


# ---------------------------------------------------------------- daemon checks

def vm_hwm_kb(pid):
    """Peak resident set size (VmHWM, kB) of a live process, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


SANITIZER_RE = re.compile(r"(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:"
                          r"|WARNING: ThreadSanitizer|AddressSanitizer:DEADLYSIGNAL)")


def sanitizer_report(stderr_text):
    """The first sanitizer report line in a daemon's stderr, or None."""
    m = SANITIZER_RE.search(stderr_text)
    if not m:
        return None
    start = stderr_text.rfind("\n", 0, m.start()) + 1
    return stderr_text[start:start + 2000]


CACHE_MAGIC_PREFIX = b"ICFS"  # ICFSLST2 listings, ICFSPAK1 packs, ICFSPRT1 parts
CACHE_HEADER = 8 + 8 + 32


def cache_problems(cache_root):
    """Checks every file under cache_root as a cache entry (src/cache.c,
    src/cache_pack.c: 8-byte magic "ICFS....", u64 payload length in host
    order, SHA-256 of the payload, the payload).  Returns (number of
    entries, [problems]); leftover temporary files (*.tmp.*) are problems
    too."""
    problems, n = [], 0
    for d, _, files in os.walk(cache_root):
        for name in files:
            path = os.path.join(d, name)
            if ".tmp." in name:
                problems.append("partial entry left behind: " + path)
                continue
            with open(path, "rb") as f:
                data = f.read()
            n += 1
            if len(data) < CACHE_HEADER:
                problems.append("%s: %d bytes, shorter than a header" % (path, len(data)))
                continue
            magic, length = data[:8], struct.unpack("=Q", data[8:16])[0]
            digest, payload = data[16:48], data[48:]
            if not magic.startswith(CACHE_MAGIC_PREFIX):
                problems.append("%s: bad magic %r" % (path, magic))
            elif length != len(payload):
                problems.append("%s: header says %d bytes, payload has %d"
                                % (path, length, len(payload)))
            elif hashlib.sha256(payload).digest() != digest:
                problems.append("%s: checksum mismatch" % path)
    return n, problems


# ---------------------------------------------------------------- report

class Report:
    """Tables printed at the end of the run (pytest_terminal_summary).

    One instance per pytest session, registered as a plugin by the first
    test module that asks for it; modules add rows to named sections."""

    NAME = "imapcalfs-stress-report"

    def __init__(self):
        self.sections = {}  # title -> (header, rows)

    @classmethod
    def get(cls, config):
        plugin = config.pluginmanager.get_plugin(cls.NAME)
        if plugin is None:
            plugin = cls()
            config.pluginmanager.register(plugin, cls.NAME)
        return plugin

    def add(self, title, header, row):
        self.sections.setdefault(title, (header, []))[1].append([str(c) for c in row])

    def pytest_terminal_summary(self, terminalreporter):
        for title, (header, rows) in self.sections.items():
            terminalreporter.write_sep("-", title)
            widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
                      for i in range(len(header))]
            fmt = "  ".join("%%-%ds" % w for w in widths)
            terminalreporter.write_line(fmt % tuple(header))
            for r in rows:
                terminalreporter.write_line(fmt % tuple(r))
