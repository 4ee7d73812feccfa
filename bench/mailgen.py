"""Realistic calendar mail for the benchmark, from a fixed seed.

What a mailbox of someone who gets meeting invitations looks like: messages
from Google Calendar (multipart/mixed with an inline text/calendar and the
same calendar again as invite.ics), Outlook/Exchange (multipart/alternative,
base64 text/calendar, Windows TZIDs, sometimes the "(UTC+01:00) ..."
display names, sometimes no VTIMEZONE at all), Apple Calendar
(quoted-printable .ics attachment, IANA zones).  Each meeting is a story:
an invitation (SEQUENCE 0), maybe updates (higher SEQUENCE), for recurring
series moved or cancelled occurrences (RECURRENCE-ID), maybe replies from
attendees, maybe a cancellation.  INBOX also holds ordinary mail without
calendar data, a few invitations arrive forwarded (message/rfc822), and
about 6% of the messages carry a 0.2-2 MB non-calendar attachment
(log-uniform size, random bytes: PDFs and images do not compress).

Everything comes from random.Random instances seeded from (seed, ...): the
same seed and size give the same bytes.  Messages are planned first (story,
date, what changed), then rendered one at a time, so that 100,000 messages
never sit in memory together.

Maildir: write_maildir() drops the rendered messages straight into a
Maildir++ tree the way a delivery agent would (file name
"<time>.M<n>P<pid>.<host>,S=<size>,W=<crlf size>:2,<flags>", mtime =
INTERNALDATE); Dovecot assigns UIDs in file-name time order on its next
sync, so UIDs follow the dates.
"""

import base64
import datetime
import math
import os
import quopri
import random
from dataclasses import dataclass, field

UTC = datetime.timezone.utc
ME = ("Alice Smith", "alice@example.org")
# The history the mail spans: INTERNALDATEs and meeting dates fall in it.
HISTORY_START = datetime.datetime(2025, 1, 6, 8, 0, 0, tzinfo=UTC)
HISTORY_DAYS = 640

# Mailboxes and their share of the messages.  INBOX also gets ordinary mail.
MAILBOXES = (("INBOX", 0.40), ("Calendars.Team", 0.30), ("Calendars.Alice", 0.15),
             ("Calendars.Bob", 0.15))
PLAIN_SHARE_INBOX = 0.40   # INBOX messages without calendar data
ATTACHMENT_SHARE = 0.06    # messages with a big non-calendar attachment
ATTACHMENT_MIN, ATTACHMENT_MAX = 200_000, 2_000_000  # decoded bytes, log-uniform
FORWARDED_SHARE = 0.03     # invitations forwarded as message/rfc822
CLIENTS = (("google", 0.35), ("outlook", 0.40), ("apple", 0.25))

WORDS = ("project review budget quarterly planning design sync roadmap customer release "
         "offsite workshop training interview onboarding retro sprint demo architecture "
         "security audit migration platform launch marketing sales finance legal hiring "
         "product team weekly monthly kickoff status update discussion lunch board "
         "strategy partner vendor contract support incident postmortem api mobile web "
         "data analytics infrastructure network cloud storage backup database research "
         "the a of to and for with on in at from about next this our new please agenda "
         "notes follow-up meeting call room building floor video link dial-in details").split()
PEOPLE = ("Bob Jones:bob.jones", "Frank Miller:frank.miller", "Carol White:carol.white",
          "Dave Brown:dave.brown", "Erin Clark:erin.clark", "Grace Hall:grace.hall",
          "Heidi Young:heidi.young", "Ivan King:ivan.king", "Judy Wright:judy.wright",
          "Mallory Scott:mallory.scott", "Niaj Green:niaj.green", "Olivia Baker:olivia.baker",
          "Peggy Adams:peggy.adams", "Rupert Nelson:rupert.nelson", "Sybil Carter:sybil.carter",
          "Trent Mitchell:trent.mitchell", "Victor Perez:victor.perez",
          "Walter Roberts:walter.roberts")
DOMAINS = {"google": ("gmail.com", "example.com", "startup.example"),
           "outlook": ("contoso.com", "fabrikam.com", "example.net"),
           "apple": ("icloud.com", "me.com", "example.org")}
ROOMS = ("Room Havel", "Room 4.01", "Conference room B", "Main auditorium", "Cafeteria",
         "Building 7, floor 3", "Zoom", "Microsoft Teams Meeting", "Google Meet")


