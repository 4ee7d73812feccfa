"""Calendar semantics through a real mount (issue 3): where calendar data
hides in real mail, how scheduling messages merge (RFC 5546), the
components/search/after/before/match/privacy/vdir options, safe names, and
what every output file looks like.  Mail is real Dovecot mail: sample
messages modelled on real clients (tests/e2e/mail/cal-*.eml) plus messages
built with harness.mailgen; outputs are read with cat/ls/find and checked
with python3-icalendar, dateutil and khal."""

import datetime
import os
import re

import pytest

from harness import calcheck, fs, mailgen, scenario, wire
from harness.corpus import ModuleMount
from harness.mailgen import utc, vcalendar, vevent

MAIL = scenario.MAIL_DIR
BERLIN = mailgen.BERLIN_VTIMEZONE


def eml(name):
    with open(os.path.join(MAIL, name), "rb") as f:
        return f.read()


# ---- the mail --------------------------------------------------------------

# Mailbox "Found": one sample per way calendar data reaches a mailbox.
# file -> (UID, SUMMARY) pairs it must produce (none: it must produce nothing).
FOUND = {
    "cal-forwarded-outlook.eml": [(
        "040000008200E00074C5B7101A82E0080000000050B2C4D6E8F0A12300000000000000001"
        "0000000A1B2C3D4E5F60718293A4B5C6D7E8F90", "Quarterly planning Q1")],
    "cal-apple-qp.eml": [("8F3C2B1A-5D4E-4F60-9A8B-7C6D5E4F3A2B", "Zürich offsite – kick-off")],
    "cal-thunderbird-latin1.eml": [("5e0b7f3a-2c41-4d8e-9f6a-b1c2d3e4f5a6",
                                    "Réunion café à Genève")],
    "cal-outlook-cp1252.eml": [(
        "040000008200E00074C5B7101A82E00800000000C1D2E3F4A5B6C70100000000000000001"
        "0000000112233445566778899AABBCCDDEEFF00",
        "\u201cBudget\u201d review \u2013 \u20ac2M plan")],
    "cal-google-inline-and-attachment.eml": [("3qv5m2k8r1t0s9p7o6n4l3j2h1@google.com",
                                              "Design review")],
    "cal-bare-vevent.eml": [("table-20260321-1930@bistro.example.net",
                             "Table for 4 at Bistro Am Ufer")],
    "cal-two-vcalendars.eml": [("confx-2026-talk-17@conf.example.com", "Talk: Calendars in mail"),
                               ("confx-2026-talk-18@conf.example.com", "Talk: FUSE for everyone")],
    "cal-reply-hinted-as-request.eml": [],
    "cal-request-hinted-as-reply.eml": [("bridge-no-hint@relay.example.net",
                                         "Lunch with the relay team")],
    "cal-broken-ics.eml": [],
}
FOUND_EVENTS = sorted(ev for evs in FOUND.values() for ev in evs)


def t(day, hour=9, minute=0):
    """An INTERNALDATE in January 2026."""
    return utc(2026, 1, day, hour, minute, 0)


def inv(uid, summary, start, *, seq=0, stamp=None, method="REQUEST", tz=None, **kw):
    """One invitation message (bytes) with one VEVENT."""
    ev = vevent(uid, summary, start, start + datetime.timedelta(hours=1), sequence=seq,
                dtstamp=stamp, tzid=tz, **kw)
    ics = vcalendar(ev, method=method, timezones=[BERLIN] if tz == "Europe/Berlin" else [])
    return mailgen.invitation(ics, subject=summary, method=method)


D1 = datetime.datetime(2026, 3, 2, 9, 0)  # a Monday, local time
U1 = utc(2026, 3, 2, 9, 0)


def merge_mail():
    """Mailbox "Merge": which version of a (UID, RECURRENCE-ID) wins."""
    return [
        # Highest SEQUENCE wins, even against a later message.
        (inv("seq@example.org", "Planning v0", U1, seq=0), t(5)),
        (inv("seq@example.org", "Planning v2", U1, seq=2), t(7)),
        (inv("seq@example.org", "Planning v1 (late)", U1, seq=1), t(9)),
        # Same SEQUENCE: the latest DTSTAMP wins, even from an older message.
        (inv("stamp@example.org", "Later stamp", U1, seq=1, stamp=utc(2026, 1, 4)), t(6)),
        (inv("stamp@example.org", "Earlier stamp", U1, seq=1, stamp=utc(2026, 1, 2)), t(8)),
        # Same SEQUENCE and DTSTAMP: the latest message (INTERNALDATE) wins ...
        (inv("mail@example.org", "Second mail", U1, seq=1), t(10)),
        (inv("mail@example.org", "First mail", U1, seq=1), t(3)),
        # ... and with the same INTERNALDATE too, the higher IMAP UID.
        (inv("uid@example.org", "Lower UID", U1, seq=1), t(11)),
        (inv("uid@example.org", "Higher UID", U1, seq=1), t(11)),
        # A weekly series and an override of its second occurrence.
        (inv("series@example.org", "Weekly sync", D1, tz="Europe/Berlin",
             rrule="FREQ=WEEKLY;COUNT=4"), t(12)),
        (inv("series@example.org", "Weekly sync (moved)", D1 + datetime.timedelta(days=8),
             seq=1, tz="Europe/Berlin", recurrence_id=D1 + datetime.timedelta(days=7)), t(13)),
    ]


