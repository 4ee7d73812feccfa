"""The client corpus through a real mount (issue 3): every message of
tests/corpus/clients/ (Outlook/Exchange, Google, Apple, Thunderbird,
Zimbra, SOGo, Notes, Nextcloud, Evolution, Horde, forwards, replies,
legacy charsets, broken mail) goes into the test Dovecot, one mailbox per
scenario group, and what expected.json says each mailbox must show is
checked with ls/cat on the mount, python3-icalendar and khal."""

import datetime
import os
import re

import icalendar.timezone_cache
import pytest

from harness import calcheck, calfiles, corpus, fs

SPEC = corpus.expected()
BOXES = SPEC["mailboxes"]
COMPONENT_OPTIONS = sorted({opt for box in BOXES.values() for opt in box.get("components", {})})


@pytest.fixture(scope="module")
def corpus_server(dovecot_factory):
    """A Dovecot holding the whole corpus. Returns (server, {file: (mailbox, UID)})."""
    dv = dovecot_factory.start()
    return dv, corpus.load(dv, SPEC)


@pytest.fixture(scope="module")
def mnt(corpus_server, workroot, pki):
    with corpus.ModuleMount(corpus_server[0], os.path.join(workroot, "corpus-mount"), [],
                            pki.ca_file) as m:
        yield m


@pytest.fixture(scope="module")
def tree(mnt):
    """Every file of the module's mount: {relative path: bytes}."""
    return calcheck.read_tree(mnt.mountpoint)


@pytest.fixture(scope="module")
def status(mnt, tree):
    """.status, read after the whole tree (every mailbox synced)."""
    return fs.cat(mnt.path(".status")).decode("utf-8")


def parse_alone(data, check=True):
    """data parsed as if by a fresh process: python3-icalendar 4 keeps the
    first VTIMEZONE it meets per TZID for the whole process, and Outlook's
    "Customized Time Zone" means different zones in different mail."""
    icalendar.timezone_cache._timezone_cache.clear()
    return calcheck.check_format(data) if check else calcheck.one_calendar(data)


def unfolded(data):
    return re.sub(r"\r\n[ \t]", "", data.decode("utf-8"))


def components(cal, uid, kind="VEVENT"):
    """(master, {RECURRENCE-ID as UTC datetime: override}) of uid in cal."""
    master, overrides = None, {}
    for c in calcheck.items(cal, kind):
        if str(c["UID"]) != uid:
            continue
        if "RECURRENCE-ID" in c:
            overrides[c.decoded("RECURRENCE-ID")] = c
        else:
            assert master is None, "two masters of %s" % uid
            master = c
    return master, overrides


def as_utc(when):
    """A date-time in UTC; a date as its midnight UTC (as calcheck.occurrences
    gives all-day occurrences)."""
    if isinstance(when, datetime.datetime):
        return when.astimezone(datetime.timezone.utc)
    return datetime.datetime(when.year, when.month, when.day, tzinfo=datetime.timezone.utc)


def merge_key(component):
    """(UID, RECURRENCE-ID as written) of a component."""
    rid = component["RECURRENCE-ID"].to_ical() if "RECURRENCE-ID" in component else b""
    return str(component["UID"]), rid


def check_time(component, prop, want, tzid, where):
    """component's prop is the expected time: same instant, same wall
    clock and offset as the sender wrote it, same TZID parameter."""
    got = component.decoded(prop)
    want = corpus.parse_when(want)
    if isinstance(want, datetime.datetime):
        assert isinstance(got, datetime.datetime), (where, prop, got)
        assert got == want, (where, prop, got, want)
        assert got.replace(tzinfo=None) == want.replace(tzinfo=None), (where, prop, got, want)
        assert got.utcoffset() == want.utcoffset(), (where, prop, got, want)
    else:
        assert not isinstance(got, datetime.datetime) and got == want, (where, prop, got, want)
    assert component[prop].params.get("TZID") == tzid, (where, prop, component[prop].params)


# ---- the corpus itself ------------------------------------------------------

