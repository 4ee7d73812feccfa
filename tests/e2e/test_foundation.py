"""Acceptance tests of the first end-to-end mount (issue 2), on the scenario
of the original mailbox2ics article: Calendars.Alice holds two invitations,
Calendars.Bob one, INBOX a mail without calendar data.  The mount is read
with real tools (ls, cat, cp, find, stat) and every calendar is checked
with an independent parser (python3-icalendar)."""

import os
import re
import signal
import stat
import urllib.parse

import icalendar
import pytest

from harness import dovecot as dvmod
from harness import fs, mount, scenario

ALICE = scenario.events_in(scenario.MAILBOX2ICS, "Calendars.Alice")
BOB = scenario.events_in(scenario.MAILBOX2ICS, "Calendars.Bob")
ALL = ALICE + BOB
MAILBOXES = {"Calendars.Alice": ("Calendars", "Alice"), "Calendars.Bob": ("Calendars", "Bob")}


@pytest.fixture(scope="module")
def mail(dovecot_server):
    """The scenario's Dovecot, filled; returns (server, {file: IMAP UID})."""
    return dovecot_server, scenario.fill(dovecot_server, scenario.MAILBOX2ICS)


@pytest.fixture
def mnt(mail, mounter):
    """A fresh imaps:// mount of the scenario account."""
    return mounter.mount(mail[0])


def one_calendar(data):
    """Parses data; asserts it is exactly one VCALENDAR and returns it."""
    cals = icalendar.Calendar.from_ical(data, multiple=True)
    assert len(cals) == 1, "expected one VCALENDAR, got %d" % len(cals)
    assert cals[0].name == "VCALENDAR"
    return cals[0]


def events(cal):
    """Sorted (UID, SUMMARY) of the VEVENTs of cal."""
    return sorted((str(e["UID"]), str(e["SUMMARY"])) for e in cal.walk("VEVENT"))


def tzids_used(data):
    """TZID parameters used by properties (not the VTIMEZONEs' own TZID)."""
    text = re.sub(r"\r?\n[ \t]", "", data.decode())
    return set(m.group(2) for m in
               re.finditer(r'^[A-Z-]+;(?:[^:\n]*;)?TZID=("?)([^";:\n]+)\1', text, re.M))


def check_feed_header(cal):
    """What every file imapcalfs writes has (SPEC §2)."""
    assert str(cal["VERSION"]) == "2.0"
    assert "PRODID" in cal and str(cal["PRODID"])
    assert "METHOD" not in cal


def check_timezones(data, cal):
    """Exactly one VTIMEZONE per TZID used, and none unused."""
    vtz = sorted(str(t["TZID"]) for t in cal.walk("VTIMEZONE"))
    assert vtz == sorted(tzids_used(data))


