"""The maildir: source (issue 6): a local Maildir++ tree shows the same tree
and the same bytes as an IMAP mount of the same mail, apart from the
X-IMAPCALFS-SOURCE URLs (file:// instead of imap://).

Three kinds of Maildir are read: Dovecot's own (the test server's storage,
UIDs from dovecot-uidlist), a plain Maildir++ without any UID store (what a
simple MDA leaves), and an mbsync one (",U=<uid>" in the names and a
.uidvalidity file).  Changes to the Maildir show up once ttl has passed."""

import os
import re
import shutil
import socket
import time

import pytest

from harness import calfiles, fs, mount, scenario

SAMPLES = scenario.MAILBOX2ICS + scenario.DEMO_EXTRA
URL_TAIL = re.compile(r";UIDVALIDITY=(\d+)/;UID=(\d+)$")


@pytest.fixture(scope="module")
def mail(dovecot_server):
    scenario.fill(dovecot_server, SAMPLES)
    return dovecot_server


def user_maildir(dv):
    return os.path.join(dv.mail_dir, dv.user)


def folders(root):
    """The Maildir++ folders of root: [(mailbox name, directory)]."""
    res = [("INBOX", root)]
    for name in sorted(os.listdir(root)):
        if name.startswith(".") and name not in (".", "..") and \
                os.path.isdir(os.path.join(root, name, "cur")):
            res.append((name[1:], os.path.join(root, name)))
    return res


def dovecot_uids(folder):
    """{file base name: UID} and UIDVALIDITY from a dovecot-uidlist."""
    with open(os.path.join(folder, "dovecot-uidlist")) as f:
        header = f.readline()
        validity = int(re.search(r" V(\d+)", header).group(1))
        uids = {}
        for line in f:
            uid, _, base = line.rstrip("\n").partition(":")
            uids[base] = int(uid.split()[0])
    return uids, validity


def message_files(folder):
    """[(subdir, file name)] of a folder's messages."""
    return [(sub, n) for sub in ("cur", "new")
            for n in sorted(os.listdir(os.path.join(folder, sub)))]


def copy_plain(src, dst):
    """A copy of a Dovecot Maildir++ without any of Dovecot's files (no UID
    store, no indexes): mtimes (the INTERNALDATEs) are kept."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("dovecot*", "subscriptions"))
    return dst


def copy_mbsync(src, dst):
    """The same mail as mbsync (SubFolders Maildir++) keeps it: names
    "<time>.<pid>_<n>.<host>,U=<uid>:2,<flags>" and a .uidvalidity file
    ("<uidvalidity>\\n<max uid>\\n") per folder; UIDs are the server's."""
    os.makedirs(dst)
    host = socket.gethostname()
    n = 0
    for name, folder in folders(src):
        uids, validity = dovecot_uids(folder)
        out = dst if name == "INBOX" else os.path.join(dst, "." + name)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(out, sub), exist_ok=True)
        for sub, fname in message_files(folder):
            base = fname.split(":")[0]
            n += 1
            new = "%d.%d_%d.%s,U=%d" % (1795600000 + n, 4242, n, host, uids[base])
            # mbsync keeps unseen mail in new/ without an info part.
            new += ":2,S" if n % 2 else ""
            target = os.path.join(out, "cur" if n % 2 else "new", new)
            shutil.copy2(os.path.join(folder, sub, fname), target)
        with open(os.path.join(out, ".uidvalidity"), "w") as f:
            f.write("%d\n%d\n" % (validity, max(uids.values(), default=0)))
    return dst


def read_tree(m):
    """{relative path: (bytes, mtime)} of every file of mount m, and the
    sorted directory list."""
    files = {f: (fs.cat(m.path(f)), int(fs.stat(m.path(f))["mtime"]))
             for f in fs.find(m.mountpoint, kind="f")}
    return files, fs.find(m.mountpoint, kind="d")


def assert_same_tree(imap_mount, md_mount, same_uids=True):
    """Same directories and file names; same bytes apart from the source
    URL; same mtimes; the Maildir's URLs are file:// URLs of the same
    mailboxes (and, when the Maildir knows the server's UIDs, the same
    UIDVALIDITY and UID)."""
    imap_files, imap_dirs = read_tree(imap_mount)
    md_files, md_dirs = read_tree(md_mount)
    assert md_dirs == imap_dirs
    assert sorted(md_files) == sorted(imap_files)
    assert len([f for f in imap_files if f.endswith(".ics") and "merged" not in f]) == 6
    for path, (data, mtime) in imap_files.items():
        md_data, md_mtime = md_files[path]
        assert calfiles.without_source(md_data) == calfiles.without_source(data), path
        # A file without events (merged.ics of a directory that is no
        # mailbox) has no INTERNALDATE to show: its mtime is the mount's.
        if b"BEGIN:VEVENT" in data:
            assert md_mtime == mtime, path
        imap_urls, md_urls = calfiles.source_urls(data), calfiles.source_urls(md_data)
        assert len(md_urls) == len(imap_urls), path
        for iu, mu in zip(imap_urls, md_urls):
            assert mu.startswith("file://"), mu
            assert iu.split("/", 3)[3].split(";")[0] == mu.split("#", 1)[1].split(";")[0]
            if same_uids:
                assert URL_TAIL.search(mu).groups() == URL_TAIL.search(iu).groups(), (iu, mu)


def mount_maildir(mounter, path, options=()):
    return mounter.mount(source="maildir:" + path, password=None, cafile=None,
                         options=list(options))