# ----- time zones ------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """A yearly DST transition: month, n-th weekday (-1 = last), weekday
    (0 = Monday), local hour of the switch."""

    month: int
    nth: int
    weekday: int
    hour: int

    def day(self, year):
        if self.nth > 0:
            first = datetime.date(year, self.month, 1)
            d = first + datetime.timedelta(days=(self.weekday - first.weekday()) % 7)
            return d + datetime.timedelta(weeks=self.nth - 1)
        nxt = datetime.date(year + (self.month == 12), self.month % 12 + 1, 1)
        last = nxt - datetime.timedelta(days=1)
        return last - datetime.timedelta(days=(last.weekday() - self.weekday) % 7)

    def byday(self):
        return "%d%s" % (self.nth, ("MO", "TU", "WE", "TH", "FR", "SA", "SU")[self.weekday])


EU_ON, EU_OFF = Rule(3, -1, 6, 2), Rule(10, -1, 6, 3)
US_ON, US_OFF = Rule(3, 2, 6, 2), Rule(11, 1, 6, 2)
AU_ON, AU_OFF = Rule(10, 1, 6, 2), Rule(4, 1, 6, 3)


@dataclass(frozen=True)
class Zone:
    """A zone: standard offset (minutes), DST offset and rules (or None)."""

    iana: str
    windows: str
    display: str
    std: int
    dst: int = None
    on: Rule = None
    off: Rule = None
    abbr: tuple = ("STD", "DST")

    def offset(self, local):
        """UTC offset (minutes) of a local wall time."""
        if self.dst is None:
            return self.std
        on = datetime.datetime.combine(self.on.day(local.year), datetime.time(self.on.hour))
        off = datetime.datetime.combine(self.off.day(local.year), datetime.time(self.off.hour))
        naive = local.replace(tzinfo=None)
        if on < off:
            return self.dst if on <= naive < off else self.std
        return self.std if off <= naive < on else self.dst


ZONES = (
    Zone("Europe/Berlin", "W. Europe Standard Time",
         "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna", 60, 120, EU_ON, EU_OFF,
         ("CET", "CEST")),
    Zone("Europe/London", "GMT Standard Time",
         "(UTC+00:00) Dublin, Edinburgh, Lisbon, London", 0, 60, EU_ON, EU_OFF, ("GMT", "BST")),
    Zone("America/New_York", "Eastern Standard Time", "(UTC-05:00) Eastern Time (US & Canada)",
         -300, -240, US_ON, US_OFF, ("EST", "EDT")),
    Zone("America/Los_Angeles", "Pacific Standard Time", "(UTC-08:00) Pacific Time (US & Canada)",
         -480, -420, US_ON, US_OFF, ("PST", "PDT")),
    Zone("Asia/Tokyo", "Tokyo Standard Time", "(UTC+09:00) Osaka, Sapporo, Tokyo", 540,
         abbr=("JST", "JST")),
    Zone("Australia/Sydney", "AUS Eastern Standard Time",
         "(UTC+10:00) Canberra, Melbourne, Sydney", 600, 660, AU_ON, AU_OFF, ("AEST", "AEDT")),
    Zone("Asia/Kolkata", "India Standard Time", "(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi",
         330, abbr=("IST", "IST")),
)


def fmt_offset(minutes):
    sign = "-" if minutes < 0 else "+"
    return "%s%02d%02d" % (sign, abs(minutes) // 60, abs(minutes) % 60)


def vtimezone_iana(z):
    """A VTIMEZONE as Google and Apple write one (IANA TZID, 1970 rules)."""
    lines = ["BEGIN:VTIMEZONE", "TZID:" + z.iana, "X-LIC-LOCATION:" + z.iana]
    if z.dst is None:
        lines += ["BEGIN:STANDARD", "TZOFFSETFROM:" + fmt_offset(z.std),
                  "TZOFFSETTO:" + fmt_offset(z.std), "TZNAME:" + z.abbr[0],
                  "DTSTART:19700101T000000", "END:STANDARD"]
    else:
        on, off = z.on.day(1970), z.off.day(1970)
        lines += ["BEGIN:DAYLIGHT", "TZOFFSETFROM:" + fmt_offset(z.std),
                  "TZOFFSETTO:" + fmt_offset(z.dst), "TZNAME:" + z.abbr[1],
                  "DTSTART:%sT%02d0000" % (on.strftime("%Y%m%d"), z.on.hour),
                  "RRULE:FREQ=YEARLY;BYMONTH=%d;BYDAY=%s" % (z.on.month, z.on.byday()),
                  "END:DAYLIGHT",
                  "BEGIN:STANDARD", "TZOFFSETFROM:" + fmt_offset(z.dst),
                  "TZOFFSETTO:" + fmt_offset(z.std), "TZNAME:" + z.abbr[0],
                  "DTSTART:%sT%02d0000" % (off.strftime("%Y%m%d"), z.off.hour),
                  "RRULE:FREQ=YEARLY;BYMONTH=%d;BYDAY=%s" % (z.off.month, z.off.byday()),
                  "END:STANDARD"]
    return lines + ["END:VTIMEZONE"]


def vtimezone_windows(z, tzid):
    """A VTIMEZONE as Outlook writes one (Windows TZID, 1601 rules)."""
    lines = ["BEGIN:VTIMEZONE", "TZID:" + tzid]
    if z.dst is None:
        return lines + ["BEGIN:STANDARD", "DTSTART:16010101T000000",
                        "TZOFFSETFROM:" + fmt_offset(z.std), "TZOFFSETTO:" + fmt_offset(z.std),
                        "END:STANDARD", "END:VTIMEZONE"]
    return lines + [
        "BEGIN:STANDARD", "DTSTART:16010101T%02d0000" % z.off.hour,
        "TZOFFSETFROM:" + fmt_offset(z.dst), "TZOFFSETTO:" + fmt_offset(z.std),
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=%s;BYMONTH=%d" % (z.off.byday(), z.off.month),
        "END:STANDARD",
        "BEGIN:DAYLIGHT", "DTSTART:16010101T%02d0000" % z.on.hour,
        "TZOFFSETFROM:" + fmt_offset(z.std), "TZOFFSETTO:" + fmt_offset(z.dst),
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=%s;BYMONTH=%d" % (z.on.byday(), z.on.month),
        "END:DAYLIGHT", "END:VTIMEZONE"]


# ----- iCalendar text --------------------------------------------------------

def fold(line):
    """Folds one content line at 75 octets (RFC 5545 §3.1), UTF-8 safe."""
    raw = line.encode("utf-8")
    if len(raw) <= 75:
        return line
    out, start, limit = [], 0, 75
    while start < len(raw):
        end = min(start + limit, len(raw))
        while end < len(raw) and (raw[end] & 0xC0) == 0x80:
            end -= 1
        out.append(raw[start:end].decode("utf-8"))
        start, limit = end, 74
    return "\r\n ".join(out)


def ical_text(s):
    """Escapes a TEXT value."""
    return s.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def ics(lines):
    return "".join(fold(line) + "\r\n" for line in lines)


def utcstamp(dt):
    return dt.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def localstamp(dt):
    return dt.strftime("%Y%m%dT%H%M%S")


# ----- stories: what happens to one meeting ----------------------------------

@dataclass
class Event:
    """The state of a meeting (or one occurrence) at one point of its story."""

    summary: str
    location: str
    start: datetime.datetime  # local wall time (naive)
    minutes: int
    allday: bool = False
    utc: bool = False          # times written in UTC (Z) rather than with a TZID
    rrule: str = None
    description: str = ""

    def copy(self, **kw):
        d = dict(self.__dict__)
        d.update(kw)
        return Event(**d)


@dataclass
class Story:
    uid: str
    client: str
    mailbox: str
    organizer: tuple           # (name, address)
    attendees: list
    zone: Zone
    tzstyle: str               # iana, windows, display, windows-bare
    event: Event
    seq: int = 0
    created: datetime.datetime = None
    cancelled: bool = False
    overrides: dict = field(default_factory=dict)  # rid (naive local) -> Event
    occurrences: list = field(default_factory=list)  # rids that may be moved
    alice_organizes: bool = False
    msgid_host: str = ""


@dataclass
class Plan:
    """One message to render: which story, what it says, when it arrives."""

    mailbox: str
    date: datetime.datetime
    kind: str                   # request update override occ-cancel cancel reply plain
    story: Story = None
    seq: int = 0
    event: Event = None         # the master's state as sent
    rid: datetime.datetime = None
    override: Event = None      # the occurrence's state (override / occ-cancel)
    replier: tuple = None
    forwarded: bool = False
    attachment: int = 0         # decoded size of a big non-calendar attachment
    flags: str = "S"
    n: int = 0                  # position in the whole plan: seeds the rendering
    overrides: dict = None      # Google sends the series with its exceptions


def weighted(rng, table):
    r, acc = rng.random(), 0.0
    for name, share in table:
        acc += share
        if r < acc:
            return name
    return table[-1][0]


def words(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def sentence(rng, lo=6, hi=16):
    s = words(rng, lo, hi)
    return s[0].upper() + s[1:] + "."


def person(rng, client=None):
    name, local = rng.choice(PEOPLE).split(":")
    return name, "%s@%s" % (local, rng.choice(DOMAINS[client or rng.choice(list(DOMAINS))]))


def b36(rng, n):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def hexs(rng, n):
    return "".join(rng.choice("0123456789ABCDEF") for _ in range(n))


def new_uid(rng, client):
    if client == "google":
        return b36(rng, 26) + "@google.com"
    if client == "outlook":
        return ("040000008200E00074C5B7101A82E00800000000" + hexs(rng, 16) +
                "000000000000000010000000" + hexs(rng, 32))
    return "%s-%s-%s-%s-%s" % (hexs(rng, 8), hexs(rng, 4), hexs(rng, 4), hexs(rng, 4),
                               hexs(rng, 12))


class MailGenerator:
    """Plans and renders the mail of one account; see the module docstring."""

    def __init__(self, seed=2007):
        self.seed = seed
        self.rng = random.Random("plan:%d" % seed)
        self.stories = []
        self.plans_made = 0
        self.last_date = HISTORY_START

    # ----- planning -----

    def _new_story(self, mailbox, when):
        rng = self.rng
        client = weighted(rng, CLIENTS)
        zone = rng.choice(ZONES)
        if client == "outlook":
            tzstyle = weighted(rng, (("windows", 0.7), ("display", 0.2), ("windows-bare", 0.1)))
        else:
            tzstyle = "iana"
        day = (when + datetime.timedelta(days=rng.randint(1, 40))).date()
        allday = rng.random() < 0.05
        start = datetime.datetime.combine(day, datetime.time(rng.randint(8, 17),
                                                             rng.choice((0, 15, 30, 45))))
        ev = Event(summary=words(rng, 2, 6).capitalize(), location=rng.choice(ROOMS),
                   start=start, minutes=rng.choice((15, 30, 30, 45, 60, 60, 90, 120)),
                   allday=allday, utc=client == "apple" and rng.random() < 0.15,
                   description=" ".join(sentence(rng) for _ in range(rng.randint(1, 5))))
        occurrences = []
        if not allday and rng.random() < 0.30:
            if rng.random() < 0.6:
                count = rng.randint(6, 26)
                ev.rrule = "FREQ=WEEKLY;BYDAY=%s;COUNT=%d" % (
                    ("MO", "TU", "WE", "TH", "FR", "SA", "SU")[start.weekday()], count)
                occurrences = [start + datetime.timedelta(weeks=k) for k in range(1, count)]
            else:
                ev.rrule = "FREQ=DAILY;COUNT=%d" % rng.randint(5, 30)
                occurrences = [start + datetime.timedelta(days=k)
                               for k in range(1, int(ev.rrule.rsplit("=", 1)[1]))]
        organizer = person(rng, client)
        alice_org = mailbox == "Calendars.Alice" and rng.random() < 0.25
        if alice_org:
            organizer = ME
        attendees = [person(rng) for _ in range(rng.randint(1, 6))]
        if not alice_org:
            attendees.insert(rng.randint(0, len(attendees)), ME)
        st = Story(uid=new_uid(rng, client), client=client, mailbox=mailbox, organizer=organizer,
                   attendees=attendees, zone=zone, tzstyle=tzstyle, event=ev, created=when,
                   occurrences=occurrences, alice_organizes=alice_org,
                   msgid_host=organizer[1].split("@")[1])
        self.stories.append(st)
        return st

    def _plan(self, st, kind, when, **kw):
        p = Plan(mailbox=st.mailbox if st else kw.pop("mailbox"), date=when, kind=kind, story=st,
                 seq=st.seq if st else 0, event=st.event if st else None,
                 overrides=dict(st.overrides) if st and st.client == "google" else None, **kw)
        return p

    def _story_plans(self, st, when):
        """The invitation of a new story and what follows it."""
        rng = self.rng
        plans = [self._plan(st, "request", when)]
        if st.alice_organizes:
            for r in rng.sample(st.attendees, min(len(st.attendees), rng.randint(0, 3))):
                when += datetime.timedelta(minutes=rng.randint(5, 3000))
                plans.append(self._plan(st, "reply", when, replier=r))
        steps = rng.choices(("update", "override", "occ-cancel", "none"),
                            weights=(30, 20 if st.occurrences else 0,
                                     8 if st.occurrences else 0, 50), k=rng.randint(1, 3))
        for step in steps:
            when += datetime.timedelta(minutes=rng.randint(30, 20000))
            p = self._step(st, step, when)
            if p:
                plans.append(p)
        if rng.random() < 0.10:
            when += datetime.timedelta(minutes=rng.randint(30, 20000))
            plans.append(self._step(st, "cancel", when))
        return plans

    def _step(self, st, step, when):
        """Advances a story by one change; returns its message plan (or None)."""
        rng = self.rng
        if st.cancelled or step == "none":
            return None
        if step == "update":
            st.seq += 1
            if rng.random() < 0.6:
                # Moving a series moves every occurrence and drops its exceptions.
                delta = datetime.timedelta(hours=rng.choice((-24, -2, -1, 1, 2, 24, 48)))
                st.event = st.event.copy(start=st.event.start + delta)
                st.occurrences = [o + delta for o in st.occurrences]
                st.overrides = {}
            else:
                st.event = st.event.copy(location=rng.choice(ROOMS),
                                         summary=st.event.summary + " (updated)")
            return self._plan(st, "update", when)
        if step in ("override", "occ-cancel") and st.occurrences:
            rid = rng.choice(st.occurrences)
            if step == "override":
                ov = st.event.copy(start=rid + datetime.timedelta(hours=rng.choice((1, 2, 24))),
                                   rrule=None, summary=st.event.summary + " (moved)")
                st.overrides[rid] = ov
                st.seq += st.client == "google"
                return self._plan(st, "override", when, rid=rid, override=ov)
            st.occurrences.remove(rid)
            st.overrides.pop(rid, None)
            return self._plan(st, "occ-cancel", when, rid=rid, override=st.event.copy(rrule=None))
        if step == "cancel":
            st.seq += 1
            st.cancelled = True
            return self._plan(st, "cancel", when)
        return None

    def _finish(self, plans, rng):
        """Dates in the order of arrival, attachments, flags, positions."""
        plans.sort(key=lambda p: p.date)
        for p in plans:
            p.n = self.plans_made
            self.plans_made += 1
            p.flags = "S" if rng.random() < 0.85 else ""
            if rng.random() < ATTACHMENT_SHARE:
                p.attachment = int(math.exp(rng.uniform(math.log(ATTACHMENT_MIN),
                                                        math.log(ATTACHMENT_MAX))))
            if p.kind == "request" and rng.random() < FORWARDED_SHARE:
                p.forwarded = True
            self.last_date = max(self.last_date, p.date)
        return plans

    def plan(self, total):
        """Plans the initial mail: `total` messages over MAILBOXES."""
        rng = self.rng
        plans = []
        quotas = [(name, int(round(total * share))) for name, share in MAILBOXES]
        quotas[0] = (quotas[0][0], total - sum(q for _, q in quotas[1:]))
        for mailbox, quota in quotas:
            mine = []
            while len(mine) < quota:
                when = HISTORY_START + datetime.timedelta(
                    seconds=rng.randint(0, HISTORY_DAYS * 86400))
                if mailbox == "INBOX" and rng.random() < PLAIN_SHARE_INBOX:
                    mine.append(self._plan(None, "plain", when, mailbox=mailbox))
                    continue
                story = self._new_story(mailbox, when)
                mine.extend(self._story_plans(story, when)[:quota - len(mine)])
            plans.extend(mine)
        return self._finish(plans, rng)

    def plan_more(self, total):
        """Plans `total` messages arriving after everything so far: half of
        them change existing meetings, the rest are new invitations and
        ordinary mail."""
        rng = self.rng
        plans = []
        when = self.last_date
        live = [s for s in self.stories if not s.cancelled]
        while len(plans) < total:
            when += datetime.timedelta(seconds=rng.randint(60, 7200))
            if live and rng.random() < 0.5:
                st = rng.choice(live)
                p = self._step(st, rng.choice(("update", "update", "override", "occ-cancel",
                                               "cancel")), when)
                if p:
                    plans.append(p)
                continue
            mailbox = weighted(rng, MAILBOXES)
            if mailbox == "INBOX" and rng.random() < PLAIN_SHARE_INBOX:
                plans.append(self._plan(None, "plain", when, mailbox=mailbox))
            else:
                plans.append(self._story_plans(self._new_story(mailbox, when), when)[0])
        return self._finish(plans, rng)

    # ----- rendering -----

    def render(self, p):
        """The message of plan p, as bytes with LF line ends."""
        rng = random.Random("msg:%d:%d" % (self.seed, p.n))
        if p.kind == "plain":
            msg = render_plain(rng, p)
        else:
            msg = RENDERERS[p.story.client](rng, p)
        if p.forwarded:
            msg = forward(rng, p, msg)
        if p.attachment:
            msg = attach(rng, p, msg)
        return msg.replace("\r\n", "\n").encode("utf-8")


def expected_uids(plans):
    """Event UIDs that merged.ics must hold after these messages (RFC 5546:
    the highest SEQUENCE wins; a cancellation of the whole meeting removes
    it; replies make no event)."""
    best = {}
    for p in plans:
        if p.kind in ("request", "update", "override", "cancel"):
            key = p.story.uid
            prev = best.get(key)
            version = (p.seq, p.kind == "cancel", p.date)
            if p.kind == "override" and p.story.client == "outlook":
                best.setdefault(key, None)  # an override alone is an event too
                continue
            if prev is None or version > prev:
                best[key] = version
    return sorted(u for u, v in best.items() if v is None or not v[1])


# ----- MIME building ---------------------------------------------------------

def boundary(rng, style):
    if style == "google":
        return "000000000000" + hexs(rng, 16).lower()
    if style == "outlook":
        return "_000_%sPR%02dMB%04d%s_" % (hexs(rng, 4), rng.randint(1, 99),
                                           rng.randint(1000, 9999), hexs(rng, 8))
    return "Apple-Mail=_%s-%s-%s-%s-%s" % (hexs(rng, 8), hexs(rng, 4), hexs(rng, 4),
                                           hexs(rng, 4), hexs(rng, 12))


def b64(data, width=76):
    if isinstance(data, str):
        data = data.encode("utf-8")
    enc = base64.b64encode(data).decode("ascii")
    return "\n".join(enc[i:i + width] for i in range(0, len(enc), width)) + "\n"


def qp(text):
    return quopri.encodestring(text.encode("utf-8")).decode("ascii")


def addr(a):
    name, mail = a
    if "," in name:
        name = '"%s"' % name
    return "%s <%s>" % (name, mail)


def rfc2822_date(dt, minutes=0):
    local = dt.astimezone(datetime.timezone(datetime.timedelta(minutes=minutes)))
    return local.strftime("%a, %d %b %Y %H:%M:%S ") + fmt_offset(minutes)


def received(rng, dt, host):
    lines = []
    for hop in range(rng.randint(2, 4)):
        lines.append("Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\n\tby mail.example.org "
                     "(Postfix) with ESMTPS id %s\n\tfor <%s>; %s"
                     % (hop, host, hop, host, rng.randint(1, 254), hexs(rng, 11), ME[1],
                        rfc2822_date(dt - datetime.timedelta(seconds=hop))))
    return "\n".join(lines)


def dkim(rng, domain):
    sig = base64.b64encode(rng.randbytes(256)).decode()
    return ("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=20230601;"
            " t=%d;\n\th=to:from:subject:date:message-id:reply-to:mime-version:from:to:cc:"
            "subject:date\n\t :message-id:reply-to; bh=%s;\n\tb=%s"
            % (domain, rng.randint(10**9, 2 * 10**9), base64.b64encode(rng.randbytes(32)).decode(),
               "\n\t ".join(sig[i:i + 70] for i in range(0, len(sig), 70))))


def headers(rng, p, sender, subject, ctype, extra=()):
    host = sender[1].split("@")[1]
    lines = ["Return-Path: <%s>" % sender[1], received(rng, p.date, host)]
    if host in ("gmail.com", "example.com", "startup.example", "icloud.com", "me.com"):
        lines.append(dkim(rng, host))
    lines += ["From: " + addr(sender), "To: " + addr(ME), "Subject: " + subject,
              "Date: " + rfc2822_date(p.date, rng.choice((0, 60, 120, -300, -480))),
              "Message-ID: <%s@%s>" % (hexs(rng, 20).lower(), host), "MIME-Version: 1.0"]
    lines += list(extra)
    lines.append("Content-Type: " + ctype)
    return "\n".join(lines) + "\n\n"


def paragraphs(rng, n):
    return "\n\n".join(" ".join(sentence(rng) for _ in range(rng.randint(2, 6)))
                       for _ in range(n))


def html_of(rng, text, outlook=False):
    paras = text.split("\n\n")
    if outlook:
        head = ('<html xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:'
                'office:office" xmlns:w="urn:schemas-microsoft-com:office:word">\n<head>\n<meta '
                'http-equiv="Content-Type" content="text/html; charset=utf-8">\n'
                '<meta name="Generator" content="Microsoft Word 15 (filtered medium)">\n'
                '<style><!--\n/* Font Definitions */'
                '\n@font-face\n\t{font-family:"Cambria Math";\n\tpanose-1:2 4 5 3 5 4 6 3 2 4;}\n'
                '@font-face\n\t{font-family:Calibri;\n\tpanose-1:2 15 5 2 2 2 4 3 2 4;}\n'
                'p.MsoNormal, li.MsoNormal, div.MsoNormal\n\t{margin:0cm;\n\tfont-size:11.0pt;\n\t'
                'font-family:"Calibri",sans-serif;}\n--></style>\n</head>\n<body lang="EN-US" '
                'link="#0563C1" vlink="#954F72" style="word-wrap:break-word">\n'
                '<div class="WordSection1">\n')
        body = "".join('<p class="MsoNormal"><span lang="EN-US">%s<o:p></o:p></span></p>\n'
                       % para for para in paras)
        return head + body + "</div>\n</body>\n</html>\n"
    return ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head>'
            '<body><div style="font-family:Arial,sans-serif">' +
            "".join("<p>%s</p>" % para for para in paras) + "</div></body></html>\n")


def when_text(ev, z):
    if ev.allday:
        return ev.start.strftime("%A %d %B %Y")
    end = ev.start + datetime.timedelta(minutes=ev.minutes)
    return "%s - %s (%s)" % (ev.start.strftime("%a %d %b %Y %H:%M"), end.strftime("%H:%M"),
                             z.abbr[0])


# ----- calendars per client --------------------------------------------------

METHODS = {"request": "REQUEST", "update": "REQUEST", "override": "REQUEST",
           "occ-cancel": "CANCEL", "cancel": "CANCEL", "reply": "REPLY"}


def tzid_of(st):
    z = st.zone
    if st.tzstyle == "iana":
        return z.iana
    if st.tzstyle == "display":
        return z.display
    return z.windows


def dt_props(st, ev, name, when):
    """DTSTART/DTEND/RECURRENCE-ID lines for a local wall time."""
    if ev.allday:
        return "%s;VALUE=DATE:%s" % (name, when.strftime("%Y%m%d"))
    if ev.utc:
        off = st.zone.offset(when)
        return "%s:%s" % (name, utcstamp(when.replace(tzinfo=datetime.timezone(
            datetime.timedelta(minutes=off)))))
    tzid = tzid_of(st)
    if "," in tzid or ":" in tzid or ";" in tzid:
        tzid = '"%s"' % tzid
    return "%s;TZID=%s:%s" % (name, tzid, localstamp(when))


def end_of(ev):
    if ev.allday:
        return ev.start + datetime.timedelta(days=1)
    return ev.start + datetime.timedelta(minutes=ev.minutes)


def vtimezones(st, ev):
    if st.tzstyle == "windows-bare" or ev.allday or ev.utc:
        return []
    if st.tzstyle == "iana":
        return vtimezone_iana(st.zone)
    return vtimezone_windows(st.zone, tzid_of(st))


def attendee_lines(st, p, partstat_of=None):
    out = []
    for a in st.attendees:
        ps = partstat_of(a) if partstat_of else "NEEDS-ACTION"
        out.append('ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=%s;RSVP=TRUE;CN=%s;'
                   'X-NUM-GUESTS=0:mailto:%s' % (ps, '"%s"' % a[0] if "," in a[0] else a[0], a[1]))
    return out


def vevent(st, p, ev, rid=None, seq=None, status="CONFIRMED", method="REQUEST", replier=None):
    """One VEVENT in the client's own property order and dialect."""
    c = st.client
    seq = p.seq if seq is None else seq
    stamp = utcstamp(p.date)
    lines = ["BEGIN:VEVENT"]
    org = "ORGANIZER;CN=%s:mailto:%s" % ('"%s"' % st.organizer[0], st.organizer[1])
    core = [dt_props(st, ev, "DTSTART", ev.start), dt_props(st, ev, "DTEND", end_of(ev))]
    if ev.rrule and rid is None:
        core.append("RRULE:" + ev.rrule)
    if rid is not None:
        core.append(dt_props(st, ev, "RECURRENCE-ID", rid))
    if method == "REPLY":
        atts = ["ATTENDEE;PARTSTAT=%s;CN=%s:mailto:%s"
                % (random.Random(st.uid + replier[1]).choice(("ACCEPTED", "DECLINED", "TENTATIVE")),
                   replier[0], replier[1])]
    else:
        atts = attendee_lines(st, p)
    desc = ev.description
    if c == "google":
        lines += core + ["DTSTAMP:" + stamp, org, "UID:" + st.uid] + atts
        if method != "REPLY":
            lines += ["X-GOOGLE-CONFERENCE:https://meet.google.com/%s" % st.uid[:12],
                      "CREATED:" + utcstamp(st.created),
                      "DESCRIPTION:" + ical_text(desc + "\n\nJoin with Google Meet: https://meet."
                                                 "google.com/" + st.uid[:12] + "\n\n-::~:~::~:~:~"
                                                 ":~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~::~:~::-\n"
                                                 "Please do not edit this section of the "
                                                 "description."),
                      "LAST-MODIFIED:" + stamp, "LOCATION:" + ical_text(ev.location)]
        lines += ["SEQUENCE:%d" % seq, "STATUS:" + status, "SUMMARY:" + ical_text(ev.summary),
                  "TRANSP:OPAQUE"]
        if method == "REQUEST":
            lines += ["BEGIN:VALARM", "ACTION:DISPLAY", "DESCRIPTION:This is an event reminder",
                      "TRIGGER:-P0DT0H10M0S", "END:VALARM"]
    elif c == "outlook":
        lines += [org] + atts
        if method != "REPLY":
            lines.append("DESCRIPTION;LANGUAGE=en-US:" + ical_text(desc))
        lines += ["UID:" + st.uid]
        if rid is not None:
            lines.append(dt_props(st, ev, "RECURRENCE-ID", rid))
        lines += ["SUMMARY;LANGUAGE=en-US:" + ical_text(ev.summary)] + \
            [x for x in core if not x.startswith("RECURRENCE-ID")] + [
            "CLASS:PUBLIC", "PRIORITY:5", "DTSTAMP:" + stamp, "TRANSP:OPAQUE",
            "STATUS:" + status, "SEQUENCE:%d" % seq,
            "LOCATION;LANGUAGE=en-US:" + ical_text(ev.location),
            "X-MICROSOFT-CDO-APPT-SEQUENCE:%d" % seq,
            "X-MICROSOFT-CDO-OWNERAPPTID:%d" % (int(st.uid[-8:], 16) % 2**31),
            "X-MICROSOFT-CDO-BUSYSTATUS:TENTATIVE", "X-MICROSOFT-CDO-INTENDEDSTATUS:BUSY",
            "X-MICROSOFT-CDO-ALLDAYEVENT:%s" % ("TRUE" if ev.allday else "FALSE"),
            "X-MICROSOFT-CDO-IMPORTANCE:1", "X-MICROSOFT-CDO-INSTTYPE:%d" % (
                3 if rid is not None else 1 if ev.rrule else 0),
            "X-MICROSOFT-DONOTFORWARDMEETING:FALSE", "X-MICROSOFT-DISALLOW-COUNTER:FALSE",
            "X-MICROSOFT-LOCATIONDISPLAYNAME:" + ical_text(ev.location)]
        if method == "REQUEST":
            lines += ["BEGIN:VALARM", "DESCRIPTION:REMINDER", "TRIGGER;RELATED=START:-PT15M",
                      "ACTION:DISPLAY", "END:VALARM"]
    else:
        lines += atts + ["CREATED:" + utcstamp(st.created)] + \
            [x for x in core if x.startswith("DTEND")] + \
            ["DTSTAMP:" + stamp] + [x for x in core if not x.startswith("DTEND")] + \
            ["LAST-MODIFIED:" + stamp, "LOCATION:" + ical_text(ev.location), org,
             "SEQUENCE:%d" % seq, "STATUS:" + status, "SUMMARY:" + ical_text(ev.summary),
             "TRANSP:OPAQUE", "UID:" + st.uid,
             "URL;VALUE=URI:", "X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC"]
        if method == "REQUEST":
            lines += ["BEGIN:VALARM", "ACTION:NONE", "TRIGGER;VALUE=DATE-TIME:19760401T005545Z",
                      "X-WR-ALARMUID:" + st.uid[:8], "UID:" + st.uid[:8], "END:VALARM"]
    return lines + ["END:VEVENT"]


