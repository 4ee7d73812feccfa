"""The root merged.ics saved across mounts (issue 8: a remount of an
unchanged account reads one file instead of resolving every parsed version
again).  What must hold: the saved bytes are served only while every
mailbox's listing is what they were made from; mail that arrived or left
while unmounted shows at once, and mail that arrives later shows after ttl
as always.  Each test uses an account of its own."""

import datetime
import os
import time

import pytest

from harness import cachedir, calcheck, fs, mailgen, wire
from harness.mailgen import utc

CHANGES = ("append", "expunge", "flags", "uidvalidity")
DAMAGES = ("flip", "truncate")
USERS = ("saved", "changed", "later", "refused", "quick") + tuple(
    "ch-" + c for c in CHANGES) + tuple("dmg-" + d for d in DAMAGES)


@pytest.fixture(scope="module")
def server(dovecot_factory):
    return dovecot_factory.start(rawlog=True, users=USERS)


def invitation(uid, summary, day):
    start = datetime.datetime(2026, 6, day, 10, 0)
    ics = mailgen.vcalendar(mailgen.vevent(uid, summary, start,
                                           start + datetime.timedelta(hours=1),
                                           tzid="Europe/Berlin"),
                            timezones=[mailgen.BERLIN_VTIMEZONE])
    body = mailgen.multipart("mixed", mailgen.text(),
                             mailgen.calendar_part(ics, encoding="base64"))
    return mailgen.message(body, subject=summary)


def fill(dv, user):
    """Two mailboxes, three events each; {uid of the event: (mailbox, message UID)}."""
    where = {}
    for b, box in enumerate(("Work", "Home")):
        for i in range(3):
            ev = "%s-%d@example.org" % (box.lower(), i)
            where[ev] = (box, dv.add_message(box, invitation(ev, "%s %d" % (box, i), 1 + i),
                                             internaldate=utc(2026, 5, 1 + i, 9, b), user=user))
    return where


def mount_as(mounter, dv, user, cache, options=()):
    return mounter.mount(dv, source=dv.url(user=user), password=dv.passwords[user],
                         options=["cache_dir=" + cache] + list(options))


def mounted_once(mounter, dv, user, workroot, options=()):
    """Fills user's mail, mounts it on a new cache, reads merged.ics and
    unmounts (which saves the root): (fill's map, the cache, the bytes read)."""
    where = fill(dv, user)
    cache = os.path.join(workroot, user + "-cache")
    first = mount_as(mounter, dv, user, cache, options)
    data = fs.cat(first.path("merged.ics"))
    assert first.stop() == 0, first.stderr()
    return where, cache, data


def saved_roots(cache):
    """Packs on the shelf that holds the saved root merged.ics."""
    return [os.path.join(d, n) for d, _, names in os.walk(cache) for n in names
            if os.path.basename(d).startswith("r-") and n.startswith("pack-")]


def body_peeks_since(dv, user, since):
    raw = wire.Rawlog(dv, user)
    wire.wait_closed(dv, raw.sessions(since), user=user)
    return wire.body_peeks([c for s in raw.sessions(since) for c in s.commands])


def test_remount_of_unchanged_account_serves_the_same_root_and_tree(server, mounter, workroot):
    dv, user = server, "saved"
    fill(dv, user)
    cache = os.path.join(workroot, "saved-cache")
    first = mount_as(mounter, dv, user, cache)
    tree1 = calcheck.read_tree(first.mountpoint)
    assert first.stop() == 0, first.stderr()
    [saved] = saved_roots(cache)
    since = wire.Rawlog(dv, user).mark()
    second = mount_as(mounter, dv, user, cache)
    assert fs.cat(second.path("merged.ics")) == tree1["merged.ics"]
    # The mailboxes' own files come from their snapshots, as before.
    assert calcheck.read_tree(second.mountpoint) == tree1
    assert second.stop() == 0, second.stderr()
    assert not body_peeks_since(dv, user, since)
    # Nothing changed: the same record stays.
    assert saved_roots(cache) == [saved]


def test_mail_that_came_and_went_while_unmounted_shows_at_remount(server, mounter, workroot):
    dv, user = server, "changed"
    where, cache, before = mounted_once(mounter, dv, user, workroot)
    assert saved_roots(cache)
    dv.add_message("Home", invitation("new@example.org", "New", 20),
                   internaldate=utc(2026, 5, 20, 9), user=user)
    dv.expunge(*where["work-1@example.org"], user=user)
    second = mount_as(mounter, dv, user, cache)
    after = fs.cat(second.path("merged.ics"))
    uids = calcheck.uids(calcheck.one_calendar(after))
    assert "new@example.org" in uids and "work-1@example.org" not in uids
    assert after != before
    tree2 = calcheck.read_tree(second.mountpoint)
    assert second.stop() == 0, second.stderr()
    # Byte for byte what a mount with an empty cache makes of the same mail.
    fresh = mount_as(mounter, dv, user, os.path.join(workroot, "changed-fresh"))
    assert calcheck.read_tree(fresh.mountpoint) == tree2
    assert fresh.stop() == 0, fresh.stderr()