TOKYO_VTIMEZONE = mailgen.CRLF.join([
    "BEGIN:VTIMEZONE", "TZID:Asia/Tokyo", "BEGIN:STANDARD", "DTSTART:19700101T000000",
    "TZOFFSETFROM:+0900", "TZOFFSETTO:+0900", "TZNAME:JST", "END:STANDARD", "END:VTIMEZONE"])


def rid_only_zone_mail():
    """An invitation to one occurrence whose RECURRENCE-ID is the only
    property naming its zone (DTSTART moved to UTC)."""
    ev = mailgen.CRLF.join([
        "BEGIN:VEVENT", "UID:rid-zone@example.org",
        "RECURRENCE-ID;TZID=Asia/Tokyo:20260304T180000", "DTSTAMP:20260105T090000Z",
        "DTSTART:20260304T100000Z", "DTEND:20260304T110000Z", "SUMMARY:Tokyo call, moved",
        "SEQUENCE:1", "END:VEVENT"])
    ics = vcalendar(ev, timezones=[TOKYO_VTIMEZONE, BERLIN])  # Berlin: sent, unused
    return [(mailgen.invitation(ics, subject="Tokyo call"), t(14))]


MERGE_EXPECT = {  # UID -> (SUMMARY of the master, INTERNALDATE of the file's mtime)
    "seq@example.org": ("Planning v2", t(7)),
    "stamp@example.org": ("Later stamp", t(6)),
    "mail@example.org": ("Second mail", t(10)),
    "uid@example.org": ("Higher UID", t(11)),
    "series@example.org": ("Weekly sync", t(13)),
}


def cancel_mail():
    """Mailbox "Cancel": cancellations of whole events and of occurrences."""
    return [
        (inv("gone@example.org", "Cancelled meeting", U1), t(5)),
        (inv("gone@example.org", "Cancelled meeting", U1, seq=1, method="CANCEL",
             status="CANCELLED"), t(6)),
        (inv("weekly@example.org", "Weekly 1:1", D1, tz="Europe/Berlin",
             rrule="FREQ=WEEKLY;COUNT=5"), t(5)),
        (inv("weekly@example.org", "Weekly 1:1", D1 + datetime.timedelta(days=7), seq=1,
             tz="Europe/Berlin", method="CANCEL", status="CANCELLED",
             recurrence_id=D1 + datetime.timedelta(days=7)), t(7)),
        # A stale CANCEL (lower SEQUENCE than the current version) changes nothing.
        (inv("stale@example.org", "Still on", U1, seq=3), t(5)),
        (inv("stale@example.org", "Still on", U1, seq=2, method="CANCEL",
             status="CANCELLED"), t(8)),
        # Cancelled, then invited again with a higher SEQUENCE: back.
        (inv("again@example.org", "Back on", U1, seq=0), t(5)),
        (inv("again@example.org", "Back on", U1, seq=1, method="CANCEL",
             status="CANCELLED"), t(6)),
        (inv("again@example.org", "Back on (new time)", U1 + datetime.timedelta(hours=2),
             seq=2), t(7)),
    ]


def replies_mail():
    """Mailbox "Replies": answers to invitations create no events."""
    msgs = [(inv("vendor@example.org", "Vendor call", U1, seq=0), t(5))]
    for i, method in enumerate(("REPLY", "REFRESH", "COUNTER", "DECLINECOUNTER")):
        msgs.append((inv("vendor@example.org", "%s: Vendor call" % method, U1, seq=0,
                         method=method, stamp=utc(2026, 1, 9)), t(6 + i)))
        msgs.append((inv("only-%s@example.org" % method.lower(), "Only a " + method, U1,
                         method=method), t(6 + i)))
    msgs.append((eml("cal-reply-hinted-as-request.eml"), t(12)))
    return msgs


def tasks_mail():
    """Mailbox "Tasks": an event, a task and a journal entry."""
    ics = vcalendar(
        vevent("task-event@example.org", "Sprint review", U1, U1 + datetime.timedelta(hours=1)),
        mailgen.vtodo("todo@example.org", "File the expense report", utc(2026, 3, 6, 17)),
        mailgen.vjournal("journal@example.org", "Notes from the offsite", utc(2026, 3, 2)),
        method="PUBLISH")
    return [(mailgen.invitation(ics, subject="Sprint", method="PUBLISH"), t(5))]


def filter_mail():
    """Mailbox "Filter": events inside and outside June 2026, from two people."""
    boss, peer = "Boss <boss@example.org>", "Peer <peer@other.example>"

    def m(uid, summary, start, sender, organizer, **kw):
        ev = vevent(uid, summary, start, start + datetime.timedelta(hours=1),
                    organizer="mailto:" + organizer, **kw)
        return mailgen.invitation(vcalendar(ev), subject=summary, sender=sender)

    return [
        (m("weekly-review@example.org", "Weekly review", utc(2025, 1, 6, 9), boss,
           "boss@example.org", rrule="FREQ=WEEKLY"), t(5)),
        (m("old-review@example.org", "Old review", utc(2025, 3, 1, 9), boss,
           "boss@example.org"), t(6)),
        (m("future@example.org", "Future standup", utc(2027, 1, 10, 9), boss,
           "boss@example.org"), t(7)),
        (m("june-standup@other.example", "June standup", utc(2026, 6, 15, 9), peer,
           "peer@other.example"), t(8)),
        (m("june-review@other.example", "June review", utc(2026, 6, 20, 9), peer,
           "peer@other.example"), t(9)),
        (m("ended@example.org", "Ended series", utc(2026, 1, 5, 9), boss, "boss@example.org",
           rrule="FREQ=WEEKLY;COUNT=3"), t(10)),
        # Starts before the window and ends inside it: it has an occurrence there.
        (m("overlap@example.org", "Overnight deploy", utc(2026, 5, 31, 23, 30), boss,
           "boss@example.org"), t(11)),
    ]