PRODIDS = {"google": "-//Google Inc//Google Calendar 70.9054//EN",
           "outlook": "-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN",
           "apple": "-//Apple Inc.//macOS 14.4.1//EN"}


def calendar_for(p):
    """The iCalendar text a client sends for plan p."""
    st = p.story
    method = METHODS[p.kind]
    ev = p.event
    comps = []
    if p.kind in ("request", "update", "cancel"):
        status = "CANCELLED" if p.kind == "cancel" else "CONFIRMED"
        comps += vevent(st, p, ev, status=status, method=method)
        if st.client == "google" and p.overrides and p.kind != "cancel":
            for rid, ov in sorted(p.overrides.items()):
                comps += vevent(st, p, ov, rid=rid)
    elif p.kind == "override":
        if st.client == "google":  # the whole series, this exception included
            comps += vevent(st, p, ev)
            for rid, ov in sorted(p.overrides.items()):
                comps += vevent(st, p, ov, rid=rid)
        else:
            comps += vevent(st, p, p.override, rid=p.rid)
    elif p.kind == "occ-cancel":
        comps += vevent(st, p, p.override.copy(start=p.rid), rid=p.rid, status="CANCELLED",
                        method="CANCEL")
    elif p.kind == "reply":
        comps += vevent(st, p, ev, method="REPLY", replier=p.replier)
    head = ["BEGIN:VCALENDAR", "PRODID:" + PRODIDS[st.client], "VERSION:2.0",
            "CALSCALE:GREGORIAN", "METHOD:" + method]
    if st.client == "outlook":
        head = ["BEGIN:VCALENDAR", "METHOD:" + method, "PRODID:Microsoft Exchange Server 2010",
                "VERSION:2.0"]
    return ics(head + vtimezones(st, ev) + comps + ["END:VCALENDAR"])


