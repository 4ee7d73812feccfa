"""Running a command whose descendants outlive it, and learning how they end.

A daemonized imapcalfs is nobody's child: `imapcalfs SOURCE MNT` (without
-f) forks and its parent exits; `mount -t fuse.imapcalfs` runs mount.fuse3,
which runs sh, which runs imapcalfs, which forks the daemon.  To see the
daemon's exit status anyway, the command runs under this module as a script:
it makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so every
orphaned descendant is re-parented to it, and it writes one JSON line per
process it reaps (pid, command line, exit status) to a report file.  It exits
when the command and every descendant have ended.

Use Reaper from tests:

    r = reaper.Reaper(["mount", "-t", "fuse.imapcalfs", src, mnt, "-o", opts],
                      workdir).start()
    assert r.command_status() == 0
    pid = r.daemon_pid("imapcalfs")
    ... umount ...
    assert r.exit_status(pid) == 0
    r.close()      # always (teardown): kills what is left, never leaves a mount
"""

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
PYTHON = "/usr/bin/python3"


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None


def _children(pid):
    """PIDs whose parent is pid (from /proc/PID/stat)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def _serve(report_path, argv):
    """The script side: run argv as subreaper, report every reaped process."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    report = open(report_path, "a", buffering=1)
    me = os.getpid()
    known = {}

    def note(pid):
        if pid not in known:
            known[pid] = _cmdline(pid) or []
            report.write(json.dumps({"event": "child", "pid": pid, "argv": known[pid]}) + "\n")

    proc = subprocess.Popen(argv)
    note(proc.pid)
    report.write(json.dumps({"event": "started", "pid": proc.pid}) + "\n")
    # SIGTERM to the reaper (from the test's cleanup) reaches everything left.
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(p, signal.SIGKILL)
                                               for p in _children(me)])
    while True:
        for pid in _children(me):
            note(pid)
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.02)
            continue
        note(pid)
        report.write(json.dumps({"event": "exit", "pid": pid, "argv": known[pid],
                                 "status": os.waitstatus_to_exitcode(status),
                                 "command": pid == proc.pid}) + "\n")
    report.write(json.dumps({"event": "done"}) + "\n")


class Reaper:
    """One command under the subreaper script; see the module docstring.

    workdir: where the report and the command's output go.  env: the
    command's environment (default: ours)."""

    def __init__(self, argv, workdir, env=None, timeout=30):
        self.argv = list(argv)
        self.workdir = workdir
        self.env = env
        self.timeout = timeout
        self.report_path = os.path.join(workdir, "reaper-%d.jsonl" % id(self))
        self.output_path = os.path.join(workdir, "reaper-%d.out" % id(self))
        self.proc = None

    def start(self):
        with open(self.output_path, "wb") as out:
            self.proc = subprocess.Popen(
                [PYTHON, os.path.abspath(__file__), self.report_path, "--"] + self.argv,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env,
                start_new_session=True)
        return self

    def output(self):
        """What the command (and its descendants) wrote to stdout/stderr."""
        with open(self.output_path, errors="replace") as f:
            return f.read()

    def events(self):
        try:
            with open(self.report_path) as f:
                return [json.loads(line) for line in f if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def _poll(self, pred, timeout, what):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            res = pred(self.events())
            if res is not None:
                return res
            if time.monotonic() > deadline:
                raise AssertionError("%s: not within %ss; output:\n%s" % (
                    what, timeout or self.timeout, self.output()))
            time.sleep(0.05)

    def command_status(self, timeout=None):
        """Exit status of the command itself (not of what it left running)."""
        return self._poll(lambda ev: next((e["status"] for e in ev if e["event"] == "exit"
                                           and e["command"]), None),
                          timeout, "%s did not finish" % self.argv[0])

    def pids(self, name):
        """PIDs seen so far whose argv[0] ends with name."""
        return [e["pid"] for e in self.events() if e["event"] == "child" and e["argv"]
                and os.path.basename(e["argv"][0]) == name]

    def daemon_pid(self, name, timeout=None):
        """The PID of the last process named `name` still running (the daemon
        left behind by the command)."""
        def find(ev):
            ended = {e["pid"] for e in ev if e["event"] == "exit"}
            alive = [e["pid"] for e in ev if e["event"] == "child" and e["argv"]
                     and os.path.basename(e["argv"][0]) == name and e["pid"] not in ended]
            return alive[-1] if alive else None
        return self._poll(find, timeout, "no running %s" % name)

    def exit_status(self, pid, timeout=None):
        """Waits for pid (a descendant) to end; returns its exit status."""
        return self._poll(lambda ev: next((e["status"] for e in ev if e["event"] == "exit"
                                           and e["pid"] == pid), None),
                          timeout, "process %d did not exit" % pid)

    def close(self, mountpoint=None):
        """Cleanup: releases mountpoint if still mounted, then ends whatever
        is left (SIGTERM to the subreaper kills its descendants)."""
        from . import mount  # noqa: PLC0415 (harness import, also usable as a script)
        if mountpoint and mount.is_mounted(mountpoint):
            if mount.fusermount_u(mountpoint) != 0:
                mount.fusermount_u(mountpoint, lazy=True)
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=mount.EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if mountpoint and mount.is_mounted(mountpoint):
            mount.fusermount_u(mountpoint, lazy=True)
        self.proc = None


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: reaper.py REPORT -- COMMAND [ARG...]")
    _serve(sys.argv[1], sys.argv[3:])