FILTER_ALL = {"weekly-review@example.org", "old-review@example.org", "future@example.org",
              "june-standup@other.example", "june-review@other.example", "ended@example.org",
              "overlap@example.org"}
FROM_BOSS = FILTER_ALL - {"june-standup@other.example", "june-review@other.example"}


def private_mail():
    ev = vevent("private@example.org", "Salary talk with HR", U1, U1 + datetime.timedelta(hours=1),
                description="Bring the numbers.", location="Room 4.12",
                attendees=["mailto:alice@example.org", "mailto:hr@example.org"],
                extra=["COMMENT:confidential", "ATTACH:https://files.example.org/offer.pdf",
                       "CATEGORIES:HR"])
    return [(mailgen.invitation(vcalendar(ev), subject="Salary talk"), t(5))]


CRLF = mailgen.CRLF
W_EUROPE = CRLF.join([
    "BEGIN:VTIMEZONE", "TZID:W. Europe Standard Time",
    "BEGIN:STANDARD", "DTSTART:16010101T030000", "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100",
    "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10", "END:STANDARD",
    "BEGIN:DAYLIGHT", "DTSTART:16010101T020000", "TZOFFSETFROM:+0100", "TZOFFSETTO:+0200",
    "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3", "END:DAYLIGHT",
    "END:VTIMEZONE"])
OUTLOOK_DISPLAY = "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"
UNKNOWN_TZ = "Olympus Mons Standard Time"

# Mailbox "Zones": (UID, TZID, local start, VTIMEZONE sent along?, expected UTC start)
ZONES = [
    ("tz-windows@example.com", "W. Europe Standard Time", datetime.datetime(2026, 2, 10, 14, 0),
     W_EUROPE, utc(2026, 2, 10, 13, 0)),
    ("tz-iana@example.com", "America/New_York", datetime.datetime(2026, 7, 4, 10, 0), None,
     utc(2026, 7, 4, 14, 0)),
    ("tz-windows-bare@example.com", "Tokyo Standard Time", datetime.datetime(2026, 5, 1, 9, 0),
     None, utc(2026, 5, 1, 0, 0)),
    ("tz-outlook-display@example.com", OUTLOOK_DISPLAY, datetime.datetime(2026, 8, 3, 9, 0),
     None, utc(2026, 8, 3, 7, 0)),
]


def zones_mail():
    msgs = []
    for i, (uid, tzid, local, vtz, _) in enumerate(ZONES):
        q = '"%s"' % tzid if any(c in tzid for c in ",:;") else tzid
        ev = mailgen.CRLF.join([
            "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20260105T090000Z",
            "DTSTART;TZID=%s:%s" % (q, local.strftime("%Y%m%dT%H%M%S")),
            "DTEND;TZID=%s:%s" % (q, (local + datetime.timedelta(hours=1)).strftime(
                "%Y%m%dT%H%M%S")),
            "SUMMARY:Zone test %d" % i, "SEQUENCE:0", "END:VEVENT"])
        ics = vcalendar(ev, timezones=[vtz] if vtz else [])
        msgs.append((mailgen.invitation(ics, subject="Zone %d" % i), t(5 + i)))
    return msgs


def unknown_zone_mail():
    ev = mailgen.CRLF.join([
        "BEGIN:VEVENT", "UID:tz-unknown@example.com", "DTSTAMP:20260105T090000Z",
        "DTSTART;TZID=%s:20260601T090000" % UNKNOWN_TZ,
        "DTEND;TZID=%s:20260601T100000" % UNKNOWN_TZ,
        "SUMMARY:Meeting on Mars", "SEQUENCE:0", "END:VEVENT"])
    return [(mailgen.invitation(vcalendar(ev), subject="Mars"), t(5))]


NAME_UIDS = [
    "plain-uid_1.2+x@example.org",  # safe: kept as it is
    "a/b/../c@example.org",
    "a%2Fb@example.org",
    "a_b@example.org",
    ".hidden@example.org",
    "..",
    "merged",
    "displayname",
    "x" * 250,
    "ünïcödé@example.org",
    "has space@example.org",
]


def names_mail():
    msgs = [(inv(uid, "Name test %d" % i, U1), t(5)) for i, uid in enumerate(NAME_UIDS)]
    # A UID that is not UTF-8 although the part says so (ISO-8859-1 bytes).
    ics = vcalendar(vevent("caf\u00e9-latin1@example.org", "Not UTF-8", U1,
                           U1 + datetime.timedelta(hours=1))).encode("latin-1")
    msgs.append((mailgen.message(mailgen.leaf("text/calendar", ics, charset="UTF-8",
                                              encoding="8bit"), subject="Latin-1 UID"), t(6)))
    return msgs


