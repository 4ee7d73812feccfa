"""Laziness and the persistent cache (issue 4, SPEC §4), measured on the
wire: Dovecot's rawlog records every command imapcalfs sends and every byte
it receives, so the tests count LIST/EXAMINE/BODYSTRUCTURE/BODY.PEEK and
bytes instead of trusting the daemon's own account.  Mailboxes where most
messages carry a 300 KB PDF next to a small invitation show that only the
calendar parts travel.  Each test uses an account of its own, so its
rawlog holds only its own sessions."""

import datetime
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from harness import cachedir, calcheck, fs, mailgen, mount, wire
from harness.mailgen import utc

USERS = ("lazy", "bytes", "flags", "perms", "remount", "corrupt", "listing", "validity",
         "nodisk", "crash")
PDF_SIZE = 300 * 1024


@pytest.fixture(scope="module")
def server(dovecot_factory):
    """One Dovecot with rawlog and an account per test."""
    return dovecot_factory.start(rawlog=True, users=USERS)


AGENDA = ("Agenda: status of the work packages\\, risks and mitigations\\, budget "
          "until the end of the quarter\\, hiring\\, and anything else that came up since "
          "last time.\\n\\nJoin online: https://meet.example.org/j/0123456789?pwd=abcdef"
          "\\nOr by phone: +49 30 1234567 (PIN 9876)\\n\\nPlease read the minutes of "
          "the last meeting before you come and bring your numbers.\\n")


def event_ics(i, sequence=0):
    """A realistic invitation (time zone, description, attendees), ~2.5 KB."""
    start = datetime.datetime(2026, 4, 1 + i % 28, 9 + i % 8, 0)
    ev = mailgen.vevent(
        "cache-%03d@example.org" % i, "Project meeting %d" % i, start,
        start + datetime.timedelta(minutes=45), tzid="Europe/Berlin", sequence=sequence,
        description="Meeting %d. " % i + AGENDA * 3,
        location="Room %d / https://meet.example.org/room-%d" % (i, i),
        attendees=["mailto:alice@example.org", "mailto:bob@example.org",
                   "mailto:carol@example.org"])
    return mailgen.vcalendar(ev, timezones=[mailgen.BERLIN_VTIMEZONE])


def big_mailbox(n=20, with_pdf=16, start=0):
    """[(raw message, INTERNALDATE)] and the sum of the calendar parts'
    sizes as stored (encoded).  Two shapes, so parts sit at two sections:
    multipart/mixed [alternative [plain, calendar], pdf] (section 1.2) and
    multipart/mixed [plain, pdf, invite.ics in base64] (section 3)."""
    msgs, cal_bytes = [], 0
    for i in range(start, start + n):
        ics = event_ics(i)
        pdf = [mailgen.attachment(PDF_SIZE, seed=i)] if i - start < with_pdf else []
        if i % 2 == 0:
            cal = mailgen.calendar_part(ics, encoding="quoted-printable")
            body = mailgen.multipart("mixed", mailgen.multipart("alternative", mailgen.text(), cal),
                                     *pdf)
        else:
            cal = mailgen.calendar_part(ics, encoding="base64", ctype="application/ics",
                                        filename="invite.ics")
            body = mailgen.multipart("mixed", mailgen.text(), *(pdf or [mailgen.text("x")]), cal)
        cal_bytes += len(cal.body)
        msgs.append((mailgen.message(body, subject="Meeting %d" % i),
                     utc(2026, 3, 1 + i % 28, 12, 0, i % 60)))
    return msgs, cal_bytes


def fill(dv, user, mailbox, msgs, flags=None):
    return [dv.add_message(mailbox, raw, internaldate=when, user=user,
                           flags=flags[i] if flags else None)
            for i, (raw, when) in enumerate(msgs)]


def mount_as(mounter, dv, user, options=(), **kw):
    return mounter.mount(dv, source=dv.url(user=user), password=dv.passwords[user],
                         options=list(options), **kw)


def read_all(m):
    """Reads every file of the mount the way a backup would."""
    return calcheck.read_tree(m.mountpoint)


def finished_sessions(dv, user, since):
    """imapcalfs's sessions of user since the mark, once Dovecot closed
    them all (call after the mount is stopped)."""
    raw = wire.Rawlog(dv, user)
    wire.wait_closed(dv, raw.sessions(since), user=user)
    return raw.sessions(since)


def commands(sessions):
    return [c for s in sessions for c in s.commands]


