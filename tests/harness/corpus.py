"""The client corpus (tests/corpus/clients/): messages modelled on what
real mail clients send, and the outcome written down for each of them in
expected.json (see README.md there).

This module reads the expectations, loads the messages into a Dovecot
instance, and offers the small pieces the corpus tests share: a mount kept
for a whole test module, and the event files of one mailbox directory.
"""

import datetime
import json
import os

from . import mount, scenario

CORPUS_DIR = os.path.join(scenario.REPO, "tests", "corpus", "clients")
EXPECTED = os.path.join(CORPUS_DIR, "expected.json")


def expected():
    """expected.json as a dict (mailbox order kept)."""
    with open(EXPECTED, encoding="utf-8") as f:
        return json.load(f)


def message_files():
    """Names of the .eml files in the corpus directory, sorted."""
    return sorted(n for n in os.listdir(CORPUS_DIR) if n.endswith(".eml"))


def raw(name):
    with open(os.path.join(CORPUS_DIR, name), "rb") as f:
        return f.read()


def parse_when(text):
    """An expected time: "YYYY-MM-DD" is a date (all-day), anything else
    an ISO 8601 date-time with its UTC offset ("Z" allowed)."""
    if len(text) == 10:
        return datetime.date.fromisoformat(text)
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def load(dovecot, spec=None, user=None):
    """APPENDs every message of the corpus to its mailbox with its
    INTERNALDATE. Returns {file name: (mailbox, IMAP UID)}."""
    spec = spec or expected()
    uids = {}
    for mbox, box in spec["mailboxes"].items():
        for m in box["messages"]:
            uids[m["file"]] = (mbox, dovecot.add_message(
                mbox, raw(m["file"]), internaldate=parse_when(m["internaldate"]), user=user))
    return uids


class ModuleMount:
    """A mount shared by the read-only tests of one module: started on
    enter, unmounted on exit, and its exit status checked then."""

    def __init__(self, dv, workdir, options, ca_file):
        self.m = mount.Mount(dv.url(), workdir, ["cafile=" + ca_file] + list(options),
                             password=dv.password)

    def __enter__(self):
        return self.m.start()

    def __exit__(self, *exc):
        rc = self.m.stop()
        assert rc == 0, "imapcalfs exited %s:\n%s" % (rc, self.m.stderr())


def event_files(tree, directory):
    """{file name: bytes} of the event files of one directory of a tree
    read with calcheck.read_tree (merged.ics and displayname left out)."""
    return {os.path.basename(p): b for p, b in tree.items()
            if os.path.dirname(p) == directory
            and os.path.basename(p) not in ("merged.ics", "displayname")}


def status_line(status, mailbox):
    """The line of .status that describes mailbox."""
    lines = [x for x in status.splitlines() if x.startswith(mailbox + ": ")]
    assert len(lines) == 1, "no single .status line for %s:\n%s" % (mailbox, status)
    return lines[0]
