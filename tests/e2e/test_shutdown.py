"""Clean shutdown (issue 7): SIGTERM, SIGINT and `fusermount3 -u` while
reads and a sync are in flight.

The mount goes through the fault-injecting proxy (tests/harness/
faultproxy.py) with -o timeout=3,ttl=1.  After a clean start (everything
read once, so the disk cache holds listings and parts), the proxy starts
to trickle the server's bytes at 100 bytes/s, or stalls them, a new
invitation arrives, and readers open merged.ics and .refresh (which syncs
before it answers).  Once the proxy has a command of that sync in flight
the daemon is told to stop.  Then:
- it exits within timeout + a margin, with status 0,
- the mountpoint is released,
- no reader is left blocked,
- the cache holds no partial entry: no temporary file, and every entry
  passes its checksum (src/cache.c: magic, length, SHA-256, payload).

`fusermount3 -u` is refused by the kernel (EBUSY) while a process is inside
the filesystem, as for every mount; it is repeated until it is accepted,
and the time counts from the first attempt.
"""

import datetime
import os
import signal
import subprocess
import time

import pytest

from harness import faultproxy, fs, mount, stress

TIMEOUT = 3
EXIT_BOUND = TIMEOUT + {1: 3.0, 3: 5.0}.get(mount.slow_factor(), 10.0)
BASE = datetime.datetime(2026, 6, 1, 9, 0, tzinfo=datetime.timezone.utc)
WORK = "Calendars.Work"

TABLE = "shutdown during a sync (timeout=%d; exit bound %.0f s)" % (TIMEOUT, EXIT_BOUND)
HEADER = ["how", "server", "exit after", "status", "readers done after", "cache entries",
          "result"]


@pytest.fixture(scope="module")
def report(request):
    return stress.Report.get(request.config)


@pytest.fixture
def server(dovecot_factory, pki):
    """A fresh Dovecot with a few invitations and a proxy in front of it."""
    dv = dovecot_factory.start()
    for i in range(5):
        dv.add_message(WORK, stress.calendar_message(
            "shut-%d@shutdown.example.org" % i, "Meeting %d" % i,
            BASE + datetime.timedelta(days=i)))
    proxy = faultproxy.FaultProxy(dv.imaps_port, pki.server.cert, pki.server.key,
                                  pki.ca_file).start()
    yield dv, proxy
    proxy.stop()
    dv.stop()


def start_readers(m):
    """cat of merged.ics and .refresh (root and mailbox), each a process."""
    paths = ["merged.ics", ".refresh", "Calendars/Work/merged.ics", "Calendars/Work/.refresh"]
    return [subprocess.Popen(["cat", m.path(p)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True) for p in paths]


def wait_sync_in_flight(proxy, readers, deadline=30):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proxy.stats()["faulted"] and proxy.in_flight() and \
                any(r.poll() is None for r in readers):
            return True
        time.sleep(0.05)
    return False


def unmount_until_accepted(mountpoint, deadline):
    """fusermount3 -u, again while the kernel says busy; returns
    (accepted, attempts, last stderr)."""
    end, attempts, err = time.monotonic() + deadline, 0, b""
    while time.monotonic() < end:
        attempts += 1
        proc = subprocess.run(["fusermount3", "-u", mountpoint], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=30)
        if proc.returncode == 0:
            return True, attempts, err
        err = proc.stderr
        if not mount.is_mounted(mountpoint):
            return True, attempts, err
        time.sleep(0.1)
    return False, attempts, err


@pytest.mark.parametrize("fault", ["trickle", "stall"])
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "fusermount3"])
def test_stops_cleanly_during_sync(how, fault, server, mounter, report):
    dv, proxy = server
    m = mounter.mount(dv, source=proxy.url(dv.user),
                      options=["timeout=%d" % TIMEOUT, "ttl=1"])
    cache_dir = os.path.join(m.workdir, "cache")
    for p in fs.find(m.mountpoint, kind="f"):
        fs.cat(m.path(p))
    entries_before, problems_before = stress.cache_problems(cache_dir)
    assert entries_before and not problems_before, problems_before

    proxy.set_fault(fault, **({"rate": 100} if fault == "trickle" else {}))
    dv.add_message(WORK, stress.calendar_message("shut-new@shutdown.example.org", "New",
                                                 BASE + datetime.timedelta(days=20)))
    readers = start_readers(m)
    problems = []
    exit_after = readers_after = None
    try:
        assert wait_sync_in_flight(proxy, readers), "no sync went in flight"
        start = time.monotonic()
        if how == "fusermount3":
            accepted, attempts, err = unmount_until_accepted(m.mountpoint, 120)
            if not accepted:
                problems.append("fusermount3 -u never accepted (%d attempts): %s"
                                % (attempts, err.decode(errors="replace")))
        else:
            m.signal(getattr(signal, how))
        rc = m.wait(timeout=120)
        exit_after = time.monotonic() - start
        for r in readers:
            try:
                r.wait(timeout=max(1.0, 120 - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                pass
        still = [r for r in readers if r.poll() is None]
        readers_after = time.monotonic() - start
        if still:
            problems.append("%d readers still blocked %.0f s after the stop"
                            % (len(still), readers_after))
        if rc is None:
            problems.append("the daemon did not exit within 120 s")
        else:
            if rc != 0:
                problems.append("exit status %s" % rc)
            if exit_after > EXIT_BOUND:
                problems.append("exit took %.1f s (bound %.0f s)" % (exit_after, EXIT_BOUND))
        if mount.is_mounted(m.mountpoint):
            problems.append("mountpoint still mounted")
        sanitizer = stress.sanitizer_report(m.stderr())
        if sanitizer:
            problems.append("sanitizer report: " + sanitizer)
    finally:
        for r in readers:
            if r.poll() is None:
                os.killpg(r.pid, signal.SIGKILL)
                r.wait(30)
        proxy.clear()
    if m.proc is not None and m.proc.poll() is None:
        m.stop()  # the daemon hung: clean up before looking at the cache
    entries, cache_bad = stress.cache_problems(cache_dir)
    problems += cache_bad
    report.add(TABLE, HEADER, [
        how, fault, "%.1f s" % exit_after if exit_after is not None else "-",
        m.returncode, "%.1f s" % readers_after if readers_after is not None else "-", entries,
        "ok" if not problems else "FAIL: " + problems[0][:80]])
    assert not problems, "\n".join(problems) + "\n" + m.stderr()[-2000:]
