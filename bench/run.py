#!/usr/bin/python3
"""imapcalfs benchmark (issue 8): `make bench`, or bench/run.py [options].

For each size (messages in the account) it starts a private Dovecot (the
test harness's), fills it with generated mail (bench/mailgen.py, fixed
seed) written straight into its Maildir, and then, repetition after
repetition, measures:

  floor      bench/floor_client.py: one connection, BODYSTRUCTURE of all,
             pipelined BODY.PEEK of the calendar parts, bytes discarded
  cold       imapcalfs: mount (empty cache), cat MNT/merged.ics
  warm       the same cat again on the same mount (and, to compare, cat of
             the same bytes from tmpfs)
  remount    unmount, mount again on the same cache (ttl=1), cat
  incr       append 1% new messages and expunge 1% on the server, wait
             until the listing is older than ttl=1, cat (the cat syncs)
  ls         imapcalfs: mount (empty cache), ls -l MNT/INBOX; the floor
             and the 2007 algorithm do the same mailbox alone
  2007       bench/baseline_2007.py: FETCH RFC822 per message, walk, copy
             VEVENTs

Bytes from the server are Dovecot's own counts: the `out=` of each
session's logout line (exact, per session), and for phases that share one
imapcalfs session (remount and incr) the per-command statistics, which are
exact for a client that does not pipeline (the sum is checked against the
logout lines).  Peak RSS: VmHWM of the daemon, ru_maxrss of the Python
clients.  Medians over the repetitions; the table and the machine go to
bench/RESULTS.md.  See bench/README.md.
"""

import argparse
import datetime
import difflib
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import mailgen  # noqa: E402
import server  # noqa: E402
from harness import certs, mount  # noqa: E402

PY = "/usr/bin/python3"
LS_MAILBOX = "INBOX"
NOTES_MARK = "<!-- notes: everything below this line is kept when run.py rewrites the file -->"
MiB = 1024 * 1024


class BenchError(RuntimeError):
    pass