def cache_root(m):
    """The default cache directory of a mount: $XDG_CACHE_HOME/imapcalfs."""
    return os.path.join(m.env["XDG_CACHE_HOME"], "imapcalfs")


# ---- laziness -----------------------------------------------------------------

def test_mount_logs_in_only_and_listing_is_one_fetch_then_batched_peeks(server, mounter):
    dv, user = server, "lazy"
    msgs, _ = big_mailbox(n=12, with_pdf=0)
    uids = fill(dv, user, "Box1", msgs)
    fill(dv, user, "Box2", big_mailbox(n=2, with_pdf=0, start=50)[0])
    raw = wire.Rawlog(dv, user)
    since = raw.mark()
    m = wire.start_untouched(mount_as(mounter, dv, user, start=False))
    # Nothing may happen until someone looks: give an eager daemon the
    # chance to misbehave before the first access.
    time.sleep(1.0)
    t_root = time.time()
    # The root's attributes need the mailbox list, nothing more.  (Listing
    # the root would sync every mailbox: merged.ics there has an exact size.)
    fs.stat(m.mountpoint)
    t_box = time.time()
    names = fs.ls(m.path("Box1"))
    assert len(names) == 13
    for n in names:
        fs.cat(m.path("Box1", n))
    assert m.stop() == 0, m.stderr()
    cmds = commands(finished_sessions(dv, user, since))
    early = [c for c in cmds if c.when < t_root]
    assert not [c for c in early if re.match(r"(LIST|LSUB|EXAMINE|SELECT|STATUS|UID|FETCH)",
                                             c.text, re.I)], early
    at_root = [c for c in cmds if t_root <= c.when < t_box]
    assert [c for c in at_root if c.text.upper().startswith("LIST")], at_root
    assert not [c for c in at_root if re.match(r"(EXAMINE|SELECT|STATUS|UID|FETCH)", c.text,
                                               re.I)], at_root
    late = [c for c in cmds if c.when >= t_box]
    assert not [c for c in cmds if c.text.upper().startswith("SELECT")]
    assert [c for c in late if re.match(r'EXAMINE "?Box1"?', c.text, re.I)]
    assert not [c for c in cmds if "Box2" in c.text]
    structure = [c for c in late if "BODYSTRUCTURE" in c.text.upper()]
    assert len(structure) == 1, structure
    assert re.match(r"UID FETCH 1:\* \(", structure[0].text, re.I), structure
    peeks = wire.body_peeks(late)
    assert 1 <= len(peeks) <= 2, peeks  # one command per section, not per message
    assert set().union(*[u for u, _ in peeks]) == set(uids)
    assert {s for _, secs in peeks for s in secs} == {"1.2", "3"}
    assert not wire.whole_message_fetches(cmds)


def test_full_read_downloads_calendar_parts_not_attachments(server, mounter):
    dv, user = server, "bytes"
    msgs, cal_bytes = big_mailbox(n=20, with_pdf=16)
    fill(dv, user, "Big", msgs)
    raw = wire.Rawlog(dv, user)
    since = raw.mark()
    m = mount_as(mounter, dv, user, options=["mailboxes=Big"])
    tree = read_all(m)
    assert len(tree) == 22  # 20 events, Big/merged.ics, merged.ics
    assert m.stop() == 0, m.stderr()
    sessions = finished_sessions(dv, user, since)
    received = sum(s.bytes_received() for s in sessions)
    structure = sum(len(line) + 2 for s in sessions for line in s.fetch_responses(b"BODYSTRUCTURE"))
    limit = 1.1 * cal_bytes + structure
    print("bytes received %d, calendar parts %d, BODYSTRUCTURE responses %d, limit %d, "
          "mail stored %d" % (received, cal_bytes, structure, limit,
                              sum(len(r) for r, _ in msgs)))
    assert received <= limit, (received, cal_bytes, structure)
    # Dovecot's own count at disconnect says the same.
    counted = wire.wait_closed(dv, sessions, user=user)
    assert sum(out for _, out in counted.values()) <= limit + 1024 * len(sessions)
    assert not wire.whole_message_fetches(commands(sessions))


