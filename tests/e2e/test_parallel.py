"""connections=N (issue 4, SPEC §1): the first look at the root syncs the
mailboxes on N IMAP connections at once, not one after the other.

The proof does not time anything: the fault proxy's `gather` point holds
the answer to every EXAMINE until N connections wait for one together (or
a few seconds pass).  A client that works on N mailboxes in parallel meets
there N strong; one that works serially is never seen there with more
than one connection, whatever the machine's speed."""

import datetime

import pytest

from harness import calcheck, faultproxy, fs, mailgen
from harness.mailgen import utc

MAILBOXES = ("Alpha", "Beta", "Gamma")
HOLD = 3  # seconds the gather point waits for company before letting go


def invitation(uid, summary):
    start = utc(2026, 6, 1, 10)
    ev = mailgen.vevent(uid, summary, start, start + datetime.timedelta(hours=1))
    return mailgen.invitation(mailgen.vcalendar(ev), subject=summary)


@pytest.fixture(scope="module")
def setup(dovecot_factory, pki):
    """A Dovecot with one invitation in each mailbox, behind a proxy."""
    dv = dovecot_factory.start()
    for name in MAILBOXES:
        dv.add_message(name, invitation("%s@example.org" % name.lower(), name))
    proxy = faultproxy.FaultProxy(dv.imaps_port, pki.server.cert, pki.server.key,
                                  pki.ca_file).start()
    yield dv, proxy
    proxy.stop()
    dv.stop()


@pytest.mark.parametrize("conns,boxes", [(1, 2), (2, 2), (3, 3)])
def test_connections_sync_mailboxes_in_parallel(setup, mounter, conns, boxes):
    dv, proxy = setup
    chosen = MAILBOXES[:boxes]
    m = mounter.mount(dv, source=proxy.url(dv.user),
                      options=["connections=%d" % conns, "mailboxes=" + ":".join(chosen),
                               "no_disk_cache"])
    before = proxy.stats()["connections"]
    # connections=1 is the control: it is asked to meet two, and must not.
    proxy.set_fault("gather", command="EXAMINE", count=max(conns, 2), wait=HOLD)
    try:
        merged = calcheck.one_calendar(fs.cat(m.path("merged.ics")))
    finally:
        proxy.clear()
    stats = proxy.stats()
    print("connections=%d, %d mailboxes: %d connection(s) opened, at most %d "
          "EXAMINEs in flight together" % (conns, boxes, stats["connections"] - before,
                                           stats["gathered"]))
    assert calcheck.uids(merged) == sorted("%s@example.org" % n.lower() for n in chosen)
    assert stats["gathered"] == conns, \
        "connections=%d: at most %d mailbox syncs ran at once" % (conns, stats["gathered"])
