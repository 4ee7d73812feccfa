"""Starting and stopping imapcalfs mounts the way the tests need them.

The daemon runs in the foreground (-f) as a child process, so that its exit
status and stderr are ours to check (ASan and valgrind report through both).
Mount state is read from /proc/self/mountinfo, never by touching the
mountpoint, so a hung daemon cannot hang the harness.  Teardown always
unmounts with fusermount3, waits for the daemon to exit, and kills it only
as a last resort.

Environment: IMAPCALFS_BIN (directory holding the imapcalfs binary; default
<repo>/build), IMAPCALFS_VALGRIND=1 (run under valgrind),
IMAPCALFS_SANITIZED=1 (an ASan build: allow more time).
"""

import contextlib
import os
import signal
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VALGRIND = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--suppressions=" + os.path.join(REPO, "tests", "valgrind.supp")]


def under_valgrind():
    return os.environ.get("IMAPCALFS_VALGRIND") == "1"


def sanitized():
    return os.environ.get("IMAPCALFS_SANITIZED") == "1"


def slow_factor():
    """How much slower than a plain build the daemon may be."""
    return 6 if under_valgrind() else 3 if sanitized() else 1


MOUNT_TIMEOUT = 10 * slow_factor()  # seconds until the mount must be live
EXIT_TIMEOUT = 15 * slow_factor()  # seconds for the daemon to exit after unmount
ACCESS_TIMEOUT = 20 * slow_factor()  # seconds for one command on the mount


def binary():
    """Path of the imapcalfs binary under test."""
    return os.path.join(os.environ.get("IMAPCALFS_BIN") or os.path.join(REPO, "build"),
                        "imapcalfs")


def _unescape_mountinfo(field):
    """Undoes the octal escapes (\\040 etc.) of /proc/self/mountinfo."""
    out, i = bytearray(), 0
    raw = field.encode()
    while i < len(raw):
        if raw[i:i + 1] == b"\\" and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode(errors="surrogateescape")


def mounts():
    """[(mountpoint, fstype, source)] from /proc/self/mountinfo."""
    res = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) >= 5 and len(rfields) >= 2:
                res.append((_unescape_mountinfo(fields[4]), rfields[0],
                            _unescape_mountinfo(rfields[1])))
    return res


def is_mounted(path):
    """True if something is mounted on path (without touching path)."""
    path = os.path.realpath(path)
    return any(mp == path for mp, _, _ in mounts())


def fusermount_u(path, lazy=False):
    """fusermount3 -u (or -uz); returns its exit status."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        return subprocess.run(["fusermount3", "-uz" if lazy else "-u", path],
                              stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=30).returncode
    return -1


def unmount_everything_under(prefix):
    """Lazily unmounts whatever is still mounted below prefix (a safety net
    at the end of a session).  Returns the mountpoints it had to release."""
    prefix = os.path.realpath(prefix).rstrip("/") + "/"
    left = [mp for mp, _, _ in mounts() if mp.startswith(prefix)]
    for mp in left:
        if fusermount_u(mp) != 0:
            fusermount_u(mp, lazy=True)
    return left


def daemon_env(workdir, password=None, extra=None):
    """The daemon's environment: ours, with its cache and config under
    workdir, and the password only when given."""
    env = dict(os.environ)
    env.pop("IMAPCALFS_PASSWORD", None)
    env["XDG_CACHE_HOME"] = os.path.join(workdir, "cache")
    env["XDG_CONFIG_HOME"] = os.path.join(workdir, "config")
    if password is not None:
        env["IMAPCALFS_PASSWORD"] = password
    env.update(extra or {})
    return env


def command(source, mountpoint, options=(), foreground=True, prog=None, extra_args=()):
    """argv for one mount: [valgrind …] imapcalfs SOURCE MNT [-f] [-o a,b]."""
    argv = [prog or binary(), source, mountpoint]
    if foreground:
        argv.append("-f")
    if options:
        argv += ["-o", ",".join(options)]
    argv += list(extra_args)
    return (VALGRIND + argv) if under_valgrind() else argv


def write_passfile(path, password, mode=0o600):
    """Writes password as the first line of path, with the given mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    os.chmod(path, mode)
    return path


class MountError(AssertionError):
    """A mount that should have worked did not (message has its stderr)."""