def test_flags_identical_after_reading_everything(server, mounter, tmp_path):
    dv, user = server, "flags"
    msgs, _ = big_mailbox(n=8, with_pdf=2)
    flags = [None, [r"\Seen"], [r"\Flagged"], ["$Label1"], [r"\Answered", r"\Seen"], None,
             [r"\Draft"], None]
    fill(dv, user, "Flagged", msgs, flags=flags)
    before = dv.flags("Flagged", user=user)
    assert sum(1 for f in before.values() if r"\Seen" in f) == 2
    m = mount_as(mounter, dv, user)
    read_all(m)
    fs.cp(m.mountpoint, str(tmp_path / "copy"), recursive=True)
    fs.cat(m.path(".status"))
    fs.cat(m.path(".refresh"))
    assert m.stop() == 0, m.stderr()
    assert dv.flags("Flagged", user=user) == before


# ---- the cache on disk ----------------------------------------------------------

def test_cache_private_dirs_0700_files_0600_no_password(server, mounter, workroot):
    dv, user = server, "perms"
    fill(dv, user, "Perms", big_mailbox(n=4, with_pdf=0)[0])
    m = mount_as(mounter, dv, user)
    read_all(m)
    root = cache_root(m)
    files = cachedir.files(root)
    assert len(cachedir.part_entries(root)) == 4  # four parts, in packs
    assert [p for p in files if os.path.basename(p) == "listing"]
    for d, _, names in os.walk(root):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
        for n in names:
            p = os.path.join(d, n)
            assert stat.S_IMODE(os.lstat(p).st_mode) == 0o600, p
            assert stat.S_ISREG(os.lstat(p).st_mode), p
    password = dv.passwords[user].encode()
    assert not [p for p, data in files.items() if password in data]
    # An explicit cache_dir that others could read is made private.
    explicit = os.path.join(workroot, "perms-cache")
    os.makedirs(explicit, mode=0o755, exist_ok=True)
    os.chmod(explicit, 0o755)
    m2 = mount_as(mounter, dv, user, options=["cache_dir=" + explicit])
    read_all(m2)
    assert stat.S_IMODE(os.stat(explicit).st_mode) == 0o700
    assert cachedir.part_entries(explicit)


def test_remount_with_server_unchanged_downloads_nothing_again(server, mounter, workroot):
    dv, user = server, "remount"
    uids = fill(dv, user, "Again", big_mailbox(n=10, with_pdf=3)[0])
    cache = os.path.join(workroot, "remount-cache")
    opts = ["cache_dir=" + cache, "mailboxes=Again"]
    first = mount_as(mounter, dv, user, options=opts)
    tree1 = read_all(first)
    assert first.stop() == 0, first.stderr()
    raw = wire.Rawlog(dv, user)
    since = raw.mark()
    second = mount_as(mounter, dv, user, options=opts)
    assert read_all(second) == tree1
    assert second.stop() == 0, second.stderr()
    cmds = commands(finished_sessions(dv, user, since))
    assert [c for c in cmds if c.text.upper().startswith("EXAMINE")]
    assert not wire.body_peeks(cmds), cmds
    assert not [c for c in cmds if "BODYSTRUCTURE" in c.text.upper()], cmds
    # One new message: only its structure and its part are asked for.
    new_msgs, _ = big_mailbox(n=1, with_pdf=1, start=40)
    new_uid = fill(dv, user, "Again", new_msgs)[0]
    since = raw.mark()
    third = mount_as(mounter, dv, user, options=opts)
    tree3 = read_all(third)
    assert "Again/cache-040@example.org.ics" in tree3
    assert third.stop() == 0, third.stderr()
    cmds = commands(finished_sessions(dv, user, since))
    assert set().union(*[u for u, _ in wire.body_peeks(cmds)]) == {new_uid}
    for c in cmds:
        if "BODYSTRUCTURE" in c.text.upper():
            assert wire.parse_uid_set(c.text.split()[2]) == {new_uid}, c
    assert new_uid not in uids


def _flip_payload_byte(path):
    with open(path, "r+b") as f:  # one payload byte changed, length intact
        data = f.read()
        f.seek(len(data) - 10)
        f.write(bytes([data[-10] ^ 0x20]))


