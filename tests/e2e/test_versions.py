"""Versions of a file (issue 7: no truncated or mixed file ever served).

A sync replaces a file's bytes while some reader still has the old version
open.  The kernel keeps a file's attributes per inode, so each version of
a file is its own inode (FUSE node id): the open file goes on answering
fstat() with the size of the bytes it reads, however often other processes
look at the path, and the next open of the path gets the new bytes under a
new st_ino.  Also here: directory offsets stay valid while the listing
changes under an open directory.
"""

import datetime
import json
import mmap
import os
import subprocess

import icalendar
import pytest

from harness import fs, mount, stress

MAILBOX = "Calendars.V"
BASE = datetime.datetime(2026, 6, 1, 9, 0, tzinfo=datetime.timezone.utc)


def uid(n):
    return "v-%02d@versions.example.org" % n


def invitation(n, summary=None, sequence=0):
    return stress.calendar_message(uid(n), summary or "Versions meeting %d" % n,
                                   BASE + datetime.timedelta(days=n), sequence=sequence)


def summaries(data):
    cal = icalendar.Calendar.from_ical(data)
    return sorted(str(e["SUMMARY"]) for e in cal.walk("VEVENT"))


# Opens each path, reports (st_size, st_ino, bytes) of what it opened, then
# on "go" fstat()s and preads every open file in a tight loop until a line
# arrives on stdin, counting every answer that is not the opened version.
_HOLDER = r"""
import hashlib, json, os, select, sys
fds = [os.open(p, os.O_RDONLY) for p in sys.argv[1:]]
opened = []
for fd in fds:
    st = os.fstat(fd)
    opened.append((st.st_size, st.st_ino, os.pread(fd, st.st_size + 65536, 0)))
print(json.dumps([{"size": s, "ino": i, "len": len(d), "sha": hashlib.sha256(d).hexdigest()}
                  for s, i, d in opened]), flush=True)
sys.stdin.readline()
loops = bad_size = bad_ino = bad_bytes = 0
while True:
    for fd, (size, ino, data) in zip(fds, opened):
        st = os.fstat(fd)
        bad_size += st.st_size != size
        bad_ino += st.st_ino != ino
        bad_bytes += os.pread(fd, size + 65536, 0) != data
    loops += 1
    if loops % 8 == 0 and select.select([sys.stdin], [], [], 0)[0]:
        break
print(json.dumps({"loops": loops, "bad_size": bad_size, "bad_ino": bad_ino,
                  "bad_bytes": bad_bytes}), flush=True)
"""

# stat()s the paths in a loop until each has shown a size other than its old
# one, then for `extra` more rounds; reports the rounds and the sizes seen.
_STATTER = r"""
import json, os, sys, time
old, extra, deadline = json.loads(sys.argv[1]), int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
seen = {p: set() for p in old}
rounds, after = 0, 0
while time.monotonic() < deadline and after < extra:
    for p in old:
        seen[p].add(os.stat(p).st_size)
    rounds += 1
    if all(s - {old[p]} for p, s in seen.items()):
        after += 1
print(json.dumps({"rounds": rounds, "after": after,
                  "seen": {p: sorted(s) for p, s in seen.items()}}), flush=True)
"""

# A fresh open: st_size, st_ino and the bytes.
_OPEN = r"""
import json, os, sys
out = []
for p in sys.argv[1:]:
    with open(p, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    out.append({"size": st.st_size, "ino": st.st_ino, "data": data.decode()})
print(json.dumps(out))
"""


