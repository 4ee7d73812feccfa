"""Mail made to measure for the tests: calendar bodies (RFC 5545) and MIME
messages (RFC 2045-2049) built from small pieces, so that a test can say
"an invitation with SEQUENCE 2, base64, next to a 300 KB PDF" in one line
and get the bytes a mail client would have sent.

Calendar text uses CRLF line ends and folds long lines at 75 octets, as
RFC 5545 §3.1 asks; MIME bodies are encoded here (base64 in 76-column
lines, quoted-printable with soft line breaks), so what a test appends is
what a real mailbox holds.  Everything is deterministic: the same call
gives the same bytes (large attachments come from a seeded generator).
"""

import base64
import datetime
import email.utils
import hashlib
import quopri
import random

CRLF = "\r\n"

BERLIN_VTIMEZONE = CRLF.join([
    "BEGIN:VTIMEZONE",
    "TZID:Europe/Berlin",
    "BEGIN:DAYLIGHT",
    "TZOFFSETFROM:+0100",
    "TZOFFSETTO:+0200",
    "TZNAME:CEST",
    "DTSTART:19700329T020000",
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU",
    "END:DAYLIGHT",
    "BEGIN:STANDARD",
    "TZOFFSETFROM:+0200",
    "TZOFFSETTO:+0100",
    "TZNAME:CET",
    "DTSTART:19701025T030000",
    "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
    "END:STANDARD",
    "END:VTIMEZONE",
])


def fold(line):
    """Folds one content line at 75 octets (RFC 5545 §3.1), never inside a
    UTF-8 sequence."""
    raw = line.encode("utf-8")
    if len(raw) <= 75:
        return line
    out, cur, limit = [], b"", 75
    for ch in line:
        b = ch.encode("utf-8")
        if len(cur) + len(b) > limit:
            out.append(cur)
            cur, limit = b"", 74  # continuation lines start with a space
        cur += b
    out.append(cur)
    return CRLF.join((" " if i else "") + part.decode("utf-8") for i, part in enumerate(out))