def test_saved_root_gives_way_to_new_mail_after_ttl(server, mounter, workroot):
    dv, user = server, "later"
    _, cache, _ = mounted_once(mounter, dv, user, workroot, options=["ttl=1"])
    second = mount_as(mounter, dv, user, cache, options=["ttl=1"])
    assert "late@example.org" not in calcheck.uids(
        calcheck.one_calendar(fs.cat(second.path("merged.ics"))))
    dv.add_message("Work", invitation("late@example.org", "Late", 25),
                   internaldate=utc(2026, 5, 25, 9), user=user)
    deadline = time.monotonic() + 60
    while True:
        got = fs.cat(second.path("merged.ics"))
        if "late@example.org" in calcheck.uids(calcheck.one_calendar(got)):
            break
        assert time.monotonic() < deadline, "new mail never showed in the root merged.ics"
        time.sleep(0.2)
    # The mailbox shows it too, and the root equals a fresh mount's.
    assert any(b"late@example.org" in data
               for rel, data in calcheck.read_tree(second.mountpoint).items()
               if rel.startswith("Work/"))
    assert second.stop() == 0, second.stderr()
    fresh = mount_as(mounter, dv, user, os.path.join(workroot, "later-fresh"))
    assert fs.cat(fresh.path("merged.ics")) == got
    assert fresh.stop() == 0, fresh.stderr()


def test_another_filter_does_not_take_the_saved_root(server, mounter, workroot):
    dv, user = server, "refused"
    _, cache, all_events = mounted_once(mounter, dv, user, workroot)
    assert saved_roots(cache)
    # Another filter is another root: the saved one must not be served.
    second = mount_as(mounter, dv, user, cache, options=["match=SUMMARY~^Home"])
    only_home = fs.cat(second.path("merged.ics"))
    assert second.stop() == 0, second.stderr()
    assert only_home != all_events
    assert set(calcheck.uids(calcheck.one_calendar(only_home))) == {
        "home-%d@example.org" % i for i in range(3)}


def test_remount_checks_the_saved_root_on_the_login_session_without_listing(
        server, mounter, workroot):
    """The first read after a remount checks the saved root with one EXAMINE
    per mailbox against the states saved with it, on the very session that
    checked the login at mount time: no second login, no listing at all
    (the cached listings are even gone here, so only that check can serve
    the saved bytes)."""
    dv, user = server, "quick"
    _, cache, before = mounted_once(mounter, dv, user, workroot)
    listings = [p for p in cachedir.files(cache) if os.path.basename(p) == "listing"]
    assert len(listings) == 3  # INBOX, Work, Home
    for p in listings:
        os.unlink(p)
    since = wire.Rawlog(dv, user).mark()
    second = mount_as(mounter, dv, user, cache)
    assert fs.cat(second.path("merged.ics")) == before
    assert second.stop() == 0, second.stderr()
    raw = wire.Rawlog(dv, user)
    wire.wait_closed(dv, raw.sessions(since), user=user)
    [session] = raw.sessions(since)
    texts = [c.text.upper() for c in session.commands]
    assert len([t for t in texts if t.startswith("EXAMINE")]) == len(listings), texts
    assert not [t for t in texts if "FETCH" in t or "SEARCH" in t], texts


def change(dv, user, where, what):
    box, uid = where["work-1@example.org"]
    if what == "append":
        dv.add_message("Home", invitation("new@example.org", "New", 20),
                       internaldate=utc(2026, 5, 20, 9), user=user)
    elif what == "expunge":
        dv.expunge(box, uid, user=user)
    elif what == "flags":
        with dv.imap(user) as c:
            assert c.select(box)[0] == "OK"
            assert c.uid("STORE", str(uid), "+FLAGS", r"(\Flagged)")[0] == "OK"
    else:
        dv.set_uidvalidity(box, dv.uidvalidity(box, user=user) + 1000, user=user)


@pytest.mark.parametrize("what", CHANGES)
def test_remount_after_a_change_gives_what_a_fresh_mount_gives(server, mounter, workroot, what):
    """Whatever changed in a mailbox while unmounted (mail added or removed,
    only a flag, a new UIDVALIDITY), the first read after the remount is
    byte for byte what a mount with an empty cache makes; and a second
    remount, with nothing changed since, serves that again."""
    dv, user = server, "ch-" + what
    where, cache, before = mounted_once(mounter, dv, user, workroot)
    change(dv, user, where, what)
    second = mount_as(mounter, dv, user, cache)
    after = fs.cat(second.path("merged.ics"))
    tree2 = calcheck.read_tree(second.mountpoint)
    assert second.stop() == 0, second.stderr()
    uids = calcheck.uids(calcheck.one_calendar(after))
    assert ("new@example.org" in uids) == (what == "append")
    assert ("work-1@example.org" in uids) == (what != "expunge")
    if what == "flags":
        assert after == before
    fresh = mount_as(mounter, dv, user, os.path.join(workroot, user + "-fresh"))
    assert calcheck.read_tree(fresh.mountpoint) == tree2
    assert fresh.stop() == 0, fresh.stderr()
    third = mount_as(mounter, dv, user, cache)
    assert fs.cat(third.path("merged.ics")) == after
    assert third.stop() == 0, third.stderr()


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_saved_root_is_not_served(server, mounter, workroot, damage):
    """A saved root whose bytes changed on disk (one byte in the middle, or
    cut short) fails its checksum: it is dropped and the root built again,
    even though every mailbox's state still matches."""
    dv, user = server, "dmg-" + damage
    _, cache, before = mounted_once(mounter, dv, user, workroot)
    [saved] = saved_roots(cache)
    with open(saved, "r+b") as f:
        data = f.read()
        f.seek(0)
        if damage == "flip":
            mid = len(data) - len(before) // 2
            f.write(data[:mid] + bytes([data[mid] ^ 0x20]) + data[mid + 1:])
        else:
            f.truncate(len(data) - 100)
    second = mount_as(mounter, dv, user, cache)
    assert fs.cat(second.path("merged.ics")) == before
    assert second.stop() == 0, second.stderr()
    assert not cachedir.damaged(cache)