def child(script, *args):
    return subprocess.Popen([stress.PYTHON, "-I", "-c", script] + [str(a) for a in args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def read_json_line(proc):
    line = proc.stdout.readline()
    assert line, "child failed: %s" % proc.stderr.read().decode(errors="replace")
    return json.loads(line)


@pytest.fixture
def versions_server(dovecot_factory):
    dv = dovecot_factory.start()
    for n in range(3):
        dv.add_message(MAILBOX, invitation(n))
    return dv


def test_open_file_keeps_its_version_while_others_see_the_new_one(versions_server, mounter):
    """Open the old versions, change the mailbox (an update that lengthens
    an event, a new event), and while another process stats the paths
    (ttl=0: every lookup syncs) fstat and read the open files in a tight
    loop: they always give the old size and the old bytes.  A fresh open
    then gets the new bytes, its fstat their size, under a new st_ino."""
    dv = versions_server
    m = mounter.mount(dv, options=["ttl=0"])
    rels = ["Calendars/V/%s.ics" % uid(1), "Calendars/V/merged.ics", "merged.ics"]
    paths = [m.path(r) for r in rels]
    for p in paths:
        fs.cat(p)
    holder = child(_HOLDER, *paths)
    try:
        opened = read_json_line(holder)
        assert all(o["size"] == o["len"] for o in opened), opened
        dv.add_message(MAILBOX, invitation(1, "Versions meeting 1, moved to a longer name",
                                           sequence=1))
        dv.add_message(MAILBOX, invitation(3))
        holder.stdin.write(b"go\n")
        holder.stdin.flush()
        old = {p: o["size"] for p, o in zip(paths, opened)}
        statter = child(_STATTER, json.dumps(old), 300, 120 * mount.slow_factor())
        out, err = statter.communicate(timeout=180 * mount.slow_factor())
        assert statter.returncode == 0, err.decode(errors="replace")
        stats = json.loads(out)
        holder.stdin.write(b"stop\n")
        holder.stdin.flush()
        held = read_json_line(holder)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(30)
    assert stats["after"] >= 300, "the paths never showed a new size: %s" % stats
    # Something to race against: many rounds of stat and of fstat+read.
    assert held["loops"] > 100, held
    assert (held["bad_size"], held["bad_ino"], held["bad_bytes"]) == (0, 0, 0), \
        "an open file did not keep its version: %s (others: %d stat rounds)" % (
            held, stats["rounds"])

    proc = fs.run([stress.PYTHON, "-I", "-c", _OPEN] + paths)
    fresh = json.loads(proc.stdout)
    for rel, before, now in zip(rels, opened, fresh):
        assert now["size"] == len(now["data"].encode()), rel
        assert now["size"] != before["size"], rel
        assert now["ino"] != before["ino"], "%s: the new version kept st_ino" % rel
    assert summaries(fresh[0]["data"]) == ["Versions meeting 1, moved to a longer name"]
    assert "Versions meeting 3" in summaries(fresh[1]["data"])
    assert "Versions meeting 3" in summaries(fresh[2]["data"])


def test_unchanged_file_keeps_its_inode(versions_server, mounter):
    """A sync that leaves a file's bytes alone leaves its st_ino alone."""
    dv = versions_server
    m = mounter.mount(dv, options=["ttl=0"])
    event = m.path("Calendars", "V", uid(0) + ".ics")
    (before,) = json.loads(fs.run([stress.PYTHON, "-I", "-c", _OPEN, event]).stdout)
    dv.add_message(MAILBOX, invitation(4))
    assert "%s.ics" % uid(4) in fs.ls(m.path("Calendars", "V"))
    (after,) = json.loads(fs.run([stress.PYTHON, "-I", "-c", _OPEN, event]).stdout)
    assert after == before


def daemon_bytes_written(m):
    """What the daemon has written so far (its replies to the kernel among it)."""
    with open("/proc/%d/io" % m.proc.pid) as f:
        return int(next(line for line in f if line.startswith("wchar:")).split()[1])


def test_second_read_comes_from_the_page_cache(versions_server, mounter):
    """A file's node is one version of its bytes, so the kernel keeps them
    in its page cache across opens: reading a file again sends no read to
    the daemon (its writes, which carry every reply, grow by far less than
    the file), and gives the same bytes."""
    dv = versions_server
    for n in range(10, 40):
        dv.add_message(MAILBOX, invitation(n))
    m = mounter.mount(dv)
    for rel in ("merged.ics", "Calendars/V/merged.ics"):
        first = fs.cat(m.path(rel))
        assert len(first) > 2000, rel
        # The sync the first read set off may still drop what it cached.
        assert fs.cat(m.path(rel)) == first
        before = daemon_bytes_written(m)
        assert fs.cat(m.path(rel)) == first and fs.cat(m.path(rel)) == first
        grew = daemon_bytes_written(m) - before
        assert grew < len(first) // 2, "%s: %d bytes, the daemon wrote %d more" % (
            rel, len(first), grew)


def test_mmap_reads_the_same_bytes(versions_server, mounter):
    """Files can be mapped (page cache, no direct I/O): the mapping holds
    what read() gives."""
    m = mounter.mount(versions_server)
    for rel in ("merged.ics", "Calendars/V/%s.ics" % uid(1)):
        data = fs.cat(m.path(rel))
        with open(m.path(rel), "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[:] == data, rel


# Reads a directory with getdents64 into a small buffer: one batch, then
# (after a line on stdin) the rest. Prints each part's names as JSON.
_GETDENTS = r"""
import ctypes, json, os, sys
SYS_getdents64 = {"x86_64": 217, "aarch64": 61}[os.uname().machine]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
buf = ctypes.create_string_buffer(int(sys.argv[2]))

def batch():
    n = libc.syscall(SYS_getdents64, fd, buf, len(buf))
    if n < 0:
        raise OSError(ctypes.get_errno(), "getdents64")
    raw, names, pos = buf.raw[:n], [], 0
    while pos < n:
        reclen = int.from_bytes(raw[pos + 16:pos + 18], "little")
        names.append(raw[pos + 19:pos + reclen].split(b"\0", 1)[0].decode())
        pos += reclen
    return names

print(json.dumps(batch()), flush=True)
sys.stdin.readline()
rest = []
while True:
    b = batch()
    if not b:
        break
    rest += b
print(json.dumps(rest), flush=True)
"""


def test_directory_offsets_stay_valid_while_the_listing_changes(dovecot_factory, mounter):
    """An open directory read in small batches: new events arrive (their
    names sort first) and a sync runs between two batches; the whole read
    is the listing as it was at the start, each name once."""
    dv = dovecot_factory.start()
    for n in range(10, 40):
        dv.add_message(MAILBOX, invitation(n))
    m = mounter.mount(dv)
    box = m.path("Calendars", "V")
    start = fs.ls(box)
    reader = child(_GETDENTS, box, 512)
    try:
        first = read_json_line(reader)
        for n in range(0, 5):
            dv.add_message(MAILBOX, invitation(n))
        fs.cat(os.path.join(box, ".refresh"))
        assert "%s.ics" % uid(0) in fs.ls(box)
        reader.stdin.write(b"\n")
        reader.stdin.flush()
        rest = read_json_line(reader)
    finally:
        if reader.poll() is None:
            reader.kill()
        reader.wait(30)
    assert 2 < len(first) < len(start), "the first batch should hold part of the listing"
    names = [n for n in first + rest if n not in (".", "..")]
    assert len(names) == len(set(names)), "a name came twice"
    assert sorted(names) == start
