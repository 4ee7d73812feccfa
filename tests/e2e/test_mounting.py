"""imapcalfs mounted like every other FUSE filesystem (issue 6).

- mount(8): `mount -t fuse.imapcalfs SOURCE MNT -o config=FILE,...` and an
  fstab line (a temporary fstab, `mount -T FILE`) with _netdev, noauto,
  nofail and x-systemd.* options; mount.fuse3 runs `imapcalfs` from the
  standard PATH, so for these tests /usr/local/bin/imapcalfs is a symlink to
  the binary under test, made here and always removed again.  mount(8)
  cleans the environment, so the password comes from the config file.
- Readiness: with NOTIFY_SOCKET set the daemon sends READY=1 over the
  socket once the mount is live (and STOPPING=1 when it goes).
- Logging: stderr in the foreground; syslog once daemonized.  Where no
  system logger owns /dev/log (as in CI containers), the test binds its own
  datagram socket there for its duration and removes it again; where one
  does, that test is skipped rather than taking the system logger's place.
- -h/-V exit 0; SIGTERM, SIGINT, fusermount3 -u and umount end the daemon
  with exit status 0 and the mountpoint released.

A daemonized imapcalfs is nobody's child; harness.reaper runs the command
as a child subreaper so that the daemon's exit status can still be checked.
"""

import contextlib
import glob
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from harness import fs, mount, reaper, scenario

HELPER_LINK = "/usr/local/bin/imapcalfs"
ALL_SUMMARIES = {s for _, s in scenario.events_in(scenario.MAILBOX2ICS)}


@pytest.fixture(scope="module")
def mail(dovecot_server):
    scenario.fill(dovecot_server, scenario.MAILBOX2ICS)
    return dovecot_server


@pytest.fixture
def workdir(tmp_path):
    """A directory reachable by path for a mount (tmp_path is private)."""
    os.chmod(tmp_path, 0o755)
    return str(tmp_path)


def summaries(path):
    text = fs.cat(path).replace(b"\r\n ", b"").decode()
    return set(re.findall(r"^SUMMARY[^:]*:(.*?)\r?$", text, re.M))


def write_config(workdir, dv, password=None, name="alice"):
    """A private config file (0600) with one account for dv: the daemon
    finds its password, CA and cache there."""
    path = os.path.join(workdir, "config")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("[%s]\nsource = %s\npassword = %s\ncafile = %s\ncache_dir = %s\n" % (
            name, dv.url(), password or dv.password, dv.ca_file,
            os.path.join(workdir, "cache")))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    return path


def daemon_env(workdir, extra=None):
    """Environment for a daemon that is not our child: without the password,
    and with sanitizer reports written to files (its stderr is /dev/null)."""
    env = dict(os.environ)
    env.pop("IMAPCALFS_PASSWORD", None)
    if mount.sanitized():
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":log_path=%s/asan"
                               % workdir).lstrip(":")
        env["UBSAN_OPTIONS"] = (env.get("UBSAN_OPTIONS", "") + ":log_path=%s/ubsan"
                                % workdir).lstrip(":")
    env.update(extra or {})
    return env


def sanitizer_reports(workdir):
    """Reports a sanitized daemon left in workdir (empty on a plain build)."""
    out = []
    for path in glob.glob(os.path.join(workdir, "asan*")) + \
            glob.glob(os.path.join(workdir, "ubsan*")):
        with open(path, errors="replace") as f:
            out.append(f.read())
    return out


def mount_entry(mnt):
    """(fstype, source) of the mount on mnt from /proc/self/mountinfo."""
    mnt = os.path.realpath(mnt)
    found = [(t, s) for mp, t, s in mount.mounts() if mp == mnt]
    assert len(found) == 1, found
    return found[0]


