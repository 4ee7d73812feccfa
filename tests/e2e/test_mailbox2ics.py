"""mailbox2ics, the 2007 cron script's interface on imapcalfs's core (issue 6).

Its output must be the bytes of merged.ics of a mount of the same
mailboxes; -o must replace the file atomically (watched with inotify); -v
reports like the original; errors exit 1 with a message; --cache makes a
second run download no calendar part (counted in Dovecot's rawlog)."""

import ctypes
import os
import re
import struct
import subprocess
import time

import icalendar
import pytest

from harness import calfiles, fs, mount, scenario

SAMPLES = scenario.MAILBOX2ICS + scenario.DEMO_EXTRA
BOXES = ["Calendars.Alice", "Calendars.Bob", "Calendars.Team", "INBOX"]
REPO = mount.REPO


def binary():
    return os.path.join(os.path.dirname(mount.binary()), "mailbox2ics")


@pytest.fixture(scope="module")
def mail(dovecot_factory):
    """A Dovecot with rawlog (to count what crosses the wire), holding the
    article's mail and the demo's invitations."""
    dv = dovecot_factory.start(rawlog=True)
    scenario.fill(dv, SAMPLES)
    return dv


def run(args, password=None, env=None, timeout=None):
    """Runs mailbox2ics args (under valgrind when the suite runs there: exit
    99 then means a memory error); returns CompletedProcess (bytes)."""
    e = dict(os.environ)
    e.pop("IMAPCALFS_PASSWORD", None)
    if password is not None:
        e["IMAPCALFS_PASSWORD"] = password
    e.update(env or {})
    wrap = mount.VALGRIND if mount.under_valgrind() else []
    return subprocess.run(wrap + [binary()] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, env=e, timeout=timeout or mount.ACCESS_TIMEOUT)


def run_ok(dv, boxes, *extra, password=True):
    """mailbox2ics over IMAPS for boxes; asserts exit 0; returns stdout."""
    proc = run(["--cafile", dv.ca_file] + list(extra) + [dv.url(), dv.user] + list(boxes),
               password=dv.password if password is True else password)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def summaries(data):
    return sorted(str(e["SUMMARY"]) for e in
                  icalendar.Calendar.from_ical(data).walk("VEVENT"))


# ---- the same bytes as a mount ------------------------------------------

@pytest.mark.parametrize("boxes", [BOXES, ["Calendars.Team", "Calendars.Alice"]],
                         ids=["all", "two"])
def test_output_is_byte_identical_to_mount_merged(mail, mounter, boxes):
    out = run_ok(mail, boxes).stdout
    m = mounter.mount(mail, options=["mailboxes=" + ":".join(boxes)])
    assert fs.cat(m.path("merged.ics")) == out
    expected = [s for uid, s in scenario.events_in(
        [x for x in SAMPLES if x.mailbox in boxes])]
    # Updates replace, the cancelled offsite is gone: what remains is a subset.
    assert set(summaries(out)) <= set(expected) and summaries(out)


@pytest.mark.parametrize("host", ["127.0.0.1", "imaps://127.0.0.1", "imap://127.0.0.1"])
def test_original_interface_host_and_port(mail, host):
    """HOSTNAME USERNAME with --port, as the cron lines of 2007 call it;
    imap:// is STARTTLS on the plain port (the source URLs name that port)."""
    port = mail.imap_port if host.startswith("imap:") else mail.imaps_port
    proc = run(["--cafile", mail.ca_file, "--port", str(port), host, mail.user] + BOXES,
               password=mail.password)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    got, same = proc.stdout, run_ok(mail, BOXES).stdout
    if host.startswith("imap:"):
        got = b"\r\n".join(calfiles.unfold(got))
        same = b"\r\n".join(calfiles.unfold(same)).replace(
            b"@127.0.0.1:%d/" % mail.imaps_port, b"@127.0.0.1:%d/" % mail.imap_port)
    assert got == same


def test_maildir_hostname_reads_the_same_mail(mail, mounter):
    """maildir:PATH as HOSTNAME: same events as over IMAP (only the source
    URLs differ), and byte-identical to a maildir mount's merged.ics."""
    maildir = os.path.join(mail.mail_dir, mail.user)
    proc = run(["maildir:" + maildir, mail.user] + BOXES)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert calfiles.without_source(proc.stdout) == calfiles.without_source(
        run_ok(mail, BOXES).stdout)
    assert all(u.startswith("file://") for u in calfiles.source_urls(proc.stdout))
    m = mounter.mount(source="maildir:" + maildir, password=None, cafile=None,
                      options=["mailboxes=" + ":".join(BOXES)])
    assert fs.cat(m.path("merged.ics")) == proc.stdout


# ---- -o: atomic replacement -----------------------------------------------

IN_MODIFY, IN_CLOSE_WRITE, IN_OPEN = 0x2, 0x8, 0x20
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_ALL_EVENTS = 0xFFF
IN_NONBLOCK = os.O_NONBLOCK