def ics_time(value, tzid=None):
    """(parameter text, value text) for a DATE-TIME or DATE property:
    an aware datetime becomes UTC ("...Z"); a naive one is local time in
    tzid; a date is VALUE=DATE."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            v = value.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            return "", v
        if not tzid:
            raise ValueError("a naive datetime needs a tzid")
        return ";TZID=" + tzid, value.strftime("%Y%m%dT%H%M%S")
    if isinstance(value, datetime.date):
        return ";VALUE=DATE", value.strftime("%Y%m%d")
    raise TypeError("not a date or datetime: %r" % (value,))


def _prop(name, value, tzid=None):
    params, text = ics_time(value, tzid)
    return "%s%s:%s" % (name, params, text)


def utc(*args):
    return datetime.datetime(*args, tzinfo=datetime.timezone.utc)


def component(kind, uid, summary=None, start=None, end=None, *, sequence=0, dtstamp=None,
              tzid=None, rrule=None, recurrence_id=None, exdates=(), due=None, status=None,
              organizer="mailto:organizer@example.org", description=None, location=None,
              attendees=(), extra=()):
    """One VEVENT / VTODO / VJOURNAL as CRLF text (no final CRLF).

    start/end/due/recurrence_id: datetime (aware = UTC, naive = in tzid) or
    date.  extra: further content lines, written as given."""
    lines = ["BEGIN:" + kind, "UID:" + uid]
    if recurrence_id is not None:
        lines.append(_prop("RECURRENCE-ID", recurrence_id, tzid))
    lines.append("DTSTAMP:" + (dtstamp or utc(2026, 1, 5, 9, 0, 0)).strftime("%Y%m%dT%H%M%SZ"))
    if start is not None:
        lines.append(_prop("DTSTART", start, tzid))
    if end is not None:
        lines.append(_prop("DTEND", end, tzid))
    if due is not None:
        lines.append(_prop("DUE", due, tzid))
    if rrule:
        lines.append("RRULE:" + rrule)
    for ex in exdates:
        lines.append(_prop("EXDATE", ex, tzid))
    if summary is not None:
        lines.append("SUMMARY:" + summary)
    if description is not None:
        lines.append("DESCRIPTION:" + description)
    if location is not None:
        lines.append("LOCATION:" + location)
    if organizer:
        lines.append("ORGANIZER;CN=Organizer:" + organizer)
    for a in attendees:
        lines.append("ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:" + a)
    lines.append("SEQUENCE:%d" % sequence)
    if status:
        lines.append("STATUS:" + status)
    lines += list(extra)
    lines.append("END:" + kind)
    return CRLF.join(fold(line) for line in lines)


def vevent(uid, summary, start, end=None, **kw):
    return component("VEVENT", uid, summary, start, end, **kw)


def vtodo(uid, summary, due, **kw):
    return component("VTODO", uid, summary, due=due, **kw)


def vjournal(uid, summary, start, **kw):
    return component("VJOURNAL", uid, summary, start, **kw)


def vcalendar(*components, method="REQUEST", prodid="-//Example Corp//Mailgen 1.0//EN",
              timezones=()):
    """A whole VCALENDAR as str with CRLF line ends and a final CRLF.
    method None writes no METHOD line."""
    lines = ["BEGIN:VCALENDAR", "PRODID:" + prodid, "VERSION:2.0", "CALSCALE:GREGORIAN"]
    if method:
        lines.append("METHOD:" + method)
    lines += list(timezones) + list(components)
    lines.append("END:VCALENDAR")
    return CRLF.join(lines) + CRLF


# ---- MIME -----------------------------------------------------------------

class Part:
    """A MIME entity: headers and an already encoded body (bytes), or
    children for a multipart."""

    def __init__(self, headers, body=b"", children=None, subtype=None):
        self.headers = headers
        self.body = body
        self.children = children
        self.subtype = subtype


def _encode(data, encoding):
    if encoding == "base64":
        b64 = base64.b64encode(data)
        return b"\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76)) + b"\r\n"
    if encoding == "quoted-printable":
        out = quopri.encodestring(data.replace(b"\r\n", b"\n"), quotetabs=False)
        return out.replace(b"\n", b"\r\n")
    if encoding in ("7bit", "8bit"):
        return data
    raise ValueError("unknown transfer encoding " + encoding)


def leaf(ctype, content, *, charset=None, encoding="7bit", filename=None, params=(),
         disposition=None):
    """A single part.  content: str (encoded with charset, default UTF-8)
    or bytes (taken as they are)."""
    if isinstance(content, str):
        content = content.encode(charset or "utf-8")
    ct = ctype
    if charset:
        ct += "; charset=" + charset
    for k, v in params:
        ct += "; %s=%s" % (k, v)
    if filename:
        ct += '; name="%s"' % filename
    headers = [("Content-Type", ct), ("Content-Transfer-Encoding", encoding)]
    if filename or disposition:
        d = disposition or "attachment"
        headers.append(("Content-Disposition", d + ('; filename="%s"' % filename
                                                     if filename else "")))
    return Part(headers, _encode(content, encoding))


def calendar_part(ics, *, method="REQUEST", encoding="7bit", charset="UTF-8", ctype="text/calendar",
                  filename=None):
    """A calendar part as mail clients send it (method= is only a hint)."""
    params = [("method", method)] if method else []
    return leaf(ctype, ics, charset=charset, encoding=encoding, filename=filename, params=params)


def text(content="See the attached invitation.\r\n", subtype="plain", charset="UTF-8"):
    return leaf("text/" + subtype, content, charset=charset)


def attachment(size, seed, ctype="application/pdf", filename=None):
    """A base64 attachment of `size` deterministic pseudo-random bytes."""
    data = random.Random(seed).randbytes(size)
    return leaf(ctype, data, encoding="base64", filename=filename or ("doc-%s.pdf" % seed))


def multipart(subtype, *children):
    return Part([], children=list(children), subtype=subtype)


def rfc822(message_bytes):
    """A forwarded message (message/rfc822) holding message_bytes."""
    return Part([("Content-Type", "message/rfc822"), ("Content-Transfer-Encoding", "7bit")],
                message_bytes.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def _boundary(part, depth):
    h = hashlib.sha256(repr(depth).encode())
    for c in part.children:
        h.update(_render_entity(c, depth + 1))
    return "=_mailgen_%d_%s" % (depth, h.hexdigest()[:20])


def _render_entity(part, depth):
    """Headers + blank line + body of one entity, CRLF line ends."""
    if part.children is None:
        head = "".join("%s: %s\r\n" % kv for kv in part.headers)
        return head.encode("ascii") + b"\r\n" + part.body
    b = _boundary(part, depth)
    head = 'Content-Type: multipart/%s; boundary="%s"\r\n' % (part.subtype, b)
    body = b"This is a multi-part message in MIME format.\r\n"
    for c in part.children:
        ent = _render_entity(c, depth + 1)
        if not ent.endswith(b"\r\n"):
            ent += b"\r\n"
        body += b"\r\n--" + b.encode() + b"\r\n" + ent
    body += b"\r\n--" + b.encode() + b"--\r\n"
    return head.encode("ascii") + b"\r\n" + body


def message(body, *, subject="Invitation", sender="Organizer <organizer@example.org>",
            to="Alice Smith <alice@example.org>", date=None, message_id=None, headers=()):
    """A whole RFC 5322 message (bytes, CRLF) whose body is the Part `body`."""
    date = date or utc(2026, 1, 5, 9, 0, 0)
    ent = _render_entity(body, 0)
    mid = message_id or "<%s@mailgen.example.org>" % hashlib.sha256(
        subject.encode() + ent).hexdigest()[:24]
    head = [("From", sender), ("To", to), ("Subject", subject),
            ("Date", email.utils.format_datetime(date)), ("Message-ID", mid),
            ("MIME-Version", "1.0")] + list(headers)
    return "".join("%s: %s\r\n" % kv for kv in head).encode("utf-8") + ent


def invitation(ics, *, subject="Invitation", method="REQUEST", encoding="7bit", date=None,
               sender="Organizer <organizer@example.org>", attachment_size=0, seed=0,
               headers=()):
    """The usual shape: multipart/mixed [alternative [plain, calendar], PDF?]."""
    alt = multipart("alternative", text(), calendar_part(ics, method=method, encoding=encoding))
    body = multipart("mixed", alt, attachment(attachment_size, seed)) if attachment_size else alt
    return message(body, subject=subject, date=date, sender=sender, headers=headers)