# ----- small helpers ---------------------------------------------------------

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def proc_status(pid, key):
    """A kB value from /proc/PID/status (VmHWM, VmRSS)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def proc_cpu(pid):
    """utime + stime of a process, seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(argv, timeout, stdout=subprocess.DEVNULL):
    """Runs argv; returns its wall time.  Raises BenchError on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=stdout,
                          stderr=subprocess.PIPE, timeout=timeout)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError("%s failed (%d): %s" % (" ".join(argv), proc.returncode,
                                                  proc.stderr.decode(errors="replace")))
    return dt


def run_measured(argv, env, timeout, workdir):
    """Runs a client script; returns (its JSON output, rusage)."""
    out_path = os.path.join(workdir, "client.out")
    err_path = os.path.join(workdir, "client.err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise BenchError("%s timed out after %ss" % (argv[1], timeout))
        time.sleep(0.01)
    if proc.returncode != 0:
        with open(err_path, errors="replace") as f:
            raise BenchError("%s failed (%d): %s" % (argv[1], proc.returncode, f.read()[-3000:]))
    with open(out_path) as f:
        return json.loads(f.read()), ru


def sha_and_size(path, timeout):
    """Hash and size of a file on the mount, read by a subprocess (cat)."""
    proc = subprocess.run(["cat", path], stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise BenchError("cat %s: %s" % (path, proc.stderr.decode(errors="replace")))
    return hashlib.sha256(proc.stdout).hexdigest(), len(proc.stdout), proc.stdout


def event_uids(data):
    """The distinct UIDs of the VEVENTs of an iCalendar text."""
    text = re.sub(rb"\r?\n[ \t]", b"", data)
    uids = set()
    for block in re.findall(rb"BEGIN:VEVENT\r?\n(.*?)END:VEVENT", text, re.S):
        m = re.search(rb"^UID:(.*?)\r?$", block, re.M)
        if m:
            uids.add(m.group(1).decode(errors="replace"))
    return uids


def ics_difference(a, b, limit=12):
    """A short account of how iCalendar text a differs from b: the UIDs
    only in one of them, and the first differing unfolded lines of the
    events both have."""
    def events(data):
        text = re.sub(rb"\r?\n[ \t]", b"", data).decode(errors="replace")
        evs = {}
        for block in re.findall(r"BEGIN:VEVENT\r?\n(.*?)END:VEVENT", text, re.S):
            m = re.search(r"^UID:(.*?)\r?$", block, re.M)
            rid = re.search(r"^RECURRENCE-ID[^:]*:(.*?)\r?$", block, re.M)
            key = (m.group(1) if m else "?", rid.group(1) if rid else "")
            evs.setdefault(key, []).append(block.replace("\r", "").splitlines())
        return evs
    ea, eb = events(a), events(b)
    lines = ["%d vs %d bytes, %d vs %d VEVENTs" % (len(a), len(b), sum(map(len, ea.values())),
                                                    sum(map(len, eb.values())))]
    only_a, only_b = sorted(set(ea) - set(eb)), sorted(set(eb) - set(ea))
    if only_a:
        lines.append("only after the incremental sync: %s" % only_a[:5])
    if only_b:
        lines.append("only on the cold mount: %s" % only_b[:5])
    for key in sorted(set(ea) & set(eb)):
        if ea[key] != eb[key] and len(lines) < limit:
            la = [x for v in ea[key] for x in v]
            lb = [x for v in eb[key] for x in v]
            diff = [d for d in difflib.unified_diff(lb, la, "cold", "incremental", n=0,
                                                    lineterm="") if d[:1] in "+-"][2:8]
            lines.append("%s differs: %s" % (key, " | ".join(diff)))
    return lines


class DovecotLog:
    """Per-session totals from Dovecot's log.

    Each IMAP session logs in ("imap-login: Info: Login: user=<...>, ...,
    mpid=PID, ..., session=<ID>") and, when it ends, its imap process logs
    one line with its counts ("imap(user)<PID><ID>: Info: Disconnected: ...
    in=N out=N ... body_count=N body_bytes=N"): after LOGOUT ("Logged out")
    or when the client closed the connection ("Connection closed", which is
    how the daemon drops a broken session before it reconnects).  A session
    whose imap process died (killed, crashed) logs no counts, only the
    master's "imap(user)<PID><ID>: Fatal: master: service(imap): child PID
    killed with signal 9": what it sent is lost to this log, and the daemon
    goes on with a new session.  Sessions are matched by ID: a phase waits
    until each session that logged in during it has ended (with its counts,
    or known dead) and raises BenchError when one does not, and the end of
    a session that began before the phase is never taken for one of its
    own.  (Counting ends until there were as many as logins, as before,
    summed a dead session as nothing, silently, after a 20 s wait.)"""

    LOGIN = re.compile(r"imap-login: Info: Login: user=<[^\n]*?\bmpid=(\d+)\b[^\n]*?"
                       r"\bsession=<([^>\n]+)>")
    END = re.compile(r"imap\([^)\n]*\)<\d+><([^>\n]+)>: Info: Disconnected(:? [^\n]*?)?"
                     r" in=(\d+) out=(\d+)[^\n]*? body_count=(\d+) body_bytes=(\d+)")
    DIED = re.compile(r"imap\([^)\n]*\)<\d+><([^>\n]+)>: (?:Fatal|Panic): ")
    CHILD = re.compile(r"service\(imap\): child (\d+) (?:killed|returned error)")

    def __init__(self, path):
        self.path = path

    def offset(self):
        return os.path.getsize(self.path)

    def read(self, since):
        with open(self.path, errors="replace") as f:
            f.seek(since)
            return f.read()

    @classmethod
    def parse(cls, text, exclude=None):
        """The sessions that logged in within text, in order of login:
        [{"id", "login" (offset in text), "counts" ((in, out, body_count,
        body_bytes) or None), "closed" (ended without LOGOUT), "died"}].
        Logins at offsets exclude=(a, b) are left out (the benchmark's own
        sessions)."""
        sessions, by_id, by_pid = [], {}, {}
        for m in cls.LOGIN.finditer(text):
            if exclude and exclude[0] <= m.start() < exclude[1]:
                continue
            s = {"id": m.group(2), "pid": int(m.group(1)), "login": m.start(), "counts": None,
                 "closed": False, "died": False}
            sessions.append(s)
            by_id[s["id"]] = s
            by_pid[s["pid"]] = s  # a later session of the same process wins
        for m in cls.END.finditer(text):
            s = by_id.get(m.group(1))
            if s and s["counts"] is None:
                s["counts"] = tuple(int(x) for x in m.groups()[2:])
                s["closed"] = "Logged out" not in (m.group(2) or "")
        for m in cls.DIED.finditer(text):
            s = by_id.get(m.group(1))
            if s and s["counts"] is None:
                s["died"] = True
        for m in cls.CHILD.finditer(text):
            s = by_pid.get(int(m.group(1)))
            if s and s["counts"] is None and s["login"] < m.start():
                s["died"] = True
        return sessions

    def sessions(self, since, exclude=None, until=None, timeout=30):
        """The sessions that logged in after offset `since` (and before
        `until`, when given; see parse: exclude is in file offsets here),
        once every one of them has ended."""
        deadline = time.monotonic() + timeout
        while True:
            ex = exclude and (exclude[0] - since, exclude[1] - since)
            found = self.parse(self.read(since), ex)
            if until is not None:
                found = [s for s in found if s["login"] < until - since]
            open_ = [s["id"] for s in found if s["counts"] is None and not s["died"]]
            if not open_:
                return found
            if time.monotonic() > deadline:
                raise BenchError("Dovecot logged no end of session %s within %d s"
                                 % (", ".join(open_), timeout))
            time.sleep(0.05)

    def totals(self, since, exclude=None):
        """Sums over the sessions since `since`: sessions, out, body_count,
        body_bytes; lost: sessions that died without their counts (the
        sums are then short of what the server sent); closed: sessions
        the client ended without LOGOUT."""
        s = self.sessions(since, exclude)
        c = [x["counts"] for x in s if x["counts"]]
        return {"sessions": len(s), "out": sum(x[1] for x in c),
                "body_count": sum(x[2] for x in c), "body_bytes": sum(x[3] for x in c),
                "lost": sum(1 for x in s if x["died"] and not x["counts"]),
                "closed": sum(1 for x in s if x["closed"])}


class TimedMount(mount.Mount):
    """A harness mount that notices the mount within a millisecond."""

    def start(self, timeout=None):
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, env=self.env, start_new_session=True)
        deadline = time.monotonic() + (timeout or 60)
        while time.monotonic() < deadline:
            if mount.is_mounted(self.mountpoint):
                return self
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise BenchError("imapcalfs exited %d before mounting:\n%s"
                                 % (self.returncode, self.stderr()))
            time.sleep(0.001)
        self.stop()
        raise BenchError("imapcalfs did not mount:\n" + self.stderr())


# ----- the benchmark ---------------------------------------------------------

class Run:
    """One size: a Dovecot, its mail, the repetitions."""

    def __init__(self, args, size, pki, workdir):
        self.a = args
        self.size = size
        self.pki = pki
        self.dir = os.path.join(workdir, "n%d" % size)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.dv = server.BenchDovecot(os.path.join(self.dir, "dovecot"), pki.server.cert,
                                      pki.server.key, pki.ca_file)
        self.log = None
        self.gen = mailgen.MailGenerator(args.seed)
        self.rng = random.Random("expunge:%d:%d" % (args.seed, size))
        self.mounts = []
        self.tmpfs = tempfile.mkdtemp(prefix="imapcalfs-bench-", dir="/dev/shm")
        self.reps = []
        self.info = {"size": size}
        self.timeout = args.timeout

    # --- setup ---

    def setup(self):
        self.dv.start()
        self.log = DovecotLog(self.dv.log_path)
        t0 = time.perf_counter()
        plans = self.gen.plan(self.size)
        count, nbytes = self.dv.fill(self.gen, plans)
        self.info["fill_s"] = time.perf_counter() - t0
        self.info["messages"] = count
        self.info["bytes"] = nbytes
        self.info["mail"] = mailgen.summary(plans)
        self.info["expected_uids"] = len(mailgen.expected_uids(plans))
        self.expected = set(mailgen.expected_uids(plans))
        self.mailboxes = [name for name, _ in mailgen.MAILBOXES]
        self.info["per_mailbox"] = self.dv.message_counts(self.mailboxes)
        # Let Dovecot parse every message once (its cache then holds the
        # structures) and the page cache hold the files, for every client alike.
        t0 = time.perf_counter()
        self.floor()
        self.info["prime_s"] = time.perf_counter() - t0
        self.dv.take_stats()

    def close(self):
        for m in self.mounts:
            m.stop()
        self.mounts = []
        self.dv.stop()
        shutil.rmtree(self.tmpfs, ignore_errors=True)

    # --- clients ---

    def client_env(self):
        env = dict(os.environ)
        env["IMAPCALFS_PASSWORD"] = self.dv.password
        return env

    def client(self, script, mailboxes=(), extra=()):
        argv = [PY, os.path.join(HERE, script), "--port", str(self.dv.imaps_port),
                "--user", self.dv.user, "--cafile", self.pki.ca_file]
        for mb in mailboxes:
            argv += ["--mailbox", mb]
        argv += list(extra)
        since = self.log.offset()
        out, ru = run_measured(argv, self.client_env(), self.timeout, self.dir)
        tot = self.log.totals(since)
        if tot["lost"]:
            raise BenchError("%s: Dovecot's imap process died during the run (%d session(s) "
                             "without their counts)" % (script, tot["lost"]))
        out["bytes"] = tot["out"]
        out["body_count"] = tot["body_count"]
        out["rss_kb"] = ru.ru_maxrss
        out["cpu_s"] = ru.ru_utime + ru.ru_stime
        self.dv.take_stats()
        return out

    def floor(self, mailboxes=()):
        return self.client("floor_client.py", mailboxes)

    def baseline(self, mailboxes=()):
        return self.client("baseline_2007.py", mailboxes,
                           ["-o", os.path.join(self.dir, "baseline.ics")])

    # --- imapcalfs ---

    def mount(self, cache, ttl):
        opts = ["cafile=" + self.pki.ca_file, "cache_dir=" + cache, "ttl=%d" % ttl]
        opts += [o for o in self.a.daemon_opts.split(",") if o]
        work = tempfile.mkdtemp(prefix="m-", dir=self.dir)
        m = TimedMount(self.dv.url("imaps"), work, opts, password=self.dv.password,
                       mountpoint=os.path.join(self.dir, "mnt"))
        self.mounts.append(m)
        return m

    def unmount(self, m):
        rc = m.stop()
        self.mounts.remove(m)
        if rc != 0:
            raise BenchError("imapcalfs exited with status %s:\n%s" % (rc, m.stderr()[-3000:]))

    def cat(self, path):
        return timed(["cat", path], self.timeout)

    def snapshot(self, m, name):
        """Hash, size and UIDs of MNT/merged.ics; keeps a copy on tmpfs."""
        digest, size, data = sha_and_size(m.path("merged.ics"), self.timeout)
        copy = os.path.join(self.tmpfs, name)
        with open(copy, "wb") as f:
            f.write(data)
        return digest, size, data, copy

    def rep(self, r):
        res = {}
        # The floor: every mailbox.
        fl = self.floor()
        res.update({"floor_s": fl["wall"], "floor_bytes": fl["bytes"], "floor_rss_kb": fl["rss_kb"],
                    "floor_cpu_s": fl["cpu_s"], "floor_parts": fl["parts"],
                    "floor_messages": fl["messages"]})

        # imapcalfs cold, then warm on the same mount.
        cache = tempfile.mkdtemp(prefix="cache-", dir=self.dir)
        since = self.log.offset()
        m = self.mount(cache, ttl=3600)
        t0 = time.perf_counter()
        m.start()
        t_mounted = time.perf_counter()
        self.cat(m.path("merged.ics"))
        t1 = time.perf_counter()
        pid = m.proc.pid
        res["cold_s"] = t1 - t0
        res["cold_mount_s"] = t_mounted - t0
        res["cold_rss_kb"] = proc_status(pid, "VmHWM")
        res["cold_cpu_s"] = proc_cpu(pid)
        cold_stats = self.dv.take_stats()
        res["cold_cmds"] = cold_stats.by_command()
        res["cold_stats_bytes"] = cold_stats.bytes_out
        res["cold_body_cmds"] = cold_stats.body_commands
        digest, size, data, copy = self.snapshot(m, "merged-%d.ics" % r)
        res["merged_bytes"] = size
        res["cold_sha"] = digest
        if r == 0:
            got = event_uids(data)
            res["uids"] = len(got)
            res["uids_missing"] = sorted(self.expected - got)[:10]
            res["uids_extra"] = sorted(got - self.expected)[:10]
            res["uids_ok"] = got == self.expected
        warm = [self.cat(m.path("merged.ics")) for _ in range(self.a.warm)]
        res["warm_s"] = median(warm)
        res["warm_bytes"] = self.dv.take_stats().bytes_out
        res["tmpfs_s"] = median([self.cat(copy) for _ in range(self.a.warm)])
        res["warm_rss_kb"] = proc_status(pid, "VmHWM")
        self.unmount(m)
        tot = self.log.totals(since)
        res["cold_bytes"] = tot["out"]
        res["cold_parts"] = tot["body_count"]
        # Sessions that died without their counts (the sums above are then
        # short) and sessions the daemon dropped to reconnect (it fetches
        # that mailbox's parts again on the new one).
        res["cold_sessions"] = tot["sessions"]
        res["cold_lost"] = tot["lost"]
        res["cold_closed"] = tot["closed"]
        res["cold_split_check"] = (res["cold_stats_bytes"], tot["out"], tot["sessions"])

        # Remount on the same cache; ttl=1 so that the incremental step
        # below is the ordinary "listing older than ttl" path.
        since = self.log.offset()
        m = self.mount(cache, ttl=1)
        t0 = time.perf_counter()
        m.start()
        self.cat(m.path("merged.ics"))
        res["remount_s"] = time.perf_counter() - t0
        pid = m.proc.pid
        st = self.dv.take_stats()
        res["remount_bytes"] = st.bytes_out
        res["remount_body_cmds"] = st.body_commands
        res["remount_cmds"] = st.by_command()
        res["remount_rss_kb"] = proc_status(pid, "VmHWM")
        res["remount_sha"] = self.snapshot(m, "remount.ics")[0]
        t_last = time.monotonic()

        # Incremental: 1% new, 1% gone, then cat once the listing expired.
        k = max(1, round(self.size * 0.01))
        plans = self.gen.plan_more(k)
        own = self.log.offset()
        self.dv.append(self.gen, plans)
        gone = self.dv.expunge_random(self.rng, k, self.mailboxes)
        own = (own, self.log.offset())
        # Our two sessions have ended: their traffic is not the daemon's.
        self.log.sessions(own[0], until=own[1])
        res["incr_added"] = len(plans)
        res["incr_expunged"] = sum(len(v) for v in gone.values())
        self.dv.take_stats()
        wait = t_last + 1.25 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        cpu0 = proc_cpu(pid)
        t0 = time.perf_counter()
        self.cat(m.path("merged.ics"))
        res["incr_s"] = time.perf_counter() - t0
        res["incr_cpu_s"] = proc_cpu(pid) - cpu0
        st2 = self.dv.take_stats()
        res["incr_bytes"] = st2.bytes_out
        res["incr_body_cmds"] = st2.body_commands
        res["incr_cmds"] = st2.by_command()
        res["incr_rss_kb"] = proc_status(pid, "VmHWM")
        res["incr_sha"] = self.snapshot(m, "incr-%d.ics" % r)[0]
        self.unmount(m)
        tot = self.log.totals(since, exclude=own)
        res["remount_incr_logout_bytes"] = tot["out"]
        res["remount_incr_parts"] = tot["body_count"]
        res["remount_incr_lost"] = tot["lost"]
        res["split_check"] = (st.bytes_out + st2.bytes_out, tot["out"], tot["sessions"])

        # ls -l of one mailbox directory, cold.
        cache = tempfile.mkdtemp(prefix="cache-", dir=self.dir)
        since = self.log.offset()
        m = self.mount(cache, ttl=3600)
        t0 = time.perf_counter()
        m.start()
        timed(["ls", "-l", m.path(LS_MAILBOX)], self.timeout)
        res["ls_s"] = time.perf_counter() - t0
        res["ls_rss_kb"] = proc_status(m.proc.pid, "VmHWM")
        self.unmount(m)
        res["ls_bytes"] = self.log.totals(since)["out"]
        self.dv.take_stats()

        fl = self.floor([LS_MAILBOX])
        res["floor_ls_s"], res["floor_ls_bytes"] = fl["wall"], fl["bytes"]

        if r < self.a.baseline_reps:
            b = self.baseline()
            res.update({"base_s": b["wall"], "base_bytes": b["bytes"], "base_rss_kb": b["rss_kb"],
                        "base_events": b["events"], "base_bad_parts": b["bad_parts"]})
            b = self.baseline([LS_MAILBOX])
            res.update({"base_ls_s": b["wall"], "base_ls_bytes": b["bytes"]})
        return res

    def _profiled_cold(self, argv_of_pid, settle):
        """A cold mount + cat with a tracer attached to the daemon; returns
        (wall of the cat, daemon CPU)."""
        cache = tempfile.mkdtemp(prefix="cache-", dir=self.dir)
        m = self.mount(cache, ttl=3600)
        m.start()
        tracer = subprocess.Popen(argv_of_pid(m.proc.pid), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(settle)  # tracers attach asynchronously
        t0 = time.perf_counter()
        self.cat(m.path("merged.ics"))
        wall = time.perf_counter() - t0
        cpu = proc_cpu(m.proc.pid)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=300)
        self.unmount(m)
        return wall, cpu

    def profile(self):
        """Where a cold mount's time goes: perf's flat profile of the daemon
        (on-CPU samples, user and kernel), then strace's syscall summary of
        another cold mount (counts and time, sleeping included; strace
        slows the daemon, so its wall time is not comparable)."""
        data = os.path.join(self.dir, "perf.data")
        wall, cpu = self._profiled_cold(
            lambda pid: ["perf", "record", "-F", "999", "-o", data, "-p", str(pid)], 0.5)
        report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                                 "--sort", "dso,sym", "--percent-limit", "0.7"],
                                capture_output=True, text=True, timeout=600).stdout
        top = [line for line in report.splitlines() if line.strip() and not line.startswith("#")]
        trace = os.path.join(self.dir, "strace.txt")
        swall, _ = self._profiled_cold(
            lambda pid: ["strace", "-f", "-c", "-w", "-o", trace, "-p", str(pid)], 0.5)
        with open(trace) as f:
            sc = [line.rstrip() for line in f if line.strip()][:16]
        return {"wall": wall, "cpu": cpu, "top": top[:40], "strace_wall": swall, "strace": sc}

    def incr_differences(self):
        """Where the incremental result of repetition r differs from the
        next repetition's cold mount of the same mail (for the report)."""
        out = {}
        for r in range(len(self.reps) - 1):
            if self.reps[r]["incr_sha"] == self.reps[r + 1]["cold_sha"]:
                continue
            with open(os.path.join(self.tmpfs, "incr-%d.ics" % r), "rb") as f:
                a = f.read()
            with open(os.path.join(self.tmpfs, "merged-%d.ics" % (r + 1)), "rb") as f:
                b = f.read()
            out[r] = ics_difference(a, b)
        return out

    def go(self):
        for r in range(self.a.reps):
            t0 = time.perf_counter()
            res = self.rep(r)
            self.reps.append(res)
            print("  [n=%d] repetition %d/%d done in %.1f s: cold %.3f s, floor %.3f s%s"
                  % (self.size, r + 1, self.a.reps, time.perf_counter() - t0, res["cold_s"],
                     res["floor_s"], ", 2007 %.2f s" % res["base_s"] if "base_s" in res else ""),
                  flush=True)
        self.info["incr_diffs"] = self.incr_differences()
        if self.a.profile:
            self.info["profile"] = self.profile()


# ----- report ----------------------------------------------------------------

def fmt_s(x):
    if x is None:
        return "–"
    return "%.1f ms" % (x * 1000) if x < 1 else "%.2f s" % x


def fmt_b(x):
    if x is None:
        return "–"
    if x < 10_000:
        return "%d B" % x
    if x < 10 * MiB:
        return "%.1f KiB" % (x / 1024)
    return "%.1f MiB" % (x / MiB)


def fmt_kb(x):
    return "–" if x is None else "%.1f MiB" % (x / 1024)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_r(x):
    return "–" if x is None else "%.2f×" % x if x < 100 else "%.0f×" % x


def summarize(run):
    reps = run.reps
    m = {k: median([r.get(k) for r in reps]) for k in reps[0]
         if isinstance(reps[0][k], (int, float)) and not isinstance(reps[0][k], bool)}
    for k in ("base_s", "base_bytes", "base_rss_kb", "base_ls_s", "base_ls_bytes",
              "base_events", "base_bad_parts"):
        m[k] = median([r.get(k) for r in reps])
    return m


def checks(run):
    """Correctness checks of what was measured (not timings)."""
    reps = run.reps
    out = []
    r0 = reps[0]
    out.append(("merged.ics holds the events the generated mail should give (%d UIDs)"
                % run.info["expected_uids"], r0.get("uids_ok"),
                "" if r0.get("uids_ok") else "got %s, missing e.g. %s, extra e.g. %s"
                % (r0.get("uids"), r0.get("uids_missing"), r0.get("uids_extra"))))
    out.append(("remount serves the same bytes as the cold mount",
                all(r["remount_sha"] == r["cold_sha"] for r in reps), ""))
    same = [reps[i]["incr_sha"] == reps[i + 1]["cold_sha"] for i in range(len(reps) - 1)]
    diffs = run.info.get("incr_diffs") or {}
    out.append(("after the incremental sync, merged.ics equals a cold mount of the same mail",
                all(same) if same else None,
                "needs 2 repetitions" if not same else "" if all(same) else
                "; ".join("repetition %d: %s" % (r + 1, " / ".join(d)) for r, d in diffs.items())))
    out.append(parts_check(reps))
    out.append(("warm reads send nothing to the server",
                all(r["warm_bytes"] == 0 for r in reps), ""))
    # A session's logout total also has its post-login greeting (about
    # 650 bytes), which no command's statistics include.
    split = [r[k] for r in reps for k in ("cold_split_check", "split_check")]
    ok = all(0 <= b - a <= 1024 * n + 0.01 * b for a, b, n in split)
    out.append(("per-phase byte counts (stats) add up to the sessions' logout totals "
                "(cold, remount + incremental)", ok, "" if ok else str(split)))
    return out


def parts_check(reps):
    """imapcalfs's cold mount fetched as many calendar parts as the floor:
    the sum of body_count over every session of the phase, the reopened
    ones included.  A repetition in which one of the daemon's sessions
    died without logging its counts (its imap process was killed) has
    only a lower bound: it fails if that is already above the floor's,
    and is reported as not measured otherwise; the others must match."""
    bad, unmeasured = [], []
    for i, r in enumerate(reps):
        got, want = r["cold_parts"], r["floor_parts"]
        note = "repetition %d: %d vs %d" % (i + 1, got, want)
        if r.get("cold_closed"):
            note += " (the daemon dropped %d session(s) and reconnected)" % r["cold_closed"]
        if r.get("cold_lost") and got <= want:
            unmeasured.append(note + ", not measured: %d of its %d sessions died without "
                              "logging their counts" % (r["cold_lost"], r["cold_sessions"]))
        elif got != want:
            bad.append(note)
    ok = None if len(unmeasured) == len(reps) else not bad
    return ("imapcalfs fetched as many calendar parts as the floor (cold)", ok,
            "; ".join(bad + unmeasured))


def targets(run, m, all_runs):
    """Issue 8's targets: (name, measured, limit, met)."""
    t = []
    cold, floor = m.get("cold_s"), m.get("floor_s")
    t.append(("cold ≤ 1.2 × floor wall time", fmt_r(ratio(cold, floor)), "1.20×",
              ratio(cold, floor) is not None and ratio(cold, floor) <= 1.2))
    rb = ratio(m.get("cold_bytes"), m.get("floor_bytes"))
    t.append(("bytes received ≤ 1.05 × floor", fmt_r(rb), "1.05×",
              rb is not None and rb <= 1.05))
    rw = ratio(m.get("warm_s"), m.get("tmpfs_s"))
    t.append(("warm cat within 2× of cat from tmpfs", fmt_r(rw), "2.00×",
              rw is not None and rw <= 2))
    rr = ratio(m.get("remount_s"), cold)
    parts = max(r["remount_body_cmds"] for r in run.reps)
    t.append(("remount ≤ 5% of cold, no part downloaded",
              "%.1f%%, %d part fetches" % (100 * rr, parts) if rr is not None else "–",
              "5%, 0", rr is not None and rr <= 0.05 and parts == 0))
    ri = ratio(m.get("incr_s"), cold)
    t.append(("incremental ≤ 10% of cold", "%.1f%%" % (100 * ri) if ri is not None else "–",
              "10%", ri is not None and ri <= 0.10))
    limit = 2 * m["merged_bytes"] / 1024 + 32 * 1024
    t.append(("daemon peak RSS ≤ 2 × merged.ics + 32 MiB", fmt_kb(m.get("cold_rss_kb")),
              fmt_kb(limit), m.get("cold_rss_kb", 1e18) <= limit))
    rbase = ratio(m.get("base_s"), cold)
    t.append(("≥ 40× faster than the 2007 algorithm (cold)",
              "%s (the floor: %s)" % (fmt_r(rbase), fmt_r(ratio(m.get("base_s"), floor))), "40×",
              rbase is not None and rbase >= 40))
    smaller = [r for r in all_runs if r.size * 10 == run.size and r.reps]
    if smaller:
        per_big = cold / run.size
        per_small = summarize(smaller[0])["cold_s"] / smaller[0].size
        g = per_big / per_small
        t.append(("growth: cold time per message within 1.3× of %d's" % smaller[0].size,
                  fmt_r(g), "1.30×", g <= 1.3))
    return t


def table(run):
    m = summarize(run)
    rows = []

    def row(name, ic, fl, base, fmt, fl_label=None, ic_fl=None, base_ic=None):
        r1 = ratio(ic, fl) if ic_fl is None else ic_fl
        r2 = ratio(base, ic) if base_ic is None else base_ic
        rows.append("| %s | %s | %s | %s | %s | %s |" % (
            name, fmt(ic), fl_label or fmt(fl), fmt(base), fmt_r(r1), fmt_r(r2)))

    row("cold: mount + cat merged.ics", m["cold_s"], m["floor_s"], m["base_s"], fmt_s)
    row("cold: bytes from server", m["cold_bytes"], m["floor_bytes"], m["base_bytes"], fmt_b)
    row("cold: peak RSS", m["cold_rss_kb"], m["floor_rss_kb"], m["base_rss_kb"], fmt_kb)
    row("warm: cat merged.ics again (floor column: cat from tmpfs)", m["warm_s"], m["tmpfs_s"],
        m["base_s"], fmt_s)
    row("remount + cat (same cache)", m["remount_s"], m["floor_s"], m["base_s"], fmt_s)
    row("remount: bytes from server", m["remount_bytes"], m["floor_bytes"], m["base_bytes"], fmt_b)
    row("incremental (+1 % / −1 %): cat after ttl", m["incr_s"], m["floor_s"], m["base_s"], fmt_s)
    row("incremental: bytes from server", m["incr_bytes"], m["floor_bytes"], m["base_bytes"], fmt_b)
    row("ls -l %s/, cold (floor, 2007: that mailbox only)" % LS_MAILBOX, m["ls_s"],
        m["floor_ls_s"], m.get("base_ls_s"), fmt_s)
    row("ls -l: bytes from server", m["ls_bytes"], m["floor_ls_bytes"], m.get("base_ls_bytes"),
        fmt_b)
    head = ["| measure | imapcalfs | floor | 2007 algorithm | imapcalfs / floor | "
            "2007 / imapcalfs |", "|---|---:|---:|---:|---:|---:|"]
    return head + rows, m


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                                  shell=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    return {"cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release(), "mem": mem,
            "os": sh(". /etc/os-release; echo $PRETTY_NAME"),
            "dovecot": sh("dovecot --version"), "python": platform.python_version(),
            "commit": sh("git -C %s rev-parse --short HEAD" % REPO) +
            (" (with uncommitted changes)" if sh("git -C %s status --porcelain -- src include"
                                                 % REPO) else "")}


def report(args, runs, mach, load_before, load_after, started):
    out = ["# imapcalfs benchmark results", "",
           "Written by `make bench` (bench/run.py %s) on %s UTC; see bench/README.md for what each "
           "row measures." % (" ".join(args.argv) or "(defaults)",
                              started.strftime("%Y-%m-%d %H:%M")), "",
           "## Machine", "",
           "- CPU: %s, nproc %d; RAM %s" % (mach["cpu"], mach["nproc"], mach["mem"]),
           "- kernel %s, %s" % (mach["kernel"], mach["os"]),
           "- Dovecot %s on 127.0.0.1 (IMAPS), Python %s for the floor and 2007 clients"
           % (mach["dovecot"], mach["python"]),
           "- imapcalfs %s, binary %s, options: %s" % (mach["commit"], mach["binary"],
                                                    args.daemon_opts or "(defaults)"),
           "- load average before / after: %s / %s (other work may share the machine)"
           % (load_before, load_after), ""]
    for run in runs:
        if not run.reps:
            continue
        rows, m = table(run)
        info = run.info
        mail = info["mail"]
        out += ["## %d messages" % run.size, "",
                "Mail: %d messages, %s in %s; %s; clients %s; %d with a big attachment, %d "
                "forwarded. Fill %.1f s (Maildir written directly + doveadm force-resync)."
                % (info["messages"], fmt_b(info["bytes"]),
                   ", ".join("%s %d" % kv for kv in info["per_mailbox"].items()),
                   ", ".join("%s %d" % kv for kv in sorted(mail["kinds"].items())),
                   ", ".join("%s %d" % kv for kv in sorted(mail["clients"].items())),
                   mail["attachments"], mail["forwarded"], info["fill_s"]),
                "merged.ics: %s, %s events (UIDs). Medians of %d repetitions (2007 algorithm: %d)."
                % (fmt_b(m["merged_bytes"]), run.reps[0].get("uids"), len(run.reps),
                   min(args.baseline_reps, len(run.reps))), ""]
        out += rows
        out += ["", "Details: mount alone %s of the cold time; daemon CPU %s during cold; floor "
                "client CPU %s; incremental: +%d / −%d messages, daemon CPU %s, "
                "remount+incremental sessions fetched %d calendar parts (logout body_count)."
                % (fmt_s(m["cold_mount_s"]), fmt_s(m["cold_cpu_s"]), fmt_s(m["floor_cpu_s"]),
                   m["incr_added"], m["incr_expunged"], fmt_s(m["incr_cpu_s"]),
                   max(r["remount_incr_parts"] for r in run.reps)), ""]
        cmds = run.reps[-1]
        for phase in ("cold", "remount", "incr"):
            c = cmds.get(phase + "_cmds") or {}
            out.append("- server commands, %s (last repetition): %s" % (
                phase, ", ".join("%s %d (%s)" % (k, v[0], fmt_b(v[1]))
                                 for k, v in sorted(c.items())) or "none"))
        out += ["", "Targets of issue 8%s:" % ("" if run.size >= 10000
                                               else " (they apply at 10,000 messages)"), "",
                "| target | measured | limit | met |", "|---|---:|---:|:---:|"]
        for name, got, limit, ok in targets(run, m, runs):
            out.append("| %s | %s | %s | %s |" % (name, got, limit, "yes" if ok else "**no**"))
        out += ["", "Checks:", ""]
        for name, ok, detail in checks(run):
            out.append("- %s: %s%s" % (name, "n/a" if ok is None else "yes" if ok else "**NO**",
                                      " (%s)" % detail if detail else ""))
        prof = info.get("profile")
        if prof:
            out += ["", "Profile of one more cold mount + cat (perf record on the daemon, "
                    "on-CPU samples; cat %s, daemon CPU %s):" % (fmt_s(prof["wall"]),
                                                                fmt_s(prof["cpu"])), "",
                    "```"] + prof["top"] + ["```", "",
                    "System calls of another cold mount + cat (strace -f -c -w: wall-clock time "
                    "per call, sleeping included; under strace the cat took %s):"
                    % fmt_s(prof["strace_wall"]), "", "```"] + prof["strace"] + ["```"]
        out.append("")
    return "\n".join(out) + "\n"


def write_results(path, text):
    notes = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if NOTES_MARK in old:
            notes = old[old.index(NOTES_MARK):]
    with open(path, "w") as f:
        f.write(text)
        f.write("\n" + (notes or NOTES_MARK + "\n"))


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description="imapcalfs benchmark (issue 8)")
    ap.add_argument("--sizes", default="1000,10000",
                    help="comma-separated message counts (default 1000,10000)")
    ap.add_argument("--huge", action="store_true", help="also run 100,000 messages")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per size (default 5)")
    ap.add_argument("--baseline-reps", type=int, default=3,
                    help="repetitions of the slow 2007 algorithm (default 3)")
    ap.add_argument("--warm", type=int, default=5, help="warm cats per repetition")
    ap.add_argument("--seed", type=int, default=2007)
    ap.add_argument("--workdir", default=None,
                    help="scratch directory (default: a new one under /tmp; removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"),
                    help="where to write the report ('-' for nowhere)")
    ap.add_argument("--json", default=None, help="also write every measurement as JSON here")
    ap.add_argument("--daemon-opts", default="", help="extra -o options for imapcalfs")
    ap.add_argument("--profile", action="store_true",
                    help="after the repetitions, profile one cold mount with perf")
    ap.add_argument("--timeout", type=float, default=900, help="per command, seconds")
    args = ap.parse_args(argv)
    args.argv = argv
    if os.geteuid() != 0:
        sys.exit("bench/run.py needs root (Dovecot as root, FUSE mounts), as `make check` does")
    if not os.access(mount.binary(), os.X_OK):
        sys.exit("no imapcalfs binary at %s: run make first" % mount.binary())
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.huge:
        sizes.append(100000)
    started = datetime.datetime.now(datetime.timezone.utc)
    made = args.workdir is None
    workdir = args.workdir or tempfile.mkdtemp(prefix="imapcalfs-bench-", dir="/tmp")
    os.makedirs(workdir, exist_ok=True)
    os.chmod(workdir, 0o755)
    load_before = loadavg()
    mach = machine()
    # The whole run uses one copy of the binary: a rebuild in the tree
    # meanwhile (others work there) must not change it between phases.
    original = mount.binary()
    bindir = os.path.join(workdir, "bin")
    os.makedirs(bindir, exist_ok=True)
    shutil.copy2(original, os.path.join(bindir, "imapcalfs"))
    os.environ["IMAPCALFS_BIN"] = bindir
    with open(original, "rb") as f:
        mach["binary"] = "%s (sha256 %s…, built %s)" % (
            original, hashlib.sha256(f.read()).hexdigest()[:12],
            datetime.datetime.fromtimestamp(os.stat(original).st_mtime, datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M:%S UTC"))
    runs = []
    try:
        pki = certs.make_pki(os.path.join(workdir, "pki"))
        for size in sizes:
            run = Run(args, size, pki, workdir)
            runs.append(run)
            try:
                print("n=%d: generating and filling the Maildir ..." % size, flush=True)
                run.setup()
                print("n=%d: %d messages, %s, filled in %.1f s" % (
                    size, run.info["messages"], fmt_b(run.info["bytes"]), run.info["fill_s"]),
                    flush=True)
                run.go()
            finally:
                run.close()
    finally:
        left = mount.unmount_everything_under(workdir)
        if made and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        if left:
            print("warning: had to unmount %s" % left, file=sys.stderr)
    text = report(args, runs, mach, load_before, loadavg(), started)
    print()
    print(text)
    if args.results != "-":
        write_results(args.results, text)
        print("written to %s" % args.results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": mach, "runs": [
                {"size": r.size, "info": r.info, "reps": r.reps, "checks": checks(r),
                 "targets": targets(r, summarize(r), runs)} for r in runs if r.reps]},
                f, indent=1, default=str)
    bad = [name for run in runs if run.reps for name, ok, _ in checks(run) if ok is False]
    if bad:
        print("checks failed: %s" % "; ".join(bad), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