def subject_for(p):
    st, ev = p.story, p.event
    z = st.zone
    if p.kind == "reply":
        who = p.replier[0]
        if st.client == "outlook":
            return "Accepted: " + ev.summary
        return "Accepted: %s @ %s (%s)" % (ev.summary, when_text(ev, z), who)
    if p.kind in ("cancel", "occ-cancel"):
        pre = {"google": "Canceled event: ", "outlook": "Canceled: ",
               "apple": "Cancelled: "}[st.client]
        return pre + ev.summary
    if st.client == "google":
        pre = "Invitation: " if p.kind == "request" else "Updated invitation: "
        return "%s%s @ %s (%s)" % (pre, ev.summary, when_text(ev, z), ME[1])
    if st.client == "apple":
        return ("Invitation: " if p.kind == "request" else "Updated: ") + ev.summary
    return ev.summary if p.kind == "request" else "Updated: " + ev.summary


def render_google(rng, p):
    st = p.story
    cal = calendar_for(p)
    method = METHODS[p.kind]
    outer, inner = boundary(rng, "google"), boundary(rng, "google")
    text = "%s\n%s\n%s\n\n%s\n\nInvitation from Google Calendar\n" % (
        p.event.summary, when_text(p.event, st.zone), p.event.location, paragraphs(rng, 2))
    sender = ("Google Calendar", "calendar-notification@google.com") if p.kind != "reply" \
        else p.replier
    h = headers(rng, p, sender, subject_for(p), 'multipart/mixed; boundary="%s"' % outer,
                extra=["Reply-To: " + addr(st.organizer),
                       "Sender: Google Calendar <calendar-notification@google.com>"])
    return (h + "--%s\nContent-Type: multipart/alternative; boundary=\"%s\"\n\n"
            "--%s\nContent-Type: text/plain; charset=\"UTF-8\"; format=flowed; delsp=yes\n"
            "Content-Transfer-Encoding: base64\n\n%s\n"
            "--%s\nContent-Type: text/html; charset=\"UTF-8\"\n"
            "Content-Transfer-Encoding: quoted-printable\n\n%s\n"
            "--%s\nContent-Type: text/calendar; charset=\"UTF-8\"; method=%s\n"
            "Content-Transfer-Encoding: 7bit\n\n%s\n--%s--\n\n"
            "--%s\nContent-Type: application/ics; name=\"invite.ics\"\n"
            "Content-Disposition: attachment; filename=\"invite.ics\"\n"
            "Content-Transfer-Encoding: base64\n\n%s\n--%s--\n"
            % (outer, inner, inner, b64(text), inner, qp(html_of(rng, text)), inner, method, cal,
               inner, outer, b64(cal), outer))