class Mount:
    """One imapcalfs process in the foreground and its mountpoint.

    workdir: a directory of this mount's own; holds mnt/ (unless
    mountpoint is given), the daemon's stderr file, cache and config dirs.
    """

    def __init__(self, source, workdir, options=(), password=None, env=None,
                 mountpoint=None, prog=None, extra_args=()):
        self.source = source
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.mountpoint = os.path.realpath(mountpoint or os.path.join(workdir, "mnt"))
        os.makedirs(self.mountpoint, exist_ok=True)
        self.stderr_path = os.path.join(workdir, "imapcalfs.stderr")
        self.argv = command(source, self.mountpoint, options, prog=prog, extra_args=extra_args)
        self.env = daemon_env(workdir, password, env)
        self.proc = None
        self.returncode = None

    def path(self, *parts):
        """A path inside the mount."""
        return os.path.join(self.mountpoint, *parts)

    def stderr(self):
        """What the daemon wrote to stderr so far."""
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self, timeout=None):
        """Starts the daemon and waits until the mount is live.  Raises
        MountError (with the daemon's stderr) if it exits or times out."""
        if not os.access(self.argv[len(VALGRIND) if under_valgrind() else 0], os.X_OK):
            raise MountError("imapcalfs binary not found or not executable: %s "
                             "(build it with `make`, or set IMAPCALFS_BIN)" % binary())
        with open(self.stderr_path, "wb") as err:
            # A session of its own: no controlling terminal to prompt on, and
            # a ^C meant for pytest does not reach the daemon directly.
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, env=self.env, start_new_session=True)
        deadline = time.monotonic() + (timeout or MOUNT_TIMEOUT)
        while time.monotonic() < deadline:
            if is_mounted(self.mountpoint):
                return self
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise MountError("imapcalfs exited with status %d before mounting:\n%s"
                                 % (self.returncode, self.stderr()))
            time.sleep(0.05)
        self.stop()
        raise MountError("%s was not mounted after %ss:\n%s"
                         % (self.mountpoint, timeout or MOUNT_TIMEOUT, self.stderr()))

    def signal(self, sig=signal.SIGTERM):
        """Sends sig to the daemon."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout=None):
        """Waits for the daemon to exit; returns its status or None."""
        if self.proc is None:
            return self.returncode
        try:
            self.returncode = self.proc.wait(timeout=timeout or EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self):
        """Unmounts and reaps the daemon; always leaves nothing mounted and
        no process behind.  Returns the daemon's exit status, or -9 if it
        had to be killed.  Safe to call more than once."""
        if self.proc is None:
            return self.returncode
        if is_mounted(self.mountpoint) and fusermount_u(self.mountpoint) != 0:
            fusermount_u(self.mountpoint, lazy=True)
        rc = self.wait()
        if rc is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            if self.wait() is None:
                # Still there: a thread is stuck in the kernel on a request
                # of this mount that nobody will answer now. A forced unmount
                # aborts the FUSE connection, which fails those requests.
                subprocess.run(["umount", "-f", self.mountpoint], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.proc.wait(timeout=30)
            self.returncode = rc = -signal.SIGKILL
        if is_mounted(self.mountpoint):
            fusermount_u(self.mountpoint, lazy=True)
        self.proc = None
        return rc


def run_mount_expect_failure(source, workdir, options=(), password=None, env=None,
                             timeout=None, prog=None):
    """Runs a mount that must fail (foreground, so it cannot daemonize).

    Returns (exit status, stderr).  If it mounted after all, it is
    unmounted again and MountError is raised; nothing stays mounted."""
    m = Mount(source, workdir, options, password=password, env=env, prog=prog)
    if not os.access(m.argv[len(VALGRIND) if under_valgrind() else 0], os.X_OK):
        raise MountError("imapcalfs binary not found or not executable: %s" % binary())
    with open(m.stderr_path, "wb") as err:
        proc = subprocess.Popen(m.argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                env=m.env, start_new_session=True)
    deadline = time.monotonic() + (timeout or 2 * MOUNT_TIMEOUT)
    while time.monotonic() < deadline and proc.poll() is None:
        if is_mounted(m.mountpoint):
            m.proc = proc
            m.stop()
            raise MountError("mount of %s succeeded but should have failed:\n%s"
                             % (source, m.stderr()))
        time.sleep(0.05)
    if proc.poll() is None:
        m.proc = proc
        m.stop()
        raise MountError("mount of %s neither failed nor mounted within %ss:\n%s"
                         % (source, timeout or 2 * MOUNT_TIMEOUT, m.stderr()))
    if is_mounted(m.mountpoint):  # exited but left a mount behind
        fusermount_u(m.mountpoint, lazy=True)
        raise MountError("imapcalfs exited %d but left %s mounted" % (proc.returncode,
                                                                      m.mountpoint))
    return proc.returncode, m.stderr()
