"""Sample mail: which message goes into which mailbox, with which
INTERNALDATE, and which events it carries.

MAILBOX2ICS is the scenario of the original mailbox2ics article (Python
Magazine, October 2007): Alice's and Bob's calendar folders plus an INBOX
message without calendar data.  DEMO_EXTRA adds what real invitations look
like today (a weekly series with one moved occurrence, an update with a
higher SEQUENCE, a cancellation, a booking with an attached .ics).  The
message files are in tests/e2e/mail/.
"""

import datetime
import os
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIL_DIR = os.path.join(REPO, "tests", "e2e", "mail")


def utc(*args):
    """A timezone-aware UTC datetime."""
    return datetime.datetime(*args, tzinfo=datetime.timezone.utc)


@dataclass
class Sample:
    """One message: file in MAIL_DIR, target mailbox, INTERNALDATE, and the
    (UID, SUMMARY) of the VEVENTs it carries."""

    file: str
    mailbox: str
    internaldate: datetime.datetime
    events: list = field(default_factory=list)

    def raw(self):
        """The message bytes as stored in the file (LF line ends)."""
        with open(os.path.join(MAIL_DIR, self.file), "rb") as f:
            return f.read()

    @property
    def epoch(self):
        return int(self.internaldate.timestamp())


ALICE_BOB = ("20070927T180211Z-alice-bob-proposal@example.org",
             "In the office to work with Bob on project proposal")
ALICE_OFFICE = ("20070928T091500Z-alice-office@example.org", "In the office")
BOB_ALICE = ("20070927T180545Z-bob-alice-proposal@example.org",
             "In the office to work with Alice on project proposal")

MAILBOX2ICS = [
    Sample("alice-1-proposal.eml", "Calendars.Alice", utc(2007, 9, 27, 18, 2, 15), [ALICE_BOB]),
    # base64-encoded text/calendar, UTC times, no VTIMEZONE
    Sample("alice-2-office.eml", "Calendars.Alice", utc(2007, 9, 28, 9, 15, 30), [ALICE_OFFICE]),
    Sample("bob-1-proposal.eml", "Calendars.Bob", utc(2007, 9, 27, 18, 5, 45), [BOB_ALICE]),
    # Newest of all, but without calendar data: it must not move any mtime.
    Sample("inbox-no-calendar.eml", "INBOX", utc(2007, 9, 29, 12, 0, 0), []),
]

STANDUP = "7kukuqrfedlm2f9t6fc4kf6s4b@google.com"
BUDGET = ("040000008200E00074C5B7101A82E00800000000D0E1A2B3C4D5E601000000000000000010"
          "000000F1E2D3C4B5A697887766554433221100")
OFFSITE = "offsite-2026-12-17@calendar.example.net"
FLIGHT = "EX4711-20261221-FRA-JFK@booking.example.com"

DEMO_EXTRA = [
    Sample("team-1-standup.eml", "Calendars.Team", utc(2026, 11, 20, 8, 15, 5),
           [(STANDUP, "Team stand-up")]),
    Sample("team-2-standup-moved.eml", "Calendars.Team", utc(2026, 12, 1, 16, 0, 14),
           [(STANDUP, "Team stand-up (moved to Tuesday)")]),
    Sample("team-3-budget.eml", "Calendars.Team", utc(2026, 11, 23, 10, 10, 12),
           [(BUDGET, "Budget review 2027")]),
    Sample("team-4-budget-update.eml", "Calendars.Team", utc(2026, 11, 30, 8, 45, 3),
           [(BUDGET, "Budget review 2027")]),
    Sample("team-5-offsite.eml", "Calendars.Team", utc(2026, 11, 2, 12, 0, 2),
           [(OFFSITE, "Team offsite at the lake")]),
    Sample("team-6-offsite-cancel.eml", "Calendars.Team", utc(2026, 11, 25, 7, 30, 4),
           [(OFFSITE, "Team offsite at the lake")]),
    Sample("inbox-flight-booking.eml", "INBOX", utc(2026, 11, 10, 19, 30, 9),
           [(FLIGHT, "Flight EX 4711 Frankfurt (FRA) - New York (JFK)")]),
]


def fill(dovecot, samples, user=None):
    """APPENDs every sample to its mailbox (creating mailboxes as needed).
    Returns {file name: IMAP UID}."""
    return {s.file: dovecot.add_message(s.mailbox, s.raw(), internaldate=s.internaldate,
                                        user=user)
            for s in samples}


def events_in(samples, mailbox=None):
    """(UID, SUMMARY) pairs the samples carry, optionally of one mailbox."""
    return [ev for s in samples if mailbox in (None, s.mailbox) for ev in s.events]