def render_outlook(rng, p):
    st = p.story
    cal = calendar_for(p)
    method = METHODS[p.kind]
    b = boundary(rng, "outlook")
    text = "%s\n\nWhen: %s\nWhere: %s\n\n%s\n\n%s\n" % (
        p.event.summary, when_text(p.event, st.zone), p.event.location, paragraphs(rng, 3),
        "_" * 80 + "\nMicrosoft Teams meeting\nJoin on your computer, mobile app or room device"
        "\nClick here to join the meeting <https://teams.microsoft.com/l/meetup-join/19%3ameeting_"
        + b36(rng, 40) + ">\nMeeting ID: %d %d %d\n" % (rng.randint(100, 999),
                                                        rng.randint(100, 999),
                                                        rng.randint(100, 999)) + "_" * 80)
    sender = st.organizer if p.kind != "reply" else p.replier
    thread = base64.b64encode(rng.randbytes(22)).decode()
    h = headers(rng, p, sender, subject_for(p), 'multipart/alternative; boundary="%s"' % b,
                extra=["Thread-Topic: " + p.event.summary, "Thread-Index: " + thread,
                       "Accept-Language: en-US", "Content-Language: en-US",
                       "X-MS-Has-Attach:", "X-MS-TNEF-Correlator:",
                       "X-MS-Exchange-Organization-SCL: -1",
                       "X-MS-Exchange-CrossTenant-id: %s-%s-%s" % (
                           hexs(rng, 8).lower(), hexs(rng, 4).lower(), hexs(rng, 12).lower())])
    return (h + "--%s\nContent-Type: text/plain; charset=\"utf-8\"\n"
            "Content-Transfer-Encoding: quoted-printable\n\n%s\n"
            "--%s\nContent-Type: text/html; charset=\"utf-8\"\n"
            "Content-Transfer-Encoding: quoted-printable\n\n%s\n"
            "--%s\nContent-Type: text/calendar; charset=\"utf-8\"; method=%s\n"
            "Content-Transfer-Encoding: base64\n\n%s\n--%s--\n"
            % (b, qp(text), b, qp(html_of(rng, text, outlook=True)), b, method, b64(cal), b))


