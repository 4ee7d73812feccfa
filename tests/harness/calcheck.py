"""Checking what a mount serves as calendars, with independent tools:
python3-icalendar parses every file, dateutil expands recurrences, and
khal (Debian's package) reads a mailbox directory as a vdir calendar.

Nothing here touches the mount from the test process: the bytes come from
harness.fs (child processes with timeouts), khal runs as a subprocess.
"""

import datetime
import os
import re
import subprocess

import icalendar
from dateutil import rrule

from . import fs, mount

PYTHON = "/usr/bin/python3"
PRODID_RE = re.compile(r"imapcalfs", re.I)

# Properties whose TZID parameter names a VTIMEZONE (RFC 5545 §3.2.19).
TZ_PROPS = ("DTSTART", "DTEND", "DUE", "EXDATE", "RDATE", "RECURRENCE-ID")


def one_calendar(data):
    """Parses data; asserts it is exactly one VCALENDAR and returns it."""
    cals = icalendar.Calendar.from_ical(data, multiple=True)
    assert len(cals) == 1, "expected one VCALENDAR, got %d" % len(cals)
    assert cals[0].name == "VCALENDAR"
    return cals[0]


def items(cal, kind="VEVENT"):
    """The components of one kind (VEVENT, VTODO, VJOURNAL) in cal."""
    return [c for c in cal.walk(kind)]


def summaries(cal, kind="VEVENT"):
    """Sorted (UID, SUMMARY) of cal's components of kind."""
    return sorted((str(c["UID"]), str(c.get("SUMMARY", ""))) for c in items(cal, kind))


def uids(cal, kind="VEVENT"):
    return sorted(set(str(c["UID"]) for c in items(cal, kind)))


def tzids_used(data):
    """TZID parameters of the properties that use time zones, read from the
    unfolded text (params may be quoted and contain ':' and ',')."""
    text = re.sub(r"\r\n[ \t]", "", data.decode("utf-8"))
    used = set()
    for line in text.split("\r\n"):
        name = re.match(r"^([A-Za-z-]+)[;:]", line)
        if not name or name.group(1).upper() not in TZ_PROPS:
            continue
        m = re.search(r';TZID=(?:"([^"]*)"|([^;:]*))', line)
        if m:
            used.add(m.group(1) if m.group(1) is not None else m.group(2))
    return used


def vtimezones(cal):
    """TZIDs of the VTIMEZONEs in cal, in order (duplicates kept)."""
    return [str(t["TZID"]) for t in cal.walk("VTIMEZONE")]


def check_format(data, unrepaired=()):
    """Everything SPEC §2 and issue 3 require of a file imapcalfs writes:
    valid UTF-8, CRLF line ends only, lines folded at 75 octets, one
    VCALENDAR with VERSION 2.0, our PRODID, CALSCALE GREGORIAN and no METHOD,
    exactly one VTIMEZONE per TZID used (TZIDs in `unrepaired` may lack
    one), X-IMAPCALFS-SOURCE on every component.  Returns the calendar."""
    data.decode("utf-8")  # raises on invalid UTF-8
    assert data.endswith(b"\r\n"), "no final CRLF"
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF in output"
    assert b"\r" not in data.replace(b"\r\n", b""), "bare CR in output"
    for line in data.split(b"\r\n"):
        assert len(line) <= 75, "line longer than 75 octets: %r" % line
    cal = one_calendar(data)
    assert str(cal["VERSION"]) == "2.0"
    assert PRODID_RE.search(str(cal.get("PRODID", ""))), cal.get("PRODID")
    assert str(cal.get("CALSCALE", "")).upper() == "GREGORIAN"
    assert "METHOD" not in cal
    vtz = vtimezones(cal)
    assert len(vtz) == len(set(vtz)), "duplicate VTIMEZONE: %s" % vtz
    used = tzids_used(data)
    assert set(vtz) <= used, "VTIMEZONE not used: %s" % (set(vtz) - used)
    missing = used - set(vtz) - set(unrepaired)
    assert not missing, "TZID without VTIMEZONE: %s" % missing
    for kind in ("VEVENT", "VTODO", "VJOURNAL"):
        for c in items(cal, kind):
            assert str(c.get("X-IMAPCALFS-SOURCE", "")).startswith(("imap://", "file://")), c
    return cal


def read_tree(mountpoint, skip_dirs=()):
    """{relative path: bytes} of every file `find` lists under mountpoint."""
    out = {}
    for rel in fs.find(mountpoint, kind="f"):
        if rel.split("/")[0] in skip_dirs:
            continue
        out[rel] = fs.cat(os.path.join(mountpoint, rel))
    return out