def broken_mail():
    """Mailbox "Broken": damaged mail next to a good invitation."""
    good = (inv("good@example.org", "Survivor", U1), t(5))
    truncated = mailgen.invitation(
        vcalendar(vevent("cut@example.org", "Cut off", U1, U1 + datetime.timedelta(hours=1))),
        encoding="base64", subject="Truncated")
    # Cut in the middle of the base64 calendar part: no END lines, no closing boundary.
    cal_at = truncated.index(b"Content-Type: text/calendar")
    truncated = truncated[:cal_at + (len(truncated) - cal_at) // 2]
    empty = mailgen.message(mailgen.multipart(
        "mixed", mailgen.text(), mailgen.leaf("text/calendar", b"", charset="UTF-8")),
        subject="Empty calendar part")
    # Labelled UTF-8, written in ISO-8859-1 (an old gateway).
    mislabelled = mailgen.message(mailgen.leaf(
        "text/calendar", vcalendar(vevent("mislabelled@example.org", "Caf\u00e9 au lait", U1,
                                          U1 + datetime.timedelta(hours=1))).encode("latin-1"),
        charset="UTF-8", encoding="8bit"), subject="Mislabelled")
    return [good, (truncated, t(6)), (empty, t(7)), (mislabelled, t(8)),
            (eml("cal-broken-ics.eml"), t(9))]


def vdir_mail():
    return [(inv("vdir-event@example.org", "Équipe meeting", U1), t(5))]


MAILBOXES = {
    "Found": lambda: [(eml(f), t(1 + i)) for i, f in enumerate(sorted(FOUND))],
    "Merge": lambda: merge_mail() + rid_only_zone_mail(),
    "Cancel": cancel_mail,
    "Replies": replies_mail,
    "Tasks": tasks_mail,
    "Filter": filter_mail,
    "Private": private_mail,
    "Zones": zones_mail,
    "Mars": unknown_zone_mail,
    "Names": names_mail,
    "Broken": broken_mail,
    "Shared.Équipe": vdir_mail,
}


@pytest.fixture(scope="module")
def cal_server(dovecot_factory):
    """A Dovecot (with rawlog) holding every mailbox above.
    Returns (server, {mailbox: [IMAP UID of each message, in order]})."""
    dv = dovecot_factory.start(rawlog=True)
    uids = {}
    for mbox, make in MAILBOXES.items():
        uids[mbox] = [dv.add_message(mbox, raw, internaldate=when) for raw, when in make()]
    return dv, uids


@pytest.fixture(scope="module")
def mnt(cal_server, workroot, pki):
    dv, _ = cal_server
    with ModuleMount(dv, os.path.join(workroot, "cal-module-mount"), [], pki.ca_file) as m:
        yield m


@pytest.fixture(scope="module")
def tree(mnt):
    """Every file of the shared mount: {relative path: bytes}."""
    return calcheck.read_tree(mnt.mountpoint)


def mailbox_files(tree, d):
    """{name: bytes} of the event files of directory d (not merged.ics)."""
    return {p[len(d) + 1:]: b for p, b in tree.items()
            if os.path.dirname(p) == d and os.path.basename(p) != "merged.ics"}


def events_of(tree, d):
    """Sorted (UID, SUMMARY) of the masters and overrides in d's merged.ics."""
    return calcheck.summaries(calcheck.one_calendar(tree[d + "/merged.ics"]))


# ---- finding calendar data ------------------------------------------------

def test_every_calendar_part_is_found_and_decoded(tree):
    assert events_of(tree, "Found") == FOUND_EVENTS


def test_event_files_match_their_events(tree):
    files = mailbox_files(tree, "Found")
    assert sorted(files) == sorted(uid + ".ics" for uid, _ in FOUND_EVENTS)
    for uid, summary in FOUND_EVENTS:
        cal = calcheck.check_format(files[uid + ".ics"])
        assert calcheck.summaries(cal) == [(uid, summary)]


def test_forwarded_rfc822_invitation_found(tree):
    uid, summary = FOUND["cal-forwarded-outlook.eml"][0]
    cal = calcheck.one_calendar(tree["Found/%s.ics" % uid])
    assert calcheck.summaries(cal) == [(uid, summary)]
    assert calcheck.vtimezones(cal) == ["W. Europe Standard Time"]


@pytest.mark.parametrize("sample, fragment", [
    ("cal-apple-qp.eml", "LOCATION:Seefeldstrasse 12\\, 8008 Zürich\\, Schweiz"),
    ("cal-thunderbird-latin1.eml", "LOCATION:Café du Rhône"),
    ("cal-outlook-cp1252.eml", "DESCRIPTION;LANGUAGE=en-GB:Frank\u2019s numbers \u2013 final.\\n"),
    ("cal-forwarded-outlook.eml", "LOCATION;LANGUAGE=en-US:Room Havel"),
])
def test_transfer_encodings_and_charsets_decoded_to_utf8(tree, sample, fragment):
    uid = FOUND[sample][0][0]
    text = tree["Found/%s.ics" % uid].decode("utf-8")
    assert fragment in re.sub(r"\r\n ", "", text)


def test_inline_part_and_invite_ics_count_once(tree):
    uid = FOUND["cal-google-inline-and-attachment.eml"][0][0]
    merged = calcheck.one_calendar(tree["Found/merged.ics"])
    assert [str(e["UID"]) for e in calcheck.items(merged)].count(uid) == 1
    assert len(calcheck.items(calcheck.one_calendar(tree["Found/%s.ics" % uid]))) == 1


def test_bare_vevent_and_two_vcalendars_in_one_part_read(tree):
    for sample in ("cal-bare-vevent.eml", "cal-two-vcalendars.eml"):
        for uid, summary in FOUND[sample]:
            cal = calcheck.one_calendar(tree["Found/%s.ics" % uid])
            assert calcheck.summaries(cal) == [(uid, summary)]


def test_method_comes_from_the_body_not_the_mime_hint(tree):
    uids = [uid for uid, _ in events_of(tree, "Found")]
    assert "hint-mismatch-reply@example.org" not in uids  # hint REQUEST, body REPLY
    assert "bridge-no-hint@relay.example.net" in uids  # hint REPLY, body REQUEST


# ---- merging ----------------------------------------------------------------

def test_highest_sequence_then_dtstamp_then_latest_message_wins(tree):
    merged = calcheck.one_calendar(tree["Merge/merged.ics"])
    masters = {str(e["UID"]): str(e["SUMMARY"]) for e in calcheck.items(merged)
               if "RECURRENCE-ID" not in e}
    assert masters == {uid: summary for uid, (summary, _) in MERGE_EXPECT.items()}
    files = mailbox_files(tree, "Merge")
    assert sorted(files) == sorted([uid + ".ics" for uid in MERGE_EXPECT] +
                                   ["rid-zone@example.org.ics"])


def test_file_mtime_is_internaldate_of_winning_versions(mnt):
    for uid, (_, when) in MERGE_EXPECT.items():
        st = fs.stat(mnt.path("Merge", uid + ".ics"))
        assert int(st["mtime"]) == int(when.timestamp()), uid


def test_event_file_holds_master_and_overrides_with_their_timezone(tree):
    data = tree["Merge/series@example.org.ics"]
    cal = calcheck.check_format(data)
    evs = calcheck.items(cal)
    assert len(evs) == 2
    assert "RECURRENCE-ID" not in evs[0] and "RECURRENCE-ID" in evs[1]  # master first
    assert calcheck.vtimezones(cal) == ["Europe/Berlin"]
    assert calcheck.tzids_used(data) == {"Europe/Berlin"}
    starts = calcheck.occurrences(cal, "series@example.org", utc(2026, 12, 31))
    assert starts == [utc(2026, 3, 2, 8), utc(2026, 3, 10, 8), utc(2026, 3, 16, 8),
                      utc(2026, 3, 23, 8)]


def test_timezone_named_only_by_recurrence_id_travels_along(tree):
    data = tree["Merge/rid-zone@example.org.ics"]
    cal = calcheck.check_format(data)
    assert calcheck.vtimezones(cal) == ["Asia/Tokyo"]  # and not the unused Berlin
    assert calcheck.tzids_used(data) == {"Asia/Tokyo"}
    merged = tree["Merge/merged.ics"]
    assert calcheck.vtimezones(calcheck.check_format(merged)).count("Asia/Tokyo") == 1


def test_cancel_removes_event(tree):
    names = mailbox_files(tree, "Cancel")
    assert "gone@example.org.ics" not in names
    assert "gone@example.org" not in calcheck.uids(calcheck.one_calendar(tree["Cancel/merged.ics"]))


def test_cancel_of_one_occurrence_removes_only_it(tree):
    cal = calcheck.check_format(tree["Cancel/weekly@example.org.ics"])
    starts = calcheck.occurrences(cal, "weekly@example.org", utc(2026, 12, 31))
    assert starts == [utc(2026, 3, 2, 8), utc(2026, 3, 16, 8), utc(2026, 3, 23, 8),
                      utc(2026, 3, 30, 7)]
    master = [e for e in calcheck.items(cal) if "RECURRENCE-ID" not in e][0]
    assert "EXDATE" in master


def test_stale_cancel_ignored_and_reinvitation_restores(tree):
    merged = calcheck.one_calendar(tree["Cancel/merged.ics"])
    assert calcheck.summaries(merged) == [
        ("again@example.org", "Back on (new time)"), ("stale@example.org", "Still on"),
        ("weekly@example.org", "Weekly 1:1")]


def test_reply_refresh_counter_create_no_events(tree):
    assert sorted(mailbox_files(tree, "Replies")) == ["vendor@example.org.ics"]
    assert events_of(tree, "Replies") == [("vendor@example.org", "Vendor call")]


# ---- components, privacy, filters -------------------------------------------

def test_default_components_are_events_only(tree):
    assert sorted(mailbox_files(tree, "Tasks")) == ["task-event@example.org.ics"]


def test_components_option_makes_task_files(cal_server, mounter):
    m = mounter.mount(cal_server[0], options=[r"components=VEVENT\,VTODO"])
    assert fs.ls(m.path("Tasks")) == ["merged.ics", "task-event@example.org.ics",
                                      "todo@example.org.ics"]
    todo = calcheck.check_format(fs.cat(m.path("Tasks", "todo@example.org.ics")))
    assert calcheck.summaries(todo, "VTODO") == [("todo@example.org", "File the expense report")]
    assert calcheck.items(todo, "VEVENT") == []
    merged = calcheck.check_format(fs.cat(m.path("Tasks", "merged.ics")))
    assert calcheck.uids(merged, "VTODO") == ["todo@example.org"]
    assert calcheck.items(merged, "VJOURNAL") == []
    everything = mounter.mount(cal_server[0], options=[r"components=VEVENT\,VTODO\,VJOURNAL"])
    assert fs.ls(everything.path("Tasks")) == [
        "journal@example.org.ics", "merged.ics", "task-event@example.org.ics",
        "todo@example.org.ics"]
    journal = calcheck.check_format(fs.cat(everything.path("Tasks", "journal@example.org.ics")))
    assert calcheck.summaries(journal, "VJOURNAL") == [("journal@example.org",
                                                        "Notes from the offsite")]


def test_privacy_busy_hides_details(cal_server, mounter):
    m = mounter.mount(cal_server[0], options=["privacy=busy"])
    for path in (m.path("Private", "private@example.org.ics"), m.path("Private", "merged.ics"),
                 m.path("merged.ics")):
        data = fs.cat(path)
        cal = calcheck.check_format(data, unrepaired=[UNKNOWN_TZ])
        evs = [e for e in calcheck.items(cal) if str(e["UID"]) == "private@example.org"]
        assert len(evs) == 1, path
        ev = evs[0]
        assert str(ev["SUMMARY"]) == "Busy"
        for prop in ("DESCRIPTION", "LOCATION", "ATTENDEE", "ATTACH", "COMMENT"):
            assert prop not in ev, (path, prop)
        assert ev.decoded("DTSTART") == U1
        for secret in (b"Salary", b"numbers", b"Room 4.12", b"hr@example.org", b"offer.pdf",
                       b"confidential"):
            assert secret not in data, (path, secret)
    # Every other event is masked the same way.
    for ev in calcheck.items(calcheck.one_calendar(fs.cat(m.path("Found", "merged.ics")))):
        assert str(ev["SUMMARY"]) == "Busy"


def filtered_uids(m):
    """UIDs of the Filter mailbox's files and merged.ics, checked to agree."""
    files = sorted(n[:-4] for n in fs.ls(m.path("Filter")) if n != "merged.ics")
    merged = calcheck.uids(calcheck.one_calendar(fs.cat(m.path("Filter", "merged.ics"))))
    assert files == merged
    return set(files)


def test_after_before_keep_events_with_an_occurrence_in_window(cal_server, mounter):
    m = mounter.mount(cal_server[0], options=["after=2026-06-01", "before=2026-07-01"])
    assert filtered_uids(m) == {"weekly-review@example.org", "june-standup@other.example",
                                "june-review@other.example", "overlap@example.org"}


def test_after_alone_and_rfc3339_date_time(cal_server, mounter):
    m = mounter.mount(cal_server[0], options=["after=2026-12-31T23:00:00+01:00"])
    assert filtered_uids(m) == {"weekly-review@example.org", "future@example.org"}


def test_match_repeated_all_must_match_case_insensitive(cal_server, mounter):
    m = mounter.mount(cal_server[0], options=["match=SUMMARY~REVIEW",
                                              r"match=ORGANIZER~@example\.org$"])
    assert filtered_uids(m) == {"weekly-review@example.org", "old-review@example.org"}
    one = mounter.mount(cal_server[0], options=["match=summary~review"])
    assert filtered_uids(one) == {"weekly-review@example.org", "old-review@example.org",
                                  "june-review@other.example"}


def test_search_keys_run_on_server_and_unmatched_never_fetched(cal_server, mounter):
    dv, uids = cal_server
    raw = wire.Rawlog(dv)
    since = raw.mark()
    m = mounter.mount(dv, options=["search=FROM boss@example.org", "mailboxes=Filter"])
    assert filtered_uids(m) == FROM_BOSS
    assert m.stop() == 0, m.stderr()
    sessions = raw.sessions(since)
    wire.wait_closed(dv, sessions)
    commands = [c for s in wire.Rawlog(dv).sessions(since) for c in s.commands]
    assert [c for c in commands if re.match(r"UID SEARCH .*FROM", c.text, re.I)]
    peers = {uids["Filter"][3], uids["Filter"][4]}  # the two messages from peer
    fetched = set().union(*[u for u, _ in wire.body_peeks(commands)])
    assert fetched and not fetched & peers
    for c in commands:
        m2 = re.match(r"UID FETCH (\S+) \(.*BODYSTRUCTURE", c.text, re.I)
        if m2 and "*" not in m2.group(1):
            assert not wire.parse_uid_set(m2.group(1)) & peers


BAD_OPTIONS = [
    ("match=SUMMARY", "match"),
    ("match=SUMMARY~(", "match"),
    ("match=~x", "match"),
    ("after=2026-13-01", "after"),
    ("before=yesterday", "before"),
    (r"components=VEVENT\,VFOO", "components"),
    ("search=FROM", "search"),
    ("search=NOSUCHKEY x", "search"),
    ("privacy=public", "privacy"),
]


@pytest.mark.parametrize("option, named", BAD_OPTIONS,
                         ids=["bad%d" % i for i in range(len(BAD_OPTIONS))])
def test_bad_filter_syntax_fails_mount_naming_option(cal_server, mounter, option, named):
    dv = cal_server[0]
    rc, err = mounter.expect_failure(dv.url(), options=[option], password=dv.password)
    assert rc == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert named in lines[0].lower(), lines[0]


# ---- layout -----------------------------------------------------------------

def test_vdir_layout_only_event_files_and_displayname(cal_server, mounter):
    m = mounter.mount(cal_server[0], options=["vdir"])
    assert "merged.ics" in fs.ls(m.mountpoint)
    for mbox in MAILBOXES:
        d = m.path(*mbox.split("."))
        names = fs.ls(d)
        assert "merged.ics" not in names, mbox
        assert "displayname" in names, mbox
        # Its name (khal shows it): the mailbox's, in UTF-8.
        shown = fs.cat(os.path.join(d, "displayname")).decode("utf-8")
        assert shown.endswith(mbox.split(".")[-1]) and "\n" not in shown.strip(), shown
        for n in names:
            if n == "displayname":
                continue
            assert n.endswith(".ics"), (mbox, n)
            cal = calcheck.check_format(fs.cat(os.path.join(d, n)), unrepaired=[UNKNOWN_TZ])
            assert len(calcheck.uids(cal)) == 1, (mbox, n)  # khal: one UID per file
    # A directory without a mailbox of its own holds only its children.
    assert fs.ls(m.path("Shared")) == ["Équipe"]
    assert fs.ls(m.path("Shared", "Équipe")) == ["displayname", "vdir-event@example.org.ics"]


def test_khal_reads_mailbox_directories_as_vdir_calendars(cal_server, mounter, tmp_path):
    m = mounter.mount(cal_server[0], options=["vdir"])
    lines, err = calcheck.khal_list(
        {"zones": m.path("Zones"), "cancel": m.path("Cancel"), "merge": m.path("Merge")},
        "2026-02-01", "2026-09-01", str(tmp_path / "khal"))
    got = sorted(lines)
    want = [
        "2026-02-10 13:00 | 2026-02-10 14:00 | Zone test 0",
        "2026-05-01 00:00 | 2026-05-01 01:00 | Zone test 2",
        "2026-07-04 14:00 | 2026-07-04 15:00 | Zone test 1",
        "2026-08-03 07:00 | 2026-08-03 08:00 | Zone test 3",
        # Cancel: occurrence of 9 March cancelled; Merge: override moved to 10 March.
        "2026-03-02 08:00 | 2026-03-02 09:00 | Weekly 1:1",
        "2026-03-16 08:00 | 2026-03-16 09:00 | Weekly 1:1",
        "2026-03-23 08:00 | 2026-03-23 09:00 | Weekly 1:1",
        "2026-03-30 07:00 | 2026-03-30 08:00 | Weekly 1:1",
        "2026-03-02 11:00 | 2026-03-02 12:00 | Back on (new time)",
        "2026-03-02 09:00 | 2026-03-02 10:00 | Still on",
    ]
    for line in want:
        assert line in got, "%s not in khal's list:\n%s\n%s" % (line, "\n".join(got), err)
    assert not [line for line in got if "Cancelled meeting" in line]
    weekly = [line for line in got if re.search(r"\| Weekly sync( \(moved\))?$", line)]
    assert sorted(weekly) == sorted([
        "2026-03-02 08:00 | 2026-03-02 09:00 | Weekly sync",
        "2026-03-10 08:00 | 2026-03-10 09:00 | Weekly sync (moved)",
        "2026-03-16 08:00 | 2026-03-16 09:00 | Weekly sync",
        "2026-03-23 08:00 | 2026-03-23 09:00 | Weekly sync"])


def test_timezones_repaired_or_left_and_counted(tree, mnt):
    for uid, tzid, _, _, start in ZONES:
        cal = calcheck.check_format(tree["Zones/%s.ics" % uid])
        assert calcheck.vtimezones(cal) == [tzid], uid
        ev = calcheck.items(cal)[0]
        assert ev["DTSTART"].params["TZID"] == tzid
    data = tree["Mars/tz-unknown@example.com.ics"]
    calcheck.check_format(data, unrepaired=[UNKNOWN_TZ])
    assert calcheck.tzids_used(data) == {UNKNOWN_TZ}
    assert b"BEGIN:VTIMEZONE" not in data
    status = fs.cat(mnt.path(".status")).decode()
    mars = [line for line in status.splitlines() if line.startswith("Mars:")]
    assert mars and re.search(r"\b1 warnings?\b", mars[0]), status
    zones = [line for line in status.splitlines() if line.startswith("Zones:")]
    assert zones and re.search(r"\b0 warnings\b", zones[0]), status


def test_file_names_safe_distinct_and_mapped_back(tree):
    files = mailbox_files(tree, "Names")
    assert len(files) == len(NAME_UIDS) + 1
    back = {}
    for name, data in files.items():
        assert name.endswith(".ics")
        assert not name.startswith(".") and "/" not in name and "\0" not in name
        assert name not in ("merged.ics", ".status", ".refresh", "displayname")
        assert len(name.encode()) <= 255
        name.encode("utf-8")
        back[name] = calcheck.uids(calcheck.one_calendar(data))[0]
    assert set(NAME_UIDS) <= set(back.values())
    assert len(set(back.values())) == len(files)  # the Latin-1 UID, made valid UTF-8
    assert back["plain-uid_1.2+x@example.org.ics"] == "plain-uid_1.2+x@example.org"


def test_broken_parts_skipped_counted_and_harmless(tree, mnt):
    assert "good@example.org.ics" in mailbox_files(tree, "Broken")
    assert "cut@example.org.ics" not in mailbox_files(tree, "Broken")
    for name, data in mailbox_files(tree, "Broken").items():
        calcheck.check_format(data)
    status = fs.cat(mnt.path(".status")).decode()
    for mbox, skipped in (("Broken", r"[1-9]\d*"), ("Found", "1")):
        line = [x for x in status.splitlines() if x.startswith(mbox + ":")][0]
        assert re.search(r"\b%s skipped\b" % skipped, line), line
    assert "merged.ics" in fs.ls(mnt.mountpoint)  # still serving


# ---- every output file ----------------------------------------------------------

def test_every_file_is_well_formed(tree):
    assert len(tree) > 40
    for path, data in tree.items():
        unrepaired = [UNKNOWN_TZ] if path.startswith("Mars/") or path == "merged.ics" else []
        calcheck.check_format(data, unrepaired=unrepaired)


def merge_keys(data):
    """(UID, RECURRENCE-ID) of every VEVENT in data."""
    return [(str(e["UID"]), e["RECURRENCE-ID"].to_ical() if "RECURRENCE-ID" in e else b"")
            for e in calcheck.items(calcheck.one_calendar(data))]


def test_root_merged_holds_every_event_once(tree):
    per_mailbox = []
    for path, data in tree.items():
        if path.endswith("/merged.ics"):
            per_mailbox += merge_keys(data)
    root = merge_keys(tree["merged.ics"])
    assert len(root) == len(set(root))
    assert sorted(root) == sorted(per_mailbox)


def test_output_deterministic_across_mounts(cal_server, mounter):
    dv = cal_server[0]
    boxes = ["mailboxes=" + ":".join(MAILBOXES)]
    first = mounter.mount(dv, options=boxes)
    second = mounter.mount(dv, options=boxes + ["no_disk_cache", "connections=1"])
    a = calcheck.read_tree(first.mountpoint)
    b = calcheck.read_tree(second.mountpoint)
    assert sorted(a) == sorted(b)
    assert len(a) > 40
    for path in a:
        assert a[path] == b[path], path


def test_update_replaces_same_name_new_bytes_newer_mtime(cal_server, mounter):
    dv = cal_server[0]
    mbox = "Live"
    first = dv.add_message(mbox, inv("live@example.org", "Retro", U1, seq=0), internaldate=t(5))
    m = mounter.mount(dv)
    before = fs.cat(m.path(mbox, "live@example.org.ics"))
    assert int(fs.stat(m.path(mbox, "live@example.org.ics"))["mtime"]) == int(t(5).timestamp())
    second = dv.add_message(mbox, inv("live@example.org", "Retro (moved)",
                                      U1 + datetime.timedelta(days=1), seq=1), internaldate=t(20))
    status = fs.cat(m.path(mbox, ".refresh")).decode()
    assert status.startswith("Live:") and "2 messages" in status, status
    assert fs.ls(m.path(mbox)) == ["live@example.org.ics", "merged.ics"]
    after = fs.cat(m.path(mbox, "live@example.org.ics"))
    assert after != before
    cal = calcheck.check_format(after)
    assert calcheck.summaries(cal) == [("live@example.org", "Retro (moved)")]
    assert str(calcheck.items(cal)[0]["X-IMAPCALFS-SOURCE"]).endswith(";UID=%d" % second)
    assert second > first
    assert int(fs.stat(m.path(mbox, "live@example.org.ics"))["mtime"]) == int(t(20).timestamp())


def test_override_without_master_joins_master_when_it_arrives(cal_server, mounter):
    dv = cal_server[0]
    mbox = "Orphan"
    rid = D1 + datetime.timedelta(days=14)
    dv.add_message(mbox, inv("orphan@example.org", "Just this once", rid + datetime.timedelta(
        hours=3), seq=1, tz="Europe/Berlin", recurrence_id=rid), internaldate=t(5))
    m = mounter.mount(dv)
    assert fs.ls(m.path(mbox)) == ["merged.ics", "orphan@example.org.ics"]
    cal = calcheck.check_format(fs.cat(m.path(mbox, "orphan@example.org.ics")))
    assert [("RECURRENCE-ID" in e) for e in calcheck.items(cal)] == [True]
    dv.add_message(mbox, inv("orphan@example.org", "Series", D1, tz="Europe/Berlin",
                             rrule="FREQ=WEEKLY;COUNT=4"), internaldate=t(6))
    fs.cat(m.path(mbox, ".refresh"))
    assert fs.ls(m.path(mbox)) == ["merged.ics", "orphan@example.org.ics"]
    cal = calcheck.check_format(fs.cat(m.path(mbox, "orphan@example.org.ics")))
    assert [("RECURRENCE-ID" in e) for e in calcheck.items(cal)] == [False, True]
    assert calcheck.occurrences(cal, "orphan@example.org", utc(2026, 12, 31)) == [
        utc(2026, 3, 2, 8), utc(2026, 3, 9, 8), utc(2026, 3, 16, 11), utc(2026, 3, 23, 8)]