def render_apple(rng, p):
    st = p.story
    cal = calendar_for(p)
    method = METHODS[p.kind]
    b = boundary(rng, "apple")
    name = "iCal-%s-%06d.ics" % (p.date.strftime("%Y%m%d"), rng.randint(0, 999999))
    sender = st.organizer if p.kind != "reply" else p.replier
    text = "%s\n\n%s\n" % (paragraphs(rng, 1), "Sent from my Mac")
    h = headers(rng, p, sender, subject_for(p), 'multipart/mixed; boundary="%s"' % b,
                extra=["X-Mailer: Apple Mail (2.3774.500.171.1.1)"])
    return (h + "\n--%s\nContent-Transfer-Encoding: 7bit\nContent-Type: text/plain;\n"
            "\tcharset=us-ascii\n\n%s\n--%s\nContent-Disposition: attachment;\n\tfilename=%s\n"
            "Content-Type: text/calendar;\n\tx-unix-mode=0644;\n\tname=\"%s\";\n\tmethod=%s;\n"
            "\tcharset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n%s\n--%s--\n"
            % (b, text, b, name, name, method, qp(cal), b))


def render_plain(rng, p):
    sender = person(rng)
    subject = words(rng, 2, 7).capitalize()
    text = paragraphs(rng, rng.randint(2, 8))
    if rng.random() < 0.4:
        return headers(rng, p, sender, subject, "text/plain; charset=UTF-8",
                       extra=["Content-Transfer-Encoding: 8bit"]) + text + "\n"
    b = boundary(rng, "google")
    return (headers(rng, p, sender, subject, 'multipart/alternative; boundary="%s"' % b) +
            "--%s\nContent-Type: text/plain; charset=\"UTF-8\"\n\n%s\n\n--%s\n"
            "Content-Type: text/html; charset=\"UTF-8\"\nContent-Transfer-Encoding: "
            "quoted-printable\n\n%s\n--%s--\n" % (b, text, b, qp(html_of(rng, text)), b))


