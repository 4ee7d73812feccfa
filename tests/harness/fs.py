"""Reading a mount with real tools, every access bounded by a timeout.

Tests never touch the mount from the pytest process itself: a hung daemon
would hang the whole run.  Shell tools (ls, cat, cp, find) run as
subprocesses, and system calls whose errno matters (open for writing,
unlink, rename, ...) run in a short-lived Python child that reports the
result as JSON.
"""

import json
import subprocess
import sys

from . import mount

PYTHON = "/usr/bin/python3"


def run(argv, timeout=None, check=True):
    """Runs argv with a timeout; returns CompletedProcess with bytes output.
    Raises AssertionError with stderr when check and it fails."""
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout or mount.ACCESS_TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (" ".join(argv), proc.returncode,
                                                       proc.stderr.decode(errors="replace")))
    return proc


def ls(path):
    """Names in a directory as `ls -A` shows them (dotfiles included)."""
    out = run(["ls", "-1A", path]).stdout.decode()
    return sorted(n for n in out.split("\n") if n)


def cat(path):
    """The bytes `cat` reads from path."""
    return run(["cat", path]).stdout


def cp(src, dst, recursive=False):
    """cp (cp -r for a tree) from the mount to dst."""
    run(["cp", "-r", src, dst] if recursive else ["cp", src, dst])


def find(path, kind=None):
    """Paths below path (relative), as `find` lists them, sorted.
    kind: "f" or "d" to keep only files or directories."""
    argv = ["find", path, "-mindepth", "1"] + (["-type", kind] if kind else [])
    argv += ["-printf", "%P\\n"]
    return sorted(p for p in run(argv).stdout.decode().split("\n") if p)


_CHILD = r"""
import errno, json, os, sys
op, args = sys.argv[1], sys.argv[2:]

def do():
    if op == "stat":
        s = os.stat(args[0])
        return {"size": s.st_size, "mtime": s.st_mtime, "mtime_ns": s.st_mtime_ns,
                "mode": s.st_mode, "nlink": s.st_nlink, "uid": s.st_uid, "gid": s.st_gid}
    if op == "open_write":
        os.close(os.open(args[0], os.O_WRONLY))
    elif op == "open_rdwr":
        os.close(os.open(args[0], os.O_RDWR))
    elif op == "append":
        os.close(os.open(args[0], os.O_WRONLY | os.O_APPEND))
    elif op == "create":
        os.close(os.open(args[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    elif op == "unlink":
        os.unlink(args[0])
    elif op == "rename":
        os.rename(args[0], args[1])
    elif op == "mkdir":
        os.mkdir(args[0])
    elif op == "rmdir":
        os.rmdir(args[0])
    elif op == "truncate":
        os.truncate(args[0], 0)
    elif op == "chmod":
        os.chmod(args[0], 0o644)
    elif op == "symlink":
        os.symlink(args[0], args[1])
    elif op == "listdir":
        return sorted(os.listdir(args[0]))
    elif op == "read":
        with open(args[0], "rb") as f:
            return len(f.read())
    elif op == "fsync":
        fd = os.open(args[0], os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        raise SystemExit("unknown op " + op)
    return None

try:
    print(json.dumps({"ok": True, "result": do()}))
except OSError as e:
    print(json.dumps({"ok": False, "errno": errno.errorcode.get(e.errno, str(e.errno))}))
"""


def syscall(op, *args, timeout=None):
    """Runs one file-system operation in a child process.

    Returns ("OK", result) or (errno name, None), e.g. ("EROFS", None).
    ops: stat, open_write, open_rdwr, append, create, unlink, rename,
    mkdir, rmdir, truncate, chmod, symlink, listdir, read, fsync."""
    proc = run([PYTHON, "-I", "-c", _CHILD, op] + list(args), timeout=timeout)
    res = json.loads(proc.stdout.decode())
    return ("OK", res["result"]) if res["ok"] else (res["errno"], None)


def stat(path):
    """os.stat of path in a child: dict with size, mtime, mtime_ns, mode,
    nlink, uid, gid.  Raises AssertionError if stat fails."""
    err, res = syscall("stat", path)
    if err != "OK":
        raise AssertionError("stat %s: %s" % (path, err))
    return res


if __name__ == "__main__":  # pragma: no cover - manual use
    print(syscall(*sys.argv[1:]))