def mount_options(mnt):
    """The per-mount and super-block options of mnt (mountinfo)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == os.path.realpath(mnt):
                return set(left.split()[5].split(",")) | set(right.split()[2].split(","))
    return set()


def run(argv, env=None, timeout=None):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                          timeout=timeout or mount.ACCESS_TIMEOUT)


@contextlib.contextmanager
def reaped(argv, workdir, mnt, env=None):
    """Runs argv under the subreaper; on the way out releases mnt and ends
    whatever is left, then checks the sanitizer logs."""
    r = reaper.Reaper(argv, workdir, env=env, timeout=mount.MOUNT_TIMEOUT * 2)
    try:
        yield r.start()
    finally:
        r.close(mountpoint=mnt)
    reports = sanitizer_reports(workdir)
    assert not reports, "\n".join(reports)


# ---- mount(8) and fstab -------------------------------------------------------

@pytest.fixture
def on_path():
    """/usr/local/bin/imapcalfs -> the binary under test, for mount.fuse3.
    Refuses to touch anything it did not make (a real installation), and
    replaces only a stale link into a build directory (left by a killed
    run).  Always removed at the end."""
    target = os.path.realpath(mount.binary())
    if os.path.lexists(HELPER_LINK):
        # A symlink into some checkout's build directory is this fixture's
        # own, left by a killed run; an installation is a regular file.
        stale = os.path.islink(HELPER_LINK) and re.search(
            r"/build[^/]*/imapcalfs$", os.readlink(HELPER_LINK))
        if not stale:
            pytest.fail("%s already exists and is not this test's symlink; the mount(8) "
                        "tests need that name for the binary under test: remove it or run "
                        "them on a machine without an installed imapcalfs" % HELPER_LINK)
        os.unlink(HELPER_LINK)
    os.makedirs(os.path.dirname(HELPER_LINK), exist_ok=True)
    os.symlink(target, HELPER_LINK)
    try:
        yield HELPER_LINK
    finally:
        if os.path.islink(HELPER_LINK) and os.readlink(HELPER_LINK) == target:
            os.unlink(HELPER_LINK)


def check_live_mount(mnt, source):
    fstype, shown = mount_entry(mnt)
    assert fstype == "fuse.imapcalfs"
    assert shown == source
    listing = run(["mount"]).stdout.decode()
    assert re.search(r"^%s on %s type fuse\.imapcalfs \(" % (re.escape(source),
                                                             re.escape(mnt)), listing, re.M)
    assert "ro" in mount_options(mnt)
    assert summaries(os.path.join(mnt, "merged.ics")) == ALL_SUMMARIES


def check_umount_ends_daemon(r, pid, mnt):
    proc = run(["umount", mnt])
    assert proc.returncode == 0, proc.stderr.decode()
    assert r.exit_status(pid, timeout=mount.EXIT_TIMEOUT) == 0, r.output()
    assert not mount.is_mounted(mnt)


def test_mount_t_fuse_imapcalfs_and_umount(mail, on_path, workdir):
    config = write_config(workdir, mail)
    mnt = os.path.join(workdir, "mnt")
    os.mkdir(mnt)
    argv = ["mount", "-t", "fuse.imapcalfs", mail.url(), mnt,
            "-o", "config=%s,allow_other" % config]
    with reaped(argv, workdir, mnt, env=daemon_env(workdir)) as r:
        assert r.command_status() == 0, r.output()
        assert r.output() == ""
        pid = r.daemon_pid("imapcalfs")
        check_live_mount(mnt, mail.url())
        assert "allow_other" in mount_options(mnt)
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            assert mail.password.encode() not in f.read()
        check_umount_ends_daemon(r, pid, mnt)


def test_fstab_line_with_systemd_options(mail, on_path, workdir):
    config = write_config(workdir, mail)
    mnt = os.path.join(workdir, "cal")
    os.mkdir(mnt)
    fstab = os.path.join(workdir, "fstab")
    opts = ("_netdev,noauto,nofail,x-systemd.automount,x-systemd.idle-timeout=600,"
            "x-systemd.mount-timeout=30,nosuid,nodev,comment=x-gvfs-hide,config=" + config)
    with open(fstab, "w") as f:
        f.write("# a test fstab: the calendars of alice\n")
        f.write("%s  %s  fuse.imapcalfs  %s  0 0\n" % (mail.url(), mnt, opts))
    # noauto: `mount -a` leaves it alone.
    proc = run(["mount", "-a", "-T", fstab])
    assert proc.returncode == 0, proc.stderr.decode()
    assert not mount.is_mounted(mnt)
    with reaped(["mount", "-T", fstab, mnt], workdir, mnt, env=daemon_env(workdir)) as r:
        assert r.command_status() == 0, r.output()
        pid = r.daemon_pid("imapcalfs")
        check_live_mount(mnt, mail.url())
        assert {"nosuid", "nodev"} <= mount_options(mnt)
        check_umount_ends_daemon(r, pid, mnt)


def test_fstab_line_naming_a_config_account(mail, on_path, workdir):
    """The SOURCE field may be the config file's account name: mount shows
    the account's source."""
    config = write_config(workdir, mail, name="work-calendars")
    mnt = os.path.join(workdir, "cal")
    os.mkdir(mnt)
    fstab = os.path.join(workdir, "fstab")
    with open(fstab, "w") as f:
        f.write("work-calendars %s fuse.imapcalfs noauto,_netdev,config=%s 0 0\n"
                % (mnt, config))
    with reaped(["mount", "-T", fstab, mnt], workdir, mnt, env=daemon_env(workdir)) as r:
        assert r.command_status() == 0, r.output()
        pid = r.daemon_pid("imapcalfs")
        check_live_mount(mnt, mail.url())
        check_umount_ends_daemon(r, pid, mnt)