RENDERERS = {"google": render_google, "outlook": render_outlook, "apple": render_apple}


def split_message(msg):
    head, _, body = msg.partition("\n\n")
    return head, body


def forward(rng, p, msg):
    """The invitation forwarded by a colleague, as an attached message/rfc822."""
    sender = person(rng)
    b = boundary(rng, "apple")
    subject = "Fwd: " + subject_for(p)
    return (headers(rng, p, sender, subject, 'multipart/mixed; boundary="%s"' % b) +
            "--%s\nContent-Type: text/plain; charset=UTF-8\n\nFYI, see below.\n\n--%s\n"
            "Content-Type: message/rfc822\nContent-Disposition: attachment\n\n%s\n--%s--\n"
            % (b, b, msg, b))


ATTACHMENT_TYPES = (("application/pdf", "pdf"), ("image/jpeg", "jpg"),
                    ("application/vnd.openxmlformats-officedocument.presentationml.presentation",
                     "pptx"), ("application/zip", "zip"))


def attach(rng, p, msg):
    """msg with a big attachment: added to its multipart/mixed, or msg's
    body wrapped into a new multipart/mixed."""
    ctype, ext = rng.choice(ATTACHMENT_TYPES)
    name = "%s.%s" % (words(rng, 1, 3).replace(" ", "_"), ext)
    part = ("Content-Type: %s; name=\"%s\"\nContent-Disposition: attachment; filename=\"%s\"\n"
            "Content-Transfer-Encoding: base64\n\n%s" % (ctype, name, name,
                                                         b64(rng.randbytes(p.attachment))))
    head, body = split_message(msg)
    lines = head.split("\n")
    ct_at = max(i for i, line in enumerate(lines) if line.lower().startswith("content-type:"))
    ct_end = ct_at + 1
    while ct_end < len(lines) and lines[ct_end][:1] in (" ", "\t"):
        ct_end += 1
    ctype_value = " ".join(x.strip() for x in lines[ct_at:ct_end])
    if ctype_value.lower().startswith("content-type: multipart/mixed"):
        b = ctype_value.split('boundary="', 1)[1].split('"', 1)[0]
        end = body.rindex("--%s--" % b)
        return head + "\n\n" + body[:end] + "--%s\n%s\n--%s--\n" % (b, part, b)
    inner = lines[ct_at:ct_end]
    cte = [x for x in lines if x.lower().startswith("content-transfer-encoding:")]
    outer_lines = [x for i, x in enumerate(lines) if not (ct_at <= i < ct_end) and x not in cte]
    b = boundary(rng, "outlook")
    outer_lines.append('Content-Type: multipart/mixed; boundary="%s"' % b)
    return ("\n".join(outer_lines) + "\n\n--%s\n%s\n\n%s\n--%s\n%s\n--%s--\n"
            % (b, "\n".join(inner + cte), body, b, part, b))