# ---- recurrences -----------------------------------------------------------

def _as_utc(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=datetime.timezone.utc)
        return value.astimezone(datetime.timezone.utc)
    return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc)


def _attach(naive, tz):
    """naive local time in tz (pytz or zoneinfo) as an aware datetime."""
    if tz is None:
        return naive.replace(tzinfo=datetime.timezone.utc)
    if hasattr(tz, "localize"):
        return tz.localize(naive)
    return naive.replace(tzinfo=tz)


def _dates(prop):
    if prop is None:
        return []
    props = prop if isinstance(prop, list) else [prop]
    return [_as_utc(d.dt) for p in props for d in p.dts]


def occurrences(cal, uid, until):
    """Start times (UTC) of the occurrences of event uid in cal up to
    `until`: the master's RRULE/RDATE minus EXDATE, overrides applied,
    cancelled overrides dropped (RFC 5545 §3.8.5, RFC 5546 §3.2.5)."""
    master, overrides = None, {}
    for ev in items(cal):
        if str(ev["UID"]) != uid:
            continue
        if "RECURRENCE-ID" in ev:
            overrides[_as_utc(ev.decoded("RECURRENCE-ID"))] = ev
        else:
            master = ev
    starts = set()
    if master is not None:
        start = master.decoded("DTSTART")
        if "RRULE" in master:
            text = master["RRULE"].to_ical().decode()
            if isinstance(start, datetime.datetime):
                tz = start.tzinfo
                # Expand in local wall time, then attach the zone: pytz zones
                # (icalendar 4) give wrong offsets to datetime arithmetic.
                local = start.replace(tzinfo=None)
                limit = until.astimezone(tz).replace(tzinfo=None) if tz else until.replace(
                    tzinfo=None)
                for d in rrule.rrulestr(text, dtstart=local, ignoretz=True).between(
                        local - datetime.timedelta(seconds=1), limit, inc=True):
                    starts.add(_as_utc(_attach(d, tz)))
            else:
                base = datetime.datetime(start.year, start.month, start.day)
                rule = rrule.rrulestr(text, dtstart=base, ignoretz=True)
                starts.update(_as_utc(d) for d in rule.between(
                    base - datetime.timedelta(seconds=1), until.replace(tzinfo=None), inc=True))
        else:
            starts.add(_as_utc(start))
        starts.update(_dates(master.get("RDATE")))
        starts -= set(_dates(master.get("EXDATE")))
    for rid, ov in overrides.items():
        starts.discard(rid)
        if str(ov.get("STATUS", "")).upper() != "CANCELLED":
            starts.add(_as_utc(ov.decoded("DTSTART")))
    return sorted(s for s in starts if s <= until)


# ---- khal ------------------------------------------------------------------

def khal_list(calendars, start, end, workdir):
    """Runs `khal list START END` with a private configuration in which
    each {name: directory} of calendars is a vdir calendar, local time zone
    UTC.  Returns the event lines "<start> | <end> | <title>"."""
    os.makedirs(workdir, exist_ok=True)
    conf = os.path.join(workdir, "khal.conf")
    lines = ["[calendars]"]
    for name, path in calendars.items():
        lines += ["[[%s]]" % name, "path = %s" % path, "type = calendar", "readonly = True"]
    lines += [
        "[locale]",
        "local_timezone = UTC",
        "default_timezone = UTC",
        "timeformat = %H:%M",
        "dateformat = %Y-%m-%d",
        "longdateformat = %Y-%m-%d",
        "datetimeformat = %Y-%m-%d %H:%M",
        "longdatetimeformat = %Y-%m-%d %H:%M",
        "firstweekday = 0",
        "[sqlite]",
        "path = %s" % os.path.join(workdir, "khal.db"),
        "[default]",
        "highlight_event_days = False",
    ]
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    env = dict(os.environ)
    env.update({"XDG_CONFIG_HOME": os.path.join(workdir, "config"),
                "XDG_DATA_HOME": os.path.join(workdir, "data"),
                "XDG_CACHE_HOME": os.path.join(workdir, "cache"),
                "HOME": workdir, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"})
    argv = ["khal", "-c", conf, "list", "--format", "{start} | {end} | {title}",
            "--day-format", "", start, end]
    proc = subprocess.run(argv, capture_output=True, env=env, stdin=subprocess.DEVNULL,
                          timeout=mount.ACCESS_TIMEOUT * 3)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, "khal failed (%d): %s" % (proc.returncode, err)
    return [line for line in out.split("\n") if line.strip()], err
