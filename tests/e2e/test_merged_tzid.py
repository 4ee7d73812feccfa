"""One TZID name, two zones, in ONE mailbox (issue 3, SPEC §2 "one
VTIMEZONE per TZID used"): Outlook's "Customized Time Zone" with Central
European rules in one invitation and US Eastern rules in another. The
mailbox's merged.ics (and mailbox2ics, which prints the same bytes) must
keep both zones, the second one renamed, so each event stays at the time
its sender meant; the event files keep the sender's TZID."""

import datetime
import os
import re
import subprocess

import icalendar.timezone_cache
import pytest

from harness import calcheck, corpus, fs, mount

BOX = "Customized"
CTZ = "Customized Time Zone"
MAIL = [("outlook-11-customized-tz-berlin.eml", "2026-02-06T08:00:00Z"),
        ("outlook-12-customized-tz-new-york.eml", "2026-02-06T15:00:00Z")]
UTC = datetime.timezone.utc
WANT = {"Vendor workshop": datetime.datetime(2026, 3, 12, 13, 0, tzinfo=UTC),
        "Budget call": datetime.datetime(2026, 3, 12, 14, 0, tzinfo=UTC)}


@pytest.fixture(scope="module")
def server(dovecot_factory):
    dv = dovecot_factory.start()
    for name, date in MAIL:
        dv.add_message(BOX, corpus.raw(name), internaldate=corpus.parse_when(date))
    return dv


@pytest.fixture(scope="module")
def mnt(server, workroot, pki):
    with corpus.ModuleMount(server, os.path.join(workroot, "tzid-mount"),
                            ["mailboxes=" + BOX], pki.ca_file) as m:
        yield m


def parse_alone(data):
    """data checked and parsed as by a fresh process (python3-icalendar 4
    keeps the first VTIMEZONE per TZID for the whole process)."""
    icalendar.timezone_cache._timezone_cache.clear()
    return calcheck.check_format(data)


def starts(cal):
    return {str(e["SUMMARY"]): e.decoded("DTSTART").astimezone(UTC)
            for e in calcheck.items(cal)}


def test_mailbox_merged_ics_keeps_both_customized_zones(mnt):
    data = fs.cat(mnt.path(BOX, "merged.ics"))
    cal = parse_alone(data)
    assert starts(cal) == WANT
    zones = calcheck.vtimezones(cal)
    assert len(zones) == 2 and CTZ in zones, zones
    renamed = [z for z in zones if z != CTZ][0]
    assert re.fullmatch(re.escape(CTZ) + r" \([0-9a-f]{8}\)", renamed), renamed
    # Every TZID parameter names one of the two, the bare one once per event.
    assert calcheck.tzids_used(data) == set(zones)


def test_event_files_keep_the_senders_tzid(mnt):
    names = [n for n in fs.ls(mnt.path(BOX)) if n != "merged.ics"]
    assert len(names) == 2
    got = {}
    for n in names:
        data = fs.cat(mnt.path(BOX, n))
        cal = parse_alone(data)
        assert calcheck.vtimezones(cal) == [CTZ]
        assert calcheck.tzids_used(data) == {CTZ}
        got.update(starts(cal))
    assert got == WANT


def test_merged_ics_bytes_do_not_depend_on_the_mount(mnt, mounter, server):
    """A second mount of the same mail (other process, other thread timing)
    gives the same bytes, at the root and in the mailbox."""
    first_root = fs.cat(mnt.path("merged.ics"))
    first_box = fs.cat(mnt.path(BOX, "merged.ics"))
    m = mounter.mount(server, options=["mailboxes=" + BOX, "connections=4"])
    assert fs.cat(m.path(BOX, "merged.ics")) == first_box
    assert fs.cat(m.path("merged.ics")) == first_root
    assert starts(parse_alone(first_root)) == WANT


def test_mailbox2ics_prints_the_same_renamed_zones(mnt, server):
    binary = os.path.join(os.path.dirname(mount.binary()), "mailbox2ics")
    env = dict(os.environ, IMAPCALFS_PASSWORD=server.password)
    wrap = mount.VALGRIND if mount.under_valgrind() else []
    proc = subprocess.run(wrap + [binary, "--cafile", server.ca_file, server.url(), server.user,
                                  BOX],
                          stdin=subprocess.DEVNULL, capture_output=True, env=env,
                          timeout=mount.ACCESS_TIMEOUT)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout == fs.cat(mnt.path("merged.ics"))
    assert starts(parse_alone(proc.stdout)) == WANT