def test_corpus_has_thirty_messages_each_with_written_outcome():
    files = corpus.message_files()
    assert len(files) >= 30
    listed = [m["file"] for box in BOXES.values() for m in box["messages"]]
    assert sorted(listed) == files, "expected.json must list every message exactly once"
    with open(os.path.join(corpus.CORPUS_DIR, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for box in BOXES.values():
        for m in box["messages"]:
            assert m["models"] and m["shows"], m["file"]
            assert "`%s`" % m["file"] in readme, "README.md does not describe " + m["file"]


# ---- what each mailbox shows ------------------------------------------------

@pytest.mark.parametrize("mbox", list(BOXES))
def test_mailbox_lists_exactly_the_expected_event_files(mnt, mbox):
    want = sorted(["merged.ics"] + [uid + ".ics" for uid in BOXES[mbox]["events"]])
    assert fs.ls(mnt.path(mbox)) == want


@pytest.mark.parametrize("mbox", list(BOXES))
def test_event_files_hold_expected_summary_times_and_zones(tree, mbox):
    files = corpus.event_files(tree, mbox)
    for uid, want in BOXES[mbox]["events"].items():
        data = files[uid + ".ics"]
        cal = parse_alone(data)
        assert calcheck.uids(cal) == [uid]
        master, overrides = components(cal, uid)
        assert master is not None, uid
        assert str(master["SUMMARY"]) == want["summary"], uid
        check_time(master, "DTSTART", want["start"], want.get("tzid"), uid)
        if want["end"] is None:  # a DURATION instead
            assert "DTEND" not in master and "DURATION" in master, uid
        else:
            check_time(master, "DTEND", want["end"], want.get("tzid"), uid)
        assert calcheck.vtimezones(cal) == ([want["tzid"]] if "tzid" in want else []), uid
        got_overrides = {rid: str(c["SUMMARY"]) for rid, c in overrides.items()}
        assert got_overrides == {corpus.parse_when(k): v
                                 for k, v in want.get("overrides", {}).items()}, uid
        text = unfolded(data)
        for fragment in want.get("contains", []):
            assert fragment in text, (uid, fragment)
        for fragment in want.get("lacks", []):
            assert fragment not in text, (uid, fragment)


@pytest.mark.parametrize("mbox", [b for b in BOXES if any(
    "occurrences" in e for e in BOXES[b]["events"].values())])
def test_series_occur_as_expected_after_overrides_and_cancelled_occurrences(tree, mbox):
    files = corpus.event_files(tree, mbox)
    for uid, want in BOXES[mbox]["events"].items():
        if "occurrences" not in want:
            continue
        cal = parse_alone(files[uid + ".ics"], check=False)
        until = datetime.datetime(2027, 1, 1, tzinfo=datetime.timezone.utc)
        assert calcheck.occurrences(cal, uid, until) == sorted(
            as_utc(corpus.parse_when(w)) for w in want["occurrences"])


@pytest.mark.parametrize("mbox", [b for b in BOXES if any(
    "mtime" in e for e in BOXES[b]["events"].values())])
def test_file_mtime_is_internaldate_of_the_winning_message(mnt, mbox):
    for uid, want in BOXES[mbox]["events"].items():
        if "mtime" in want:
            st = fs.stat(mnt.path(mbox, uid + ".ics"))
            assert int(st["mtime"]) == int(corpus.parse_when(want["mtime"]).timestamp()), uid


@pytest.mark.parametrize("mbox", list(BOXES))
def test_cancelled_replies_and_broken_leave_nothing_behind(tree, mbox):
    merged = calcheck.one_calendar(tree[mbox + "/merged.ics"])
    root = calcheck.one_calendar(tree["merged.ics"])
    assert calcheck.uids(merged) == sorted(BOXES[mbox]["events"])
    for uid in BOXES[mbox]["absent"]:
        assert uid + ".ics" not in corpus.event_files(tree, mbox)
        assert uid not in calcheck.uids(merged), uid
        # Not even through another kind of component.
        for kind in ("VTODO", "VJOURNAL"):
            assert uid not in calcheck.uids(merged, kind), uid
    # The root merged.ics holds every mailbox's events, each once.
    per_box = [merge_key(e) for e in calcheck.items(merged)]
    in_root = [merge_key(e) for e in calcheck.items(root)]
    for key in per_box:
        assert in_root.count(key) == 1, key


@pytest.mark.parametrize("mbox", list(BOXES))
def test_status_counts_parts_skipped_and_warnings(status, mbox):
    want = BOXES[mbox]["status"]
    line = corpus.status_line(status, mbox)
    expect = ("%(messages)d messages, %(calendar_messages)d with calendar data, %(events)d events, "
              "%(parts)d calendar parts, %(skipped)d skipped, %(warnings)d warnings" % want)
    assert expect in line, line
    assert line.startswith(mbox + ": ok,") and line.endswith("last error: none"), line


# ---- every file, khal -------------------------------------------------------

def test_every_output_file_parses_with_python_icalendar(tree):
    assert sorted(p.split("/")[0] for p in tree if p.endswith("/merged.ics")) == sorted(
        list(BOXES) + ["INBOX"])
    for path, data in tree.items():
        cal = calcheck.check_format(data)
        if path != "merged.ics" and not path.endswith("/merged.ics"):
            assert len(calcheck.uids(cal)) == 1, path
    want = sorted(uid for box in BOXES.values() for uid in box["events"])
    assert calcheck.uids(calcheck.one_calendar(tree["merged.ics"])) == want


def test_khal_lists_every_expected_event_at_its_local_time(corpus_server, mounter, tmp_path):
    m = mounter.mount(corpus_server[0], options=["vdir"])
    start, end = SPEC["khal_window"]
    # One run for the mailboxes that can share one (khal's library keeps
    # one VTIMEZONE per TZID per process: see parse_alone), one for each other.
    runs = [[b for b in BOXES if not BOXES[b].get("khal_alone")]]
    runs += [[b] for b in BOXES if BOXES[b].get("khal_alone")]
    for i, boxes in enumerate(runs):
        calendars = {mbox.lower(): m.path(mbox) for mbox in boxes}
        lines, err = calcheck.khal_list(calendars, start, end, str(tmp_path / ("khal%d" % i)))
        want = sorted(line for b in boxes for e in BOXES[b]["events"].values()
                      for line in e["khal"])
        assert sorted(lines) == want, "khal:\n%s\nstderr:\n%s" % ("\n".join(sorted(lines)), err)
        assert "warning" not in err.lower() and "error" not in err.lower(), err


def starts_in(cal):
    """{(UID, RECURRENCE-ID): DTSTART} of the events of cal."""
    return {merge_key(e): e.decoded("DTSTART") for e in calcheck.items(cal)}


def expected_masters(boxes):
    return {(uid, b""): corpus.parse_when(e["start"])
            for b in boxes for uid, e in BOXES[b]["events"].items()}


@pytest.mark.parametrize("mbox", list(BOXES))
def test_mailbox_merged_ics_keeps_every_event_at_its_time(tree, mbox):
    got = starts_in(parse_alone(tree[mbox + "/merged.ics"]))
    for key, start in expected_masters([mbox]).items():
        assert got[key] == start, key


def test_root_merged_ics_keeps_every_event_at_its_time(tree):
    got = starts_in(parse_alone(tree["merged.ics"]))
    wrong = {key: (got[key], start) for key, start in expected_masters(BOXES).items()
             if got[key] != start}
    assert not wrong, wrong


# ---- broken mail ------------------------------------------------------------

def test_broken_parts_neither_hide_good_events_nor_stop_the_mount(corpus_server, mnt, tree):
    dv, uids = corpus_server
    assert mnt.proc.poll() is None, "the daemon stopped"
    # The good calendar of the message that also carries a malformed one
    # comes from exactly that message.
    box, uid = uids["broken-05-good-ics-next-to-bad-ics.eml"]
    data = corpus.event_files(tree, box)["good-next-to-bad-0315@events.example.com.ics"]
    assert calfiles.source_urls(data)[0].endswith(";UID=%d" % uid)
    # Re-syncing the mailbox with the broken mail works, and says so.
    line = fs.cat(mnt.path("Broken", ".refresh")).decode("utf-8")
    assert line.startswith("Broken: ok,") and "5 skipped" in line, line
    assert fs.ls(mnt.path("Broken")) == sorted(["merged.ics"] + [
        u + ".ics" for u in BOXES["Broken"]["events"]])
    assert "merged.ics" in fs.ls(mnt.mountpoint)
    assert mnt.proc.poll() is None, "the daemon stopped"


# ---- tasks and journal entries -----------------------------------------------

@pytest.mark.parametrize("option", COMPONENT_OPTIONS,
                         ids=[o.replace("VEVENT,", "").replace(",", "+") for o in COMPONENT_OPTIONS])
def test_components_option_task_and_journal_files(corpus_server, mounter, option):
    m = mounter.mount(corpus_server[0], options=["components=" + option.replace(",", r"\,")])
    for mbox, box in BOXES.items():
        want = box.get("components", {}).get(option)
        if want is None:
            continue
        assert fs.ls(m.path(mbox)) == sorted(["merged.ics"] + [u + ".ics" for u in want["files"]])
        for kind in ("VTODO", "VJOURNAL"):
            for uid, props in want.get(kind, {}).items():
                cal = calcheck.check_format(fs.cat(m.path(mbox, uid + ".ics")))
                assert calcheck.summaries(cal, kind) == [(uid, props["summary"])]
                assert calcheck.items(cal, "VEVENT") == []
                item = calcheck.items(cal, kind)[0]
                if "due" in props:
                    check_time(item, "DUE", props["due"], props.get("tzid"), uid)
                    assert calcheck.vtimezones(cal) == [props["tzid"]]
        merged = calcheck.check_format(fs.cat(m.path(mbox, "merged.ics")))
        got = sorted(calcheck.uids(merged) + calcheck.uids(merged, "VTODO") +
                     calcheck.uids(merged, "VJOURNAL"))
        assert got == sorted(want["files"])


# ---- the same corpus from a Maildir ------------------------------------------

def test_maildir_source_shows_the_same_corpus(corpus_server, tree, status, mounter):
    """The Dovecot's own Maildir, mounted with maildir:, gives the same files
    (apart from the source URLs) and the same counts: the local MIME parser
    finds what the server's BODYSTRUCTURE finds, broken mail included."""
    dv = corpus_server[0]
    md = mounter.mount(source="maildir:" + os.path.join(dv.mail_dir, dv.user), password=None,
                       cafile=None)
    md_tree = calcheck.read_tree(md.mountpoint)
    assert sorted(md_tree) == sorted(tree)
    for path, data in tree.items():
        assert calfiles.without_source(md_tree[path]) == calfiles.without_source(data), path
    md_status = fs.cat(md.path(".status")).decode("utf-8")
    for mbox in BOXES:
        counts = re.compile(r"\d+ messages, .* unreadable messages")
        want = counts.search(corpus.status_line(status, mbox)).group(0)
        assert counts.search(corpus.status_line(md_status, mbox)).group(0) == want, mbox