def _cut_payload(path):
    with open(path, "r+b") as f:  # cut in the middle of the payload
        f.truncate(os.path.getsize(path) // 2)


def _cut_header(path):
    with open(path, "r+b") as f:  # cut inside the header
        f.truncate(10)


@pytest.mark.parametrize("damage", [_flip_payload_byte, _cut_payload, _cut_header],
                         ids=["flipped-byte", "cut-payload", "cut-header"])
def test_damaged_cache_entries_detected_and_fetched_again(server, mounter, workroot, damage):
    dv, user = server, "corrupt"
    box = "Damaged" + damage.__name__.replace("_", "")
    uids = fill(dv, user, box, big_mailbox(n=8, with_pdf=2)[0])
    cache = os.path.join(workroot, "corrupt-cache-" + box)
    opts = ["cache_dir=" + cache, "mailboxes=" + box]
    first = mount_as(mounter, dv, user, options=opts)
    tree1 = read_all(first)
    assert first.stop() == 0, first.stderr()
    entries = cachedir.part_entries(cache)
    assert set(u for u, _ in entries) == set(uids)
    # One sync fetched them all: they share one pack, which is damaged whole,
    # and so is the pack of their parsed versions (else those would serve).
    [pack] = cachedir.packs(cache)
    [versions] = cachedir.version_packs(cache)
    damage(pack)
    damage(versions)
    raw = wire.Rawlog(dv, user)
    since = raw.mark()
    second = mount_as(mounter, dv, user, options=opts)
    assert read_all(second) == tree1
    assert second.stop() == 0, second.stderr()
    cmds = commands(finished_sessions(dv, user, since))
    refetched = set().union(*[u for u, _ in wire.body_peeks(cmds)])
    assert refetched == set(uids)
    assert not cachedir.damaged(cache)
    assert set(u for u, _ in cachedir.part_entries(cache)) == set(uids)


def test_damaged_versions_pack_is_parsed_again_from_cached_parts(server, mounter, workroot):
    dv, user = server, "corrupt"
    fill(dv, user, "VersionsDamaged", big_mailbox(n=6, with_pdf=1)[0])
    cache = os.path.join(workroot, "corrupt-versions-cache")
    opts = ["cache_dir=" + cache, "mailboxes=VersionsDamaged"]
    first = mount_as(mounter, dv, user, options=opts)
    tree1 = read_all(first)
    assert first.stop() == 0, first.stderr()
    [versions] = cachedir.version_packs(cache)
    _flip_payload_byte(versions)
    raw = wire.Rawlog(dv, user)
    since = raw.mark()
    second = mount_as(mounter, dv, user, options=opts)
    assert read_all(second) == tree1
    assert second.stop() == 0, second.stderr()
    # The parts were still whole: nothing was fetched again, only parsed.
    assert not wire.body_peeks(commands(finished_sessions(dv, user, since)))
    assert not cachedir.damaged(cache)
    assert len(cachedir.version_packs(cache)) == 1


def test_damaged_listing_entry_means_listing_again(server, mounter, workroot):
    dv, user = server, "listing"
    fill(dv, user, "Listed", big_mailbox(n=5, with_pdf=0)[0])
    cache = os.path.join(workroot, "listing-cache")
    opts = ["cache_dir=" + cache]
    first = mount_as(mounter, dv, user, options=opts)
    tree1 = read_all(first)
    assert first.stop() == 0, first.stderr()
    listings = [p for p in cachedir.files(cache) if os.path.basename(p) == "listing"]
    assert listings
    for p in listings:
        with open(p, "r+b") as f:
            f.seek(60)
            f.write(b"\xff\xff\xff\xff")
    raw = wire.Rawlog(dv, user)
    since = raw.mark()
    second = mount_as(mounter, dv, user, options=opts)
    assert read_all(second) == tree1
    assert second.stop() == 0, second.stderr()
    cmds = commands(finished_sessions(dv, user, since))
    assert [c for c in cmds if re.match(r"UID FETCH 1:\* .*BODYSTRUCTURE", c.text, re.I)]
    assert not wire.body_peeks(cmds)  # the parts themselves were still good
    for p in listings:
        with open(p, "rb") as f:
            assert cachedir.entry_ok(f.read(), cachedir.LISTING), p


def replace_mailbox(dv, user, mailbox, raw, validity):
    """What a server rebuild does: the mailbox is made anew, its messages
    get UIDs from 1 again, and UIDVALIDITY changes."""
    dv.doveadm("mailbox", "delete", "-u", user, mailbox)
    uid = dv.add_message(mailbox, raw, internaldate=utc(2026, 2, 1, 12), user=user)
    dv.set_uidvalidity(mailbox, validity, user=user)
    assert dv.uidvalidity(mailbox, user=user) == validity
    return uid


def single(uid, summary):
    start = utc(2026, 5, 5, 10)
    ics = mailgen.vcalendar(mailgen.vevent(uid, summary, start,
                                           start + datetime.timedelta(hours=1)))
    return mailgen.invitation(ics, subject=summary)


def test_uidvalidity_change_drops_cache_and_shows_new_content(server, mounter, workroot):
    dv, user = server, "validity"
    old_uid = dv.add_message("V", single("before@example.org", "Before the rebuild"),
                             internaldate=utc(2026, 2, 1, 12), user=user)
    old_validity = dv.uidvalidity("V", user=user)
    cache = os.path.join(workroot, "validity-cache")
    opts = ["cache_dir=" + cache, "mailboxes=V"]
    first = mount_as(mounter, dv, user, options=opts)
    assert fs.ls(first.path("V")) == ["before@example.org.ics", "merged.ics"]
    assert first.stop() == 0, first.stderr()
    assert cachedir.uidvalidity_dirs(cache) == [str(old_validity)]
    # Same UID, other message, other UIDVALIDITY.
    new_uid = replace_mailbox(dv, user, "V", single("after@example.org", "After the rebuild"),
                              old_validity + 1000)
    assert new_uid == old_uid
    second = mount_as(mounter, dv, user, options=opts + ["ttl=1"])
    assert fs.ls(second.path("V")) == ["after@example.org.ics", "merged.ics"]
    assert b"After the rebuild" in fs.cat(second.path("V", "after@example.org.ics"))
    assert b"Before" not in fs.cat(second.path("merged.ics"))
    assert cachedir.uidvalidity_dirs(cache) == [str(old_validity + 1000)]
    # While mounted, too.
    replace_mailbox(dv, user, "V", single("again@example.org", "Second rebuild"),
                    old_validity + 2000)
    deadline = time.monotonic() + 30 * mount.slow_factor()
    while fs.ls(second.path("V")) != ["again@example.org.ics", "merged.ics"]:
        assert time.monotonic() < deadline, fs.ls(second.path("V"))
        time.sleep(0.2)
    assert b"Second rebuild" in fs.cat(second.path("V", "merged.ics"))
    assert b"After the rebuild" not in fs.cat(second.path("V", "merged.ics"))
    assert cachedir.uidvalidity_dirs(cache) == [str(old_validity + 2000)]


def test_no_disk_cache_writes_nothing_and_fetches_again(server, mounter):
    dv, user = server, "nodisk"
    fill(dv, user, "Mem", big_mailbox(n=4, with_pdf=1)[0])
    raw = wire.Rawlog(dv, user)
    results = []
    for _ in range(2):
        since = raw.mark()
        m = mount_as(mounter, dv, user, options=["no_disk_cache"])
        results.append(read_all(m))
        assert m.stop() == 0, m.stderr()
        created = sorted(os.listdir(m.workdir))
        assert created == ["imapcalfs.stderr", "mnt"], created
        assert os.listdir(m.mountpoint) == []
        peeks = wire.body_peeks(commands(finished_sessions(dv, user, since)))
        assert len(set().union(*[u for u, _ in peeks])) == 4
    assert results[0] == results[1]


def test_kill_during_fetch_leaves_no_damaged_entry(server, mounter, workroot):
    dv, user = server, "crash"
    fill(dv, user, "Crash", big_mailbox(n=30, with_pdf=4)[0])
    cache = os.path.join(workroot, "crash-cache")
    opts = ["cache_dir=" + cache, "mailboxes=Crash"]
    m = mount_as(mounter, dv, user, options=opts)
    reader = subprocess.Popen(["find", m.mountpoint, "-type", "f", "-exec", "cat", "{}", "+"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30 * mount.slow_factor()
        while not cachedir.part_entries(cache) and time.monotonic() < deadline:
            time.sleep(0.005)
        m.signal(signal.SIGKILL)
        # The reader goes first: a daemon thread may be inside the kernel
        # invalidating an entry of the directory find is reading, waiting for
        # that directory's lock, which find holds until its request is
        # answered (a fatal signal to find releases it).
        reader.kill()
        reader.wait()
        m.wait()
    finally:
        reader.kill()
        reader.wait()
        m.stop()
    assert not cachedir.damaged(cache)
    again = mount_as(mounter, dv, user, options=opts)
    fresh = mount_as(mounter, dv, user, options=["no_disk_cache", "mailboxes=Crash"])
    assert read_all(again) == read_all(fresh)
    assert len(fs.ls(again.path("Crash"))) == 31