def test_dovecot_maildir_matches_imap_mount(mail, mounter):
    imap = mounter.mount(mail)
    md = mount_maildir(mounter, user_maildir(mail))
    assert_same_tree(imap, md)
    assert md.path("merged.ics") and "Calendars" in fs.ls(md.mountpoint)


def test_plain_maildir_without_uidlist_matches_imap_mount(mail, mounter, tmp_path):
    plain = copy_plain(user_maildir(mail), str(tmp_path / "Mail"))
    assert not [f for _, d in folders(plain) for f in os.listdir(d) if "uidlist" in f]
    imap = mounter.mount(mail)
    md = mount_maildir(mounter, plain)
    # Without a UID store the messages are numbered in name order, which is
    # delivery order here: the same merge results, other UIDs in the URLs.
    assert_same_tree(imap, md, same_uids=False)


def test_mbsync_maildir_matches_imap_mount(mail, mounter, tmp_path):
    mb = copy_mbsync(user_maildir(mail), str(tmp_path / "Mail"))
    assert os.listdir(os.path.join(mb, ".Calendars.Team", "new"))
    imap = mounter.mount(mail)
    md = mount_maildir(mounter, mb)
    assert_same_tree(imap, md, same_uids=True)


def test_mailboxes_option_selects_maildir_folders(mail, mounter):
    md = mount_maildir(mounter, user_maildir(mail), ["mailboxes=Calendars.*"])
    assert fs.ls(md.mountpoint) == ["Calendars", "merged.ics"]
    assert set(fs.ls(md.path("Calendars"))) - {"merged.ics"} == {"Alice", "Bob", "Team"}


def test_missing_maildir_fails_mount(mounter, tmp_path):
    rc, err = mounter.expect_failure("maildir:" + str(tmp_path / "nope"), cafile=None)
    assert rc == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(tmp_path / "nope") in lines[0], err


def poll(what, fn, timeout=None):
    """Calls fn until it returns a true value; fails after timeout."""
    deadline = time.monotonic() + (timeout or mount.ACCESS_TIMEOUT)
    while True:
        res = fn()
        if res:
            return res
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


def summaries(m, *parts):
    """The SUMMARY values of a merged.ics of mount m."""
    lines = calfiles.unfold(fs.cat(m.path(*parts, "merged.ics")))
    return {line.split(b":", 1)[1].decode() for line in lines
            if re.match(rb"SUMMARY[;:]", line)}


def test_changes_in_a_dovecot_maildir_show_up_per_ttl(dovecot_factory, mounter):
    """Mail delivered to and expunged from the Maildir (here by Dovecot, as
    an MDA or mbsync would) appears and disappears once ttl has passed."""
    dv = dovecot_factory.start()
    scenario.fill(dv, scenario.MAILBOX2ICS)
    md = mount_maildir(mounter, user_maildir(dv), ["ttl=1"])
    assert summaries(md) == set(s for _, s in scenario.events_in(scenario.MAILBOX2ICS))
    assert set(fs.ls(md.path("Calendars"))) - {"merged.ics"} == {"Alice", "Bob"}
    offsite = scenario.DEMO_EXTRA[4]
    uid = dv.add_message("Calendars.Team", offsite.raw(), internaldate=offsite.internaldate)
    poll("the new folder and event", lambda: "Team" in fs.ls(md.path("Calendars")) and
         "Team offsite at the lake" in summaries(md))
    assert fs.ls(md.path("Calendars", "Team")) == sorted(["merged.ics", scenario.OFFSITE + ".ics"])
    assert int(fs.stat(md.path("Calendars", "Team", scenario.OFFSITE + ".ics"))["mtime"]) \
        == offsite.epoch
    dv.expunge("Calendars.Team", uid)
    poll("the expunged event to go", lambda: "Team offsite at the lake" not in summaries(md))
    assert fs.ls(md.path("Calendars", "Team")) == ["merged.ics"]


def test_changes_in_a_plain_maildir_show_up_per_ttl(mail, mounter, tmp_path):
    """A plain Maildir changed by hand: a message written to tmp/ and moved
    to new/ (the Maildir delivery protocol) is read; a deleted one goes."""
    plain = copy_plain(user_maildir(mail), str(tmp_path / "Mail"))
    team = os.path.join(plain, ".Calendars.Team")
    cancel = [os.path.join(team, sub, f) for sub, f in message_files(team)
              if b"METHOD:CANCEL" in open(os.path.join(team, sub, f), "rb").read()]
    assert len(cancel) == 1
    with open(cancel[0], "rb") as f:
        cancel_bytes = f.read()
    cancel_mtime = os.stat(cancel[0]).st_mtime
    os.unlink(cancel[0])
    md = mount_maildir(mounter, plain, ["ttl=1", "mailboxes=Calendars.*"])
    assert {"Team offsite at the lake", "In the office"} <= summaries(md)

    tmp = os.path.join(team, "tmp", "1795700000.M1P1.test")
    with open(tmp, "wb") as f:
        f.write(cancel_bytes)
    os.utime(tmp, (cancel_mtime, cancel_mtime))
    os.rename(tmp, os.path.join(team, "new", "1795700000.M1P1.test"))
    poll("the cancellation", lambda: "Team offsite at the lake" not in summaries(md))
    assert scenario.OFFSITE + ".ics" not in fs.ls(md.path("Calendars", "Team"))

    alice = os.path.join(plain, ".Calendars.Alice")
    for sub, fname in message_files(alice):
        os.unlink(os.path.join(alice, sub, fname))
    poll("Alice's events to go", lambda: "In the office" not in summaries(md))
    assert fs.ls(md.path("Calendars", "Alice")) == ["merged.ics"]
