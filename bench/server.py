"""The benchmark's Dovecot: the test harness's private instance, plus live
per-command statistics, and the mail filled in straight into its Maildir.

Bytes "received from the server" are counted by Dovecot itself, the same
way for every client: the stats process sums `bytes_out` of every
`imap_command_finished` event (what the imap process wrote for the
command, before TLS).  `doveadm stats dump -r` reads and resets the sums,
so each measured phase gets its own numbers even when the client (the
imapcalfs daemon) keeps its sessions open.  A second metric counts the
commands that fetch body parts (`BODY.PEEK[`), which is how "no calendar
part downloaded again" is checked.  Pre-login traffic (greeting,
CAPABILITY, LOGIN) is not in the sums: a few hundred bytes per session.
"""

import contextlib
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from harness import dovecot  # noqa: E402

import mailgen  # noqa: E402

STATS_CONFIG = """
# benchmark: per-command byte counts, read with doveadm stats dump -r
metric bench_cmd {
  filter = event=imap_command_finished
  fields = bytes_in bytes_out
  group_by = cmd_name
}
metric bench_body {
  filter = event=imap_command_finished AND cmd_args="*BODY.PEEK[*"
  fields = bytes_out
}
"""


class Stats:
    """What the server did during one phase."""

    def __init__(self, rows=None):
        rows = rows or {}
        self.rows = rows
        tot = rows.get(("bench_cmd", "bytes_out"))
        self.bytes_out = tot[1] if tot else 0
        self.commands = tot[0] if tot else 0
        body = rows.get(("bench_body", "bytes_out"))
        self.body_commands = body[0] if body else 0
        self.body_bytes = body[1] if body else 0

    def by_command(self):
        """{command name: (count, bytes_out)}."""
        out = {}
        for (metric, fld), (count, total) in self.rows.items():
            if metric.startswith("bench_cmd_") and fld == "bytes_out" and count:
                out[metric[len("bench_cmd_"):]] = (count, total)
        return out

    def __repr__(self):
        return "Stats(bytes_out=%d, commands=%d, body_commands=%d, %s)" % (
            self.bytes_out, self.commands, self.body_commands, self.by_command())


class BenchDovecot(dovecot.Dovecot):
    """A harness Dovecot with the statistics above switched on."""

    def _config(self):
        return super()._config() + STATS_CONFIG

    def _dump(self, reset=False):
        out = self.doveadm("stats", "dump", *(["-r"] if reset else []))
        rows = {}
        for line in out.splitlines()[1:]:
            f = line.split("\t")
            if len(f) >= 4:
                rows[(f[0], f[1])] = (int(f[2]), int(f[3]))
        return rows

    def take_stats(self, settle=0.15, timeout=10):
        """The statistics since the last call, then reset.  Events reach the
        stats process a moment after the client saw the reply: dump until
        two dumps `settle` seconds apart agree."""
        deadline = time.monotonic() + timeout
        prev = self._dump()
        while time.monotonic() < deadline:
            time.sleep(settle)
            cur = self._dump()
            if cur == prev:
                break
            prev = cur
        return Stats(self._dump(reset=True))

    def user_maildir(self, user=None):
        return os.path.join(self.mail_dir, user or self.user)

    def fill(self, gen, plans, user=None):
        """Writes the planned messages straight into the user's Maildir++
        (owned by the mail user, as Dovecot wants), then lets Dovecot index
        them.  Returns (messages, bytes)."""
        root = self.user_maildir(user)
        os.makedirs(root, exist_ok=True)
        res = mailgen.write_maildir(root, gen, plans, self._mail_uid, self._mail_gid)
        self.doveadm("force-resync", "-u", user or self.user, "*")
        return res

    @contextlib.contextmanager
    def session(self, user=None):
        with self.imap(user) as c:
            yield c

    def append(self, gen, plans, user=None):
        """APPENDs the planned messages (one session), with their dates."""
        with self.session(user) as c:
            for p in plans:
                raw = dovecot.crlf(gen.render(p))
                when = dovecot._internaldate_arg(p.date)
                flags = "(\\Seen)" if "S" in p.flags else None
                typ, data = c.append(dovecot.imap_quote(dovecot.mutf7_encode(p.mailbox)), flags,
                                     when, raw)
                if typ != "OK":
                    raise dovecot.DovecotError("APPEND: %s %r" % (typ, data))

    def expunge_random(self, rng, count, mailboxes, user=None):
        """Expunges `count` messages picked at random over `mailboxes`
        (weighted by their message counts).  Returns {mailbox: [uids]}."""
        done = {}
        with self.session(user) as c:
            uids = {}
            for mb in mailboxes:
                typ, data = c.select(dovecot.imap_quote(mb))
                typ, data = c.uid("SEARCH", "ALL")
                uids[mb] = [int(x) for x in (data[0] or b"").split()]
            pool = [(mb, u) for mb in mailboxes for u in uids[mb]]
            for mb, u in sorted(rng.sample(pool, min(count, len(pool)))):
                done.setdefault(mb, []).append(u)
            for mb, gone in done.items():
                c.select(dovecot.imap_quote(mb))
                uidset = ",".join(str(u) for u in gone)
                c.uid("STORE", uidset, "+FLAGS.SILENT", r"(\Deleted)")
                c.uid("EXPUNGE", uidset)
        return done

    def message_counts(self, mailboxes, user=None):
        out = {}
        with self.session(user) as c:
            for mb in mailboxes:
                typ, data = c.status(dovecot.imap_quote(mb), "(MESSAGES)")
                out[mb] = int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
        return out