# ----- Maildir ---------------------------------------------------------------

def maildir_folder(root, mailbox):
    """The directory of a Maildir++ mailbox under the user's root."""
    return root if mailbox.upper() == "INBOX" else os.path.join(root, "." + mailbox)


def write_maildir(root, gen, plans, uid=None, gid=None):
    """Renders plans into the Maildir++ tree at root (INBOX at root,
    Calendars.Team at root/.Calendars.Team), files owned by uid:gid.
    Returns (messages, bytes) written."""
    count = total = 0
    made = set()
    for p in plans:
        folder = maildir_folder(root, p.mailbox)
        if folder not in made:
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(folder, sub), exist_ok=True)
            if folder != root:
                open(os.path.join(folder, "maildirfolder"), "a").close()
            made.add(folder)
        raw = gen.render(p)
        epoch = int(p.date.timestamp())
        name = "%d.M%dP%d.bench,S=%d,W=%d:2,%s" % (epoch, p.n, 4242, len(raw),
                                                    len(raw) + raw.count(b"\n"), p.flags)
        path = os.path.join(folder, "cur", name)
        with open(path, "wb") as f:
            f.write(raw)
        os.utime(path, (epoch, epoch))
        if uid is not None:
            os.chown(path, uid, gid)
        count += 1
        total += len(raw)
    if uid is not None:
        for folder in made | {root}:
            for path in [folder] + [os.path.join(folder, n) for n in ("cur", "new", "tmp")]:
                os.chown(path, uid, gid)
                os.chmod(path, 0o700)
            if folder != root:
                os.chown(os.path.join(folder, "maildirfolder"), uid, gid)
    return count, total


def summary(plans):
    """Counts by kind, client, attachments: for the report."""
    kinds, clients = {}, {}
    att = sum(1 for p in plans if p.attachment)
    for p in plans:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
        if p.story:
            clients[p.story.client] = clients.get(p.story.client, 0) + 1
    return {"kinds": kinds, "clients": clients, "attachments": att,
            "forwarded": sum(1 for p in plans if p.forwarded)}