def test_mount_helper_reports_failure(mail, on_path, workdir):
    config = write_config(workdir, mail, password="wrong-" + mail.password)
    mnt = os.path.join(workdir, "mnt")
    os.mkdir(mnt)
    with reaped(["mount", "-t", "fuse.imapcalfs", mail.url(), mnt, "-o", "config=" + config],
                workdir, mnt, env=daemon_env(workdir)) as r:
        assert r.command_status() != 0
        lines = [line for line in r.output().splitlines() if line.strip()]
        assert len(lines) == 1 and re.search(r"auth|login", lines[0], re.I), lines
        assert not mount.is_mounted(mnt)


# ---- readiness (sd_notify) ----------------------------------------------------------

@contextlib.contextmanager
def notify_socket(workdir, abstract):
    """A datagram socket like systemd's NOTIFY_SOCKET; yields (address, sock)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = "imapcalfs-test-%d-%d" % (os.getpid(), time.monotonic_ns())
        sock.bind("\0" + name)
        addr = "@" + name
    else:
        addr = os.path.join(workdir, "notify")
        sock.bind(addr)
    try:
        yield addr, sock
    finally:
        sock.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_is_sent_once_the_mount_is_live(mail, mounter, workdir, abstract):
    with notify_socket(workdir, abstract) as (addr, sock):
        m = mounter.mount(mail, env={"NOTIFY_SOCKET": addr}, start=False)
        starter = threading.Thread(target=m.start, daemon=True)
        sock.settimeout(mount.MOUNT_TIMEOUT * 2)
        starter.start()
        msg = sock.recv(4096)
        live_at_ready = mount.is_mounted(m.mountpoint)
        starter.join(timeout=mount.MOUNT_TIMEOUT * 2)
        assert msg == b"READY=1"
        assert live_at_ready, "READY=1 arrived before the mount was live"
        assert summaries(m.path("merged.ics")) == ALL_SUMMARIES
        assert m.stop() == 0, m.stderr()
        sock.settimeout(mount.EXIT_TIMEOUT)
        assert sock.recv(4096) == b"STOPPING=1"
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(4096)


def test_failed_mount_sends_no_ready(mail, mounter, workdir):
    with notify_socket(workdir, False) as (addr, sock):
        rc, err = mounter.expect_failure(mail.url(), password="wrong",
                                         env={"NOTIFY_SOCKET": addr})
        assert rc == 1, err
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(4096)


# ---- logging -------------------------------------------------------------------

@pytest.fixture
def syslog_socket():
    """A datagram socket on /dev/log, made only where nobody has one there
    (no syslog daemon, no journald), and removed again.  Yields a function
    returning the messages received so far."""
    if os.path.lexists("/dev/log"):
        pytest.skip("/dev/log belongs to the system logger; this test binds its own "
                    "socket there only when there is none")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/dev/log")
    ino = os.stat("/dev/log").st_ino
    os.chmod("/dev/log", 0o666)
    sock.setblocking(False)
    received = []

    def messages():
        while True:
            try:
                received.append(sock.recv(65536).decode(errors="replace"))
            except BlockingIOError:
                return list(received)

    try:
        yield messages
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat("/dev/log").st_ino == ino:
                os.unlink("/dev/log")


def wait_for(what, fn, timeout=None):
    deadline = time.monotonic() + (timeout or mount.ACCESS_TIMEOUT)
    while True:
        res = fn()
        if res:
            return res
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


BROKEN_CALENDAR = b"""From: x@example.org
To: alice@example.org
Subject: broken invitation
Date: Sat, 29 Sep 2007 12:00:00 +0000
MIME-Version: 1.0
Content-Type: text/calendar; charset=utf-8; method=REQUEST