def one_line(err):
    """Asserts stderr is one non-empty line; returns it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, "expected one line on stderr, got:\n" + err
    return lines[0]


def test_root_lists_mailbox_dirs_and_merged(mnt):
    assert fs.ls(mnt.mountpoint) == ["Calendars", "INBOX", "merged.ics"]
    inside = set(fs.ls(mnt.path("Calendars")))
    assert {"Alice", "Bob"} <= inside <= {"Alice", "Bob", "merged.ics"}
    for d in ("Calendars", "Calendars/Alice", "Calendars/Bob", "INBOX"):
        assert stat.S_ISDIR(fs.stat(mnt.path(d))["mode"]), d
        assert not [n for n in fs.ls(mnt.path(d)) if n.startswith(".")], d
    assert stat.S_ISREG(fs.stat(mnt.path("merged.ics"))["mode"])


def test_root_merged_has_exactly_three_events(mnt):
    data = fs.cat(mnt.path("merged.ics"))
    cal = one_calendar(data)
    check_feed_header(cal)
    assert events(cal) == sorted(ALL)
    check_timezones(data, cal)
    assert tzids_used(data) == {"America/New_York"}


def test_mailbox_merged_has_own_events(mnt):
    for parts, expected in ((("Calendars", "Alice"), ALICE), (("Calendars", "Bob"), BOB)):
        data = fs.cat(mnt.path(*parts, "merged.ics"))
        cal = one_calendar(data)
        check_feed_header(cal)
        assert events(cal) == sorted(expected), parts
        check_timezones(data, cal)


def test_each_event_has_its_own_file(mnt, tmp_path):
    for mbox, expected in (("Calendars.Alice", ALICE), ("Calendars.Bob", BOB)):
        d = mnt.path(*MAILBOXES[mbox])
        names = [n for n in fs.ls(d) if n != "merged.ics"]
        assert names == sorted(uid + ".ics" for uid, _ in expected)
        copy = tmp_path / mbox
        fs.cp(d, str(copy), recursive=True)
        for uid, summary in expected:
            data = fs.cat(os.path.join(d, uid + ".ics"))
            cal = one_calendar(data)
            check_feed_header(cal)
            assert str(cal.get("CALSCALE", "")).upper() == "GREGORIAN"
            assert events(cal) == [(uid, summary)]
            check_timezones(data, cal)
            assert (copy / (uid + ".ics")).read_bytes() == data
            single = tmp_path / ("single-" + uid + ".ics")
            fs.cp(os.path.join(d, uid + ".ics"), str(single))
            assert single.read_bytes() == data


def test_message_without_calendar_makes_no_file(mnt):
    assert fs.ls(mnt.path("INBOX")) == ["merged.ics"]
    cal = one_calendar(fs.cat(mnt.path("INBOX", "merged.ics")))
    check_feed_header(cal)
    assert events(cal) == []


def test_event_carries_source_url(mail, mnt):
    dv, uids = mail
    validity = {mbox: dv.uidvalidity(mbox) for mbox in MAILBOXES}
    where = {ev[0]: (s.mailbox, uids[s.file]) for s in scenario.MAILBOX2ICS for ev in s.events}
    url_re = re.compile(r"^imap://[^/]+/(?P<mbox>[^;/]+);UIDVALIDITY=(?P<validity>\d+)"
                        r"/;UID=(?P<uid>\d+)(?:/;SECTION=[0-9A-Za-z.]+)?$")
    files = [mnt.path("merged.ics")] + [mnt.path(*MAILBOXES[where[uid][0]], uid + ".ics")
                                        for uid, _ in ALL]
    for path in files:
        for ev in one_calendar(fs.cat(path)).walk("VEVENT"):
            url = str(ev.get("X-IMAPCALFS-SOURCE", ""))
            assert url.startswith("imap://"), (path, url)
            m = url_re.match(url)
            assert m, "not an RFC 5092 message URL: %r" % url
            mbox, uid = where[str(ev["UID"])]
            assert urllib.parse.unquote(m.group("mbox")) == mbox
            assert int(m.group("validity")) == validity[mbox]
            assert int(m.group("uid")) == uid


def test_stat_size_exact_and_mtime_is_internaldate(mnt):
    newest = {}
    for s in scenario.MAILBOX2ICS:
        if s.events:
            newest[s.mailbox] = max(newest.get(s.mailbox, 0), s.epoch)
    expect_mtime = {"merged.ics": max(newest.values())}
    for s in scenario.MAILBOX2ICS:
        for uid, _ in s.events:
            rel = "/".join(MAILBOXES[s.mailbox])
            expect_mtime[rel + "/" + uid + ".ics"] = s.epoch
            expect_mtime[rel + "/merged.ics"] = newest[s.mailbox]
    # Every file is stat'ed before anything is read.
    files = fs.find(mnt.mountpoint, kind="f")
    assert set(expect_mtime) <= set(files)
    before = {f: fs.stat(mnt.path(f)) for f in files}
    for f in files:
        data = fs.cat(mnt.path(f))
        assert before[f]["size"] == len(data), f
        after = fs.stat(mnt.path(f))
        assert (after["size"], after["mtime_ns"]) == (before[f]["size"], before[f]["mtime_ns"]), f
    for f, epoch in expect_mtime.items():
        assert int(before[f]["mtime"]) == epoch, "%s: mtime %s, INTERNALDATE %s" % (
            f, before[f]["mtime"], epoch)


def test_readonly_writes_fail_erofs(mnt):
    alice = mnt.path("Calendars", "Alice")
    event = os.path.join(alice, ALICE[0][0] + ".ics")
    listing = fs.ls(alice)
    content = fs.cat(event)
    attempts = [
        ("open_write", event), ("open_rdwr", event), ("append", event), ("truncate", event),
        ("create", os.path.join(alice, "new.ics")), ("create", mnt.path("new.ics")),
        ("symlink", "merged.ics", os.path.join(alice, "link.ics")),
        ("unlink", event), ("unlink", mnt.path("merged.ics")),
        ("rename", event, os.path.join(alice, "renamed.ics")),
        ("rename", mnt.path("Calendars", "Bob"), mnt.path("Calendars", "Robert")),
        ("mkdir", mnt.path("Calendars", "Carol")), ("rmdir", mnt.path("Calendars", "Bob")),
    ]
    results = {attempt: fs.syscall(*attempt)[0] for attempt in attempts}
    assert results == {attempt: "EROFS" for attempt in attempts}
    assert fs.ls(alice) == listing
    assert fs.cat(event) == content


def test_flags_unchanged_after_reading_everything(mail, mounter, tmp_path):
    dv, _ = mail
    boxes = ["INBOX", "Calendars.Alice", "Calendars.Bob"]
    before = {b: dv.flags(b) for b in boxes}
    m = mounter.mount(dv)
    for f in fs.find(m.mountpoint, kind="f"):
        fs.cat(m.path(f))
    fs.cp(m.mountpoint, str(tmp_path / "copy"), recursive=True)
    assert m.stop() == 0, m.stderr()
    after = {b: dv.flags(b) for b in boxes}
    assert after == before
    assert not any("\\Seen" in fl for b in boxes for fl in after[b].values())


def test_wrong_password_fails_mount(mail, mounter):
    dv, _ = mail
    rc, err = mounter.expect_failure(dv.url(), password=dv.password + "-wrong")
    assert rc == 1, err
    assert re.search(r"auth|login|password|credential", one_line(err), re.I)


def test_untrusted_ca_fails_mount(dovecot_factory, pki, mounter):
    dv = dovecot_factory.start(cert=pki.unknown_ca)
    rc, err = mounter.expect_failure(dv.url(), password=dv.password)
    assert rc == 1, err
    line = one_line(err)
    assert re.search(r"certificate", line, re.I) and re.search(r"verif|trust", line, re.I), line
    assert "Login: user=<alice>" not in open(dv.log_path).read()


def test_wrong_host_certificate_fails_mount(dovecot_factory, pki, mounter):
    dv = dovecot_factory.start(cert=pki.wrong_host)
    rc, err = mounter.expect_failure(dv.url(), password=dv.password)
    assert rc == 1, err
    assert re.search(r"certificate|host|mismatch", one_line(err), re.I)
    assert "Login: user=<alice>" not in open(dv.log_path).read()


def test_closed_port_fails_mount(mounter):
    port = dvmod.free_port()
    rc, err = mounter.expect_failure("imaps://alice@127.0.0.1:%d" % port, password="x")
    assert rc == 1, err
    one_line(err)


def test_starttls_mount_works(mail, mounter):
    m = mounter.mount(mail[0], scheme="imap")
    assert fs.ls(m.mountpoint) == ["Calendars", "INBOX", "merged.ics"]
    assert events(one_calendar(fs.cat(m.path("merged.ics")))) == sorted(ALL)


def test_starttls_missing_fails_mount_without_login(dovecot_factory, mounter):
    dv = dovecot_factory.start(tls=False)
    rc, err = mounter.expect_failure(dv.url("imap"), password=dv.password)
    assert rc == 1, err
    assert "STARTTLS" in one_line(err).upper()
    assert "Login: user=<alice>" not in open(dv.log_path).read()


def test_sigterm_unmounts_cleanly(mnt):
    assert "merged.ics" in fs.ls(mnt.mountpoint)
    mnt.signal(signal.SIGTERM)
    assert mnt.wait() == 0, mnt.stderr()
    assert not mount.is_mounted(mnt.mountpoint)


def test_passfile_option(mail, mounter, tmp_path):
    dv, _ = mail
    passfile = mount.write_passfile(str(tmp_path / "imap.pass"), dv.password, 0o600)
    m = mounter.mount(dv, options=["passfile=" + passfile], password=None)
    assert "merged.ics" in fs.ls(m.mountpoint)
    assert m.stop() == 0, m.stderr()
    os.chmod(passfile, 0o644)
    rc, err = mounter.expect_failure(dv.url(), options=["passfile=" + passfile])
    assert rc == 1, err
    assert passfile in one_line(err)