class Inotify:
    """The events of one directory (inotify(7) through libc)."""

    def __init__(self, path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(IN_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self.libc.inotify_add_watch(self.fd, path.encode(), IN_ALL_EVENTS) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch " + path)

    def read(self):
        """[(name, mask, cookie)] of the events queued so far."""
        events = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            i = 0
            while i < len(buf):
                _, mask, cookie, length = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + length].rstrip(b"\0").decode()
                events.append((name, mask, cookie))
                i += 16 + length

    def close(self):
        os.close(self.fd)


@pytest.mark.parametrize("existing", [True, False], ids=["replace", "create"])
def test_output_file_is_written_atomically(mail, tmp_path, existing):
    """The output name only ever appears by rename: no reader can open a
    half-written file; the temporary file is gone afterwards."""
    d = tmp_path / "www"
    d.mkdir()
    target = d / "calendar.ics"
    if existing:
        target.write_bytes(b"old calendar\r\n")
        old_ino = target.stat().st_ino
    watch = Inotify(str(d))
    try:
        run_ok(mail, BOXES, "-o", str(target))
        events = watch.read()
    finally:
        watch.close()
    assert target.read_bytes() == run_ok(mail, BOXES).stdout
    assert os.listdir(d) == ["calendar.ics"], "temporary file left behind"
    mine = [(mask, cookie) for name, mask, cookie in events if name == "calendar.ics"]
    assert [mask & ~0x40000000 for mask, _ in mine] == [IN_MOVED_TO], events
    cookie = mine[0][1]
    tmp = [name for name, mask, c in events if mask & IN_MOVED_FROM and c == cookie]
    assert len(tmp) == 1 and tmp[0] != "calendar.ics", events
    tmp_masks = [mask for name, mask, _ in events if name == tmp[0]]
    assert tmp_masks[0] & IN_CREATE and any(m & IN_CLOSE_WRITE for m in tmp_masks), events
    # Hidden, so a web server's or rsync's *.ics never picks it up mid-write.
    assert tmp[0].startswith(".") and not tmp[0].endswith(".ics"), tmp[0]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    if existing:
        assert target.stat().st_ino != old_ino


def test_failed_run_leaves_output_untouched(mail, tmp_path):
    target = tmp_path / "calendar.ics"
    target.write_bytes(b"yesterday's calendar\r\n")
    proc = run(["--cafile", mail.ca_file, "-o", str(target), mail.url(), mail.user,
                "Calendars.Alice", "Calendars.Nope"], password=mail.password)
    assert proc.returncode == 1
    assert target.read_bytes() == b"yesterday's calendar\r\n"
    assert os.listdir(tmp_path) == ["calendar.ics"]


def test_unwritable_output_directory_fails(mail, tmp_path):
    proc = run(["--cafile", mail.ca_file, "-o", str(tmp_path / "missing" / "cal.ics"),
                mail.url(), mail.user, "Calendars.Alice"], password=mail.password)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert str(tmp_path / "missing" / "cal.ics") in err and "No such file" in err, err


# ---- reporting and errors ---------------------------------------------------

def test_verbose_reports_scanning_and_found(mail):
    proc = run_ok(mail, BOXES, "-v")
    lines = proc.stderr.decode().splitlines()
    scanning = [i for i, line in enumerate(lines) if line.startswith("Scanning ")]
    assert [lines[i] for i in scanning] == ["Scanning %s ..." % b for b in BOXES], lines
    found = [line[len("Found: "):] for line in lines if line.startswith("Found: ")]
    assert sorted(found) == summaries(proc.stdout)
    assert len(found) + len(scanning) == len(lines), lines
    # Each event is reported under the mailbox it came from.
    bounds = scanning + [len(lines)]
    for k, box in enumerate(BOXES):
        under = [line[7:] for line in lines[bounds[k] + 1:bounds[k + 1]]]
        mine = set(s for _, s in scenario.events_in(SAMPLES, box))
        assert set(under) <= mine, (box, under)
    assert "Team stand-up (moved to Tuesday)" in found
    assert proc.stdout == run_ok(mail, BOXES).stdout


def test_quiet_writes_nothing_to_stderr(mail):
    proc = run_ok(mail, BOXES, "-v", "-q")
    assert proc.stderr == b""
    assert summaries(proc.stdout)


def test_missing_mailbox_fails_naming_it(mail):
    proc = run(["--cafile", mail.ca_file, mail.url(), mail.user, "Calendars.Alice",
                "Calendars.Nope"], password=mail.password)
    assert proc.returncode == 1
    assert proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "Calendars.Nope" in lines[0], lines


def test_wrong_password_fails(mail):
    proc = run(["--cafile", mail.ca_file, mail.url(), mail.user, "INBOX"],
               password=mail.password + "x")
    assert proc.returncode == 1 and proc.stdout == b""
    assert re.search(r"auth|login|password|credential", proc.stderr.decode(), re.I)


def test_untrusted_certificate_fails(mail):
    proc = run([mail.url(), mail.user, "INBOX"], password=mail.password)
    assert proc.returncode == 1 and proc.stdout == b""
    assert "certificate" in proc.stderr.decode().lower()


def test_no_password_and_no_terminal_fails(mail):
    proc = run(["--cafile", mail.ca_file, mail.url(), mail.user, "INBOX"])
    assert proc.returncode == 1 and proc.stdout == b""
    assert "password" in proc.stderr.decode().lower()


def test_password_option_works_but_warns_about_ps(mail):
    proc = run_ok(mail, BOXES, "-p", mail.password, password=None)
    assert proc.stdout == run_ok(mail, BOXES).stdout
    err = proc.stderr.decode()
    assert re.search(r"warning.*\bps\b", err), err
    assert mail.password not in err


def test_password_file(mail, tmp_path):
    pw = mount.write_passfile(str(tmp_path / "pass"), mail.password, 0o600)
    proc = run_ok(mail, BOXES, "--password-file", pw, password=None)
    assert proc.stdout == run_ok(mail, BOXES).stdout and proc.stderr == b""
    os.chmod(pw, 0o644)
    proc = run(["--cafile", mail.ca_file, "--password-file", pw, mail.url(), mail.user,
                "INBOX"])
    assert proc.returncode == 1 and pw in proc.stderr.decode()


def test_usage_errors_exit_1():
    for args in ([], ["host", "user"], ["--port", "0", "h", "u", "INBOX"], ["--bogus"]):
        proc = run(args)
        assert proc.returncode == 1, args
        assert proc.stdout == b"" and proc.stderr.strip(), args


def test_help_and_version_exit_0():
    proc = run(["-h"])
    assert proc.returncode == 0 and proc.stderr == b""
    text = proc.stdout.decode()
    for opt in ("--port", "-v", "-q", "-o", "--cafile", "--password-file", "-p", "--cache"):
        assert opt in text, opt
    proc = run(["-V"])
    assert proc.returncode == 0
    assert re.match(r"mailbox2ics \(imapcalfs\) version \d+\.\d+", proc.stdout.decode())


# ---- --cache: later runs download only what is new --------------------------

def wire_commands(dv, before, timeout=None):
    """Client commands of the IMAP sessions whose rawlog files are not in
    `before`, once each of them has ended with LOGOUT."""
    deadline = time.monotonic() + (timeout or mount.ACCESS_TIMEOUT)
    while True:
        new = [f for f in dv.rawlog_files() if f.endswith(".in") and f not in before]
        texts = []
        for f in new:
            with open(f, errors="replace") as fh:
                texts.append(fh.read())
        if new and all(re.search(r"^\S+ \S+ LOGOUT", t, re.M) for t in texts):
            return [line.split(" ", 2)[2] for t in texts for line in t.splitlines()
                    if line.count(" ") >= 2]
        if time.monotonic() > deadline:
            raise AssertionError("sessions did not end: %s" % new)
        time.sleep(0.05)


def parts_fetched(commands):
    """UIDs sets of the BODY.PEEK part fetches and of the structure fetches."""
    peek = [c for c in commands if "BODY.PEEK[" in c.upper()]
    structure = [c for c in commands if "BODYSTRUCTURE" in c.upper()]
    return peek, structure


def test_cache_makes_second_run_download_no_part(dovecot_factory, tmp_path):
    dv = dovecot_factory.start(rawlog=True)
    scenario.fill(dv, scenario.MAILBOX2ICS)
    boxes = ["Calendars.Alice", "Calendars.Bob"]
    cache = str(tmp_path / "cache")

    before = set(dv.rawlog_files())
    first = run_ok(dv, boxes, "--cache", cache).stdout
    peek, structure = parts_fetched(wire_commands(dv, before))
    assert peek and structure, "the first run must fetch the parts"

    before = set(dv.rawlog_files())
    second = run_ok(dv, boxes, "--cache", cache).stdout
    commands = wire_commands(dv, before)
    assert parts_fetched(commands) == ([], []), commands
    assert second == first

    # A new invitation: only its part is fetched.
    new_uid = dv.add_message("Calendars.Bob", scenario.DEMO_EXTRA[4].raw(),
                             internaldate=scenario.DEMO_EXTRA[4].internaldate)
    before = set(dv.rawlog_files())
    third = run_ok(dv, boxes, "--cache", cache).stdout
    peek, structure = parts_fetched(wire_commands(dv, before))
    assert len(peek) == 1 and re.search(r"UID FETCH %d \(" % new_uid, peek[0]), peek
    assert "Team offsite at the lake" in summaries(third)
    assert os.stat(cache).st_mode & 0o777 == 0o700


# ---- the manual page -------------------------------------------------------

def test_man_page_renders_without_warnings_and_covers_every_option():
    page = os.path.join(REPO, "man", "mailbox2ics.1")
    proc = subprocess.run(["groff", "-ww", "-z", "-man", page], capture_output=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()
    proc = subprocess.run(["man", "--warnings", "-l", page], capture_output=True,
                          timeout=60, env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()
    text = proc.stdout.decode()
    helptext = run(["-h"]).stdout.decode()
    for opt in sorted(set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", helptext))):
        assert opt in text, "man page does not document " + opt
    for section in ("SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "EXAMPLES",
                    "FILES", "SEE ALSO"):
        assert re.search(r"^%s$" % section, text, re.M), section