BEGIN:VCALENDAR
VERSION:2.0
METHOD:REQUEST
BEGIN:VEVENT
this is not iCalendar at all
"""


def test_daemonized_logs_go_to_syslog_not_stderr(dovecot_factory, syslog_socket, workdir):
    dv = dovecot_factory.start()
    scenario.fill(dv, scenario.MAILBOX2ICS)
    dv.add_message("Broken", BROKEN_CALENDAR)
    mnt = os.path.join(workdir, "mnt")
    os.mkdir(mnt)
    argv = [mount.binary(), dv.url(), mnt, "-o",
            "cafile=%s,cache_dir=%s/cache" % (dv.ca_file, workdir)]
    env = daemon_env(workdir, {"IMAPCALFS_PASSWORD": dv.password})
    with reaped(argv, workdir, mnt, env=env) as r:
        assert r.command_status() == 0, r.output()
        pid = r.daemon_pid("imapcalfs")
        assert mount.is_mounted(mnt)
        # Detached: its standard streams are /dev/null now.
        assert os.readlink("/proc/%d/fd/2" % pid) == "/dev/null"
        tag = "imapcalfs[%d]: " % pid
        mine = lambda: [m for m in syslog_socket() if tag in m]  # noqa: E731
        started = wait_for("the mount message in syslog",
                           lambda: [m for m in mine() if "mounted on " + mnt in m])
        # <30>: facility daemon (3), severity info (6) (RFC 5424 PRI).
        assert started[0].startswith("<30>"), started
        # A problem found later, while serving, is logged there too.
        fs.cat(os.path.join(mnt, "Broken", "merged.ics"))
        warned = wait_for("a warning about the broken part", lambda: [
            m for m in mine() if re.match(r"<2[0-8]>", m) and "Broken" in m])
        assert warned
        assert all(dv.password not in m for m in syslog_socket())
        os.kill(pid, signal.SIGTERM)
        assert r.exit_status(pid, timeout=mount.EXIT_TIMEOUT) == 0
        assert not mount.is_mounted(mnt)
        assert r.output() == "", "written to stderr/stdout: " + r.output()


def test_foreground_logs_go_to_stderr(mail, mounter):
    m = mounter.mount(mail)
    assert re.search(r"mounted on %s" % re.escape(m.mountpoint), m.stderr())
    assert m.stop() == 0
    assert re.search(r"stopping: .* on %s" % re.escape(m.mountpoint), m.stderr())


def test_foreground_writes_nothing_to_syslog(mail, mounter, syslog_socket):
    m = mounter.mount(mail)
    pid = m.proc.pid
    assert b"BEGIN:VCALENDAR" in fs.cat(m.path("merged.ics"))
    assert m.stop() == 0
    assert "mounted on" in m.stderr()
    assert not [msg for msg in syslog_socket() if "[%d]" % pid in msg]


# ---- -h, -V and ending with status 0 ---------------------------------------------

SPEC_OPTIONS = ("user=", "port=", "mailboxes=", "passfile=", "passcmd=", "tls=", "cafile=",
                "capath=", "cache_dir=", "no_disk_cache", "ttl=", "idle", "components=",
                "search=", "after=", "before=", "match=", "vdir", "privacy=", "auth=",
                "timeout=", "connections=", "config=")


def test_help_and_version_exit_0():
    for flag in ("-h", "--help"):
        proc = run([mount.binary(), flag])
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.decode()
        assert "usage:" in out and "SOURCE MOUNTPOINT" in out
        # Every option of SPEC §1 is listed ("-o NAME"), FUSE's own too.
        missing = [opt for opt in SPEC_OPTIONS + ("allow_other", "umask=", "uid=", "gid=")
                   if not re.search(r"-o %s%s" % (re.escape(opt), "" if opt.endswith("=") else r"\b(?!=)"),
                                    out)]
        assert not missing, "-h does not list: %s" % missing
    for flag in ("-V", "--version"):
        proc = run([mount.binary(), flag])
        assert proc.returncode == 0, proc.stderr
        assert re.search(r"^imapcalfs version \d+\.\d+", proc.stdout.decode(), re.M)
        assert "FUSE library version" in proc.stdout.decode()


def test_usage_errors_exit_1(workdir):
    for args in ([], ["imaps://alice@127.0.0.1"], ["imaps://a@h", workdir, "-o", "ttl=x"],
                 ["imaps://a@h", workdir, "-o", "no_such_option"]):
        proc = run([mount.binary()] + args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.strip(), args
        assert not mount.is_mounted(workdir)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_ends_with_status_0(mail, mounter, sig):
    m = mounter.mount(mail)
    assert "merged.ics" in fs.ls(m.mountpoint)
    m.signal(sig)
    assert m.wait() == 0, m.stderr()
    assert not mount.is_mounted(m.mountpoint)


def test_fusermount_u_ends_with_status_0(mail, mounter):
    m = mounter.mount(mail)
    assert "merged.ics" in fs.ls(m.mountpoint)
    proc = run(["fusermount3", "-u", m.mountpoint])
    assert proc.returncode == 0, proc.stderr
    assert m.wait() == 0, m.stderr()
    assert not mount.is_mounted(m.mountpoint)


@pytest.mark.parametrize("how", ["SIGTERM", "fusermount3"])
def test_daemonized_ends_with_status_0(mail, workdir, how):
    mnt = os.path.join(workdir, "mnt")
    os.mkdir(mnt)
    argv = [mount.binary(), mail.url(), mnt, "-o",
            "cafile=%s,no_disk_cache" % mail.ca_file]
    env = daemon_env(workdir, {"IMAPCALFS_PASSWORD": mail.password})
    with reaped(argv, workdir, mnt, env=env) as r:
        assert r.command_status() == 0, r.output()
        pid = r.daemon_pid("imapcalfs")
        assert summaries(os.path.join(mnt, "merged.ics")) == ALL_SUMMARIES
        if how == "SIGTERM":
            os.kill(pid, signal.SIGTERM)
        else:
            assert run(["fusermount3", "-u", mnt]).returncode == 0
        assert r.exit_status(pid, timeout=mount.EXIT_TIMEOUT) == 0
        assert not mount.is_mounted(mnt)
