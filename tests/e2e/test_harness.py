"""Proof that the test harness itself works, independent of imapcalfs:
the private Dovecot, the test certificates, the sample mail, and the mount
helpers (exercised with a tiny FUSE file system compiled here)."""

import email
import email.policy
import os
import re
import socket
import ssl
import subprocess

import icalendar
import pytest

from harness import dovecot as dvmod
from harness import fs, mount, scenario


def listening_sockets(pids):
    """{(ip, port)} of the TCP sockets in LISTEN state held by pids."""
    inodes = set()
    for pid in pids:
        fd_dir = "/proc/%d/fd" % pid
        try:
            for fd in os.listdir(fd_dir):
                target = os.readlink(os.path.join(fd_dir, fd))
                m = re.match(r"socket:\[(\d+)\]", target)
                if m:
                    inodes.add(m.group(1))
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                    continue
                hexip, hexport = cols[1].split(":")
                raw = bytes.fromhex(hexip)
                if width == 4:
                    ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
                else:
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    ip = socket.inet_ntop(socket.AF_INET6, words)
                found.add((ip, int(hexport, 16)))
    return found


def test_dovecot_listens_on_free_loopback_ports_only(dovecot_server):
    d = dovecot_server
    assert d.imap_port != d.imaps_port
    assert {d.imap_port, d.imaps_port}.isdisjoint({143, 993})
    assert listening_sockets(d.processes()) == {("127.0.0.1", d.imap_port),
                                                ("127.0.0.1", d.imaps_port)}


def test_imaps_login_verifies_the_test_ca(dovecot_server):
    d = dovecot_server
    with d.imap() as c:
        cert = c.sock.getpeercert()
        assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
        assert ("DNS", "localhost") in cert["subjectAltName"]
        caps = c.capability()[1][0].decode().split()
        assert "CONDSTORE" in caps and "QRESYNC" in caps and "UIDPLUS" in caps
    # The system store does not know the test CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        dvmod.imaplib.IMAP4_SSL("127.0.0.1", d.imaps_port, timeout=10,
                                ssl_context=ssl.create_default_context())


def test_starttls_listener_upgrades_and_logs_in(dovecot_server):
    d = dovecot_server
    plain = dvmod.imaplib.IMAP4("127.0.0.1", d.imap_port, timeout=10)
    try:
        assert "STARTTLS" in plain.capabilities
    finally:
        plain.shutdown()
    with d.imap(starttls=True) as c:
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert c.noop()[0] == "OK"


def test_wrong_password_is_refused(dovecot_server):
    d = dovecot_server
    c = dvmod.imaplib.IMAP4_SSL("127.0.0.1", d.imaps_port, ssl_context=d.ssl_context(),
                                timeout=10)
    try:
        with pytest.raises(dvmod.imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            c.login(d.user, d.password + "x")
    finally:
        c.shutdown()


@pytest.mark.parametrize("kind,reason", [
    ("wrong_host", "IP address mismatch"),
    ("unknown_ca", "unable to get local issuer certificate"),
    ("expired", "certificate has expired"),
])
def test_bad_certificates_are_rejected_by_python_ssl(dovecot_factory, pki, kind, reason):
    d = dovecot_factory.start(cert=getattr(pki, kind))
    with pytest.raises(ssl.SSLCertVerificationError, match=reason):
        dvmod.imaplib.IMAP4_SSL("127.0.0.1", d.imaps_port, ssl_context=d.ssl_context(),
                                timeout=10)
    if kind == "wrong_host":
        # Nothing else is wrong with it: under its own name it verifies.
        ctx = d.ssl_context()
        with socket.create_connection(("127.0.0.1", d.imaps_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="wrong.example.org") as tls:
                assert tls.version()
    d.stop()


def test_stripped_variant_offers_no_starttls(dovecot_factory):
    d = dovecot_factory.start(tls=False)
    assert d.imaps_port is None
    c = dvmod.imaplib.IMAP4("127.0.0.1", d.imap_port, timeout=10)
    try:
        assert "STARTTLS" not in c.capabilities
        with pytest.raises(dvmod.imaplib.IMAP4.error):
            c.starttls(ssl.create_default_context())
    finally:
        c.shutdown()
    assert listening_sockets(d.processes()) == {("127.0.0.1", d.imap_port)}
    d.stop()


def test_sample_messages_carry_the_listed_events():
    for s in scenario.MAILBOX2ICS + scenario.DEMO_EXTRA:
        msg = email.message_from_bytes(s.raw(), policy=email.policy.default)
        found = []
        for part in msg.walk():
            name = part.get_filename() or ""
            if part.get_content_type() == "text/calendar" or name.endswith(".ics"):
                cal = icalendar.Calendar.from_ical(part.get_payload(decode=True))
                found += [(str(e["UID"]), str(e["SUMMARY"])) for e in cal.walk("VEVENT")]
        assert found == s.events, s.file


def test_added_messages_show_up_with_internaldate_and_no_flags(dovecot_server):
    d = dovecot_server
    d.add_user("harness")
    uids = scenario.fill(d, scenario.MAILBOX2ICS, user="harness")
    assert set(d.mailboxes("harness")) >= {"INBOX", "Calendars.Alice", "Calendars.Bob"}
    for mbox in ("Calendars.Alice", "Calendars.Bob", "INBOX"):
        samples = [s for s in scenario.MAILBOX2ICS if s.mailbox == mbox]
        dates = d.internaldates(mbox, user="harness")
        assert dates == {uids[s.file]: s.epoch for s in samples}
        assert d.flags(mbox, user="harness") == {uids[s.file]: frozenset() for s in samples}
    # Stored as Maildir++ files, folder ".Calendars.Alice".
    alice = os.path.join(d.mail_dir, "harness", ".Calendars.Alice")
    assert len(os.listdir(os.path.join(alice, "new")) + os.listdir(os.path.join(alice, "cur"))) == 2
    # The structure the daemon will see: alternative with plain, html, calendar (base64).
    with d.imap("harness") as c:
        c.select('"Calendars.Alice"', readonly=True)
        typ, data = c.uid("FETCH", str(uids["alice-2-office.eml"]), "(BODYSTRUCTURE)")
        body = data[0].decode()
        assert re.search(r'\("text" "plain".*\("text" "html".*\("text" "calendar" '
                         r'\("charset" "UTF-8" "method" "REQUEST"\) NIL NIL "base64"', body,
                         re.I), body
        assert '"alternative"' in body.lower()


def test_expunge_and_uidvalidity_helpers(dovecot_server):
    d = dovecot_server
    d.add_user("helpers")
    first = d.add_message("Calendars.X", b"Subject: one\n\n1\n", user="helpers")
    second = d.add_message("Calendars.X", b"Subject: two\n\n2\n", user="helpers")
    d.expunge("Calendars.X", first, user="helpers")
    assert list(d.flags("Calendars.X", user="helpers")) == [second]
    d.set_uidvalidity("Calendars.X", 4242, user="helpers")
    assert d.uidvalidity("Calendars.X", user="helpers") == 4242
    d.create_mailbox("Kalender.Grüße", user="helpers")
    assert "Kalender.Gr&APwA3w-e" in d.mailboxes("helpers")


def test_rawlog_and_byte_counts_record_sessions(dovecot_factory):
    d = dovecot_factory.start(rawlog=True)
    d.add_message("INBOX", b"Subject: counted\n\nbody\n")
    with d.imap() as c:
        c.select("INBOX", readonly=True)
        c.uid("FETCH", "1", "(BODY.PEEK[1])")
    sent = b"".join(open(p, "rb").read() for p in d.rawlog_files() if p.endswith(".in"))
    assert b"UID FETCH 1 (BODY.PEEK[1])" in sent
    counts = d.session_bytes(expect=2)
    assert len(counts) == 2 and all(o > 0 for _, o in counts)
    d.stop()


def test_stop_leaves_no_dovecot_process(dovecot_factory):
    d = dovecot_factory.start()
    port = d.imaps_port
    assert subprocess.run(["pgrep", "-f", d.conf], capture_output=True).returncode == 0
    d.stop()
    assert subprocess.run(["pgrep", "-f", d.conf], capture_output=True).returncode == 1
    assert subprocess.run(["pgrep", "-f", "dovecot-%s/" % d.instance],
                          capture_output=True).returncode == 1
    assert not dvmod.port_accepts(port)
    d.stop()  # idempotent


FAKEFS_C = r"""
/* A minimal read-only FUSE file system with imapcalfs's command line
 * (SOURCE MNT -f -o cafile=...), used only to prove the mount helpers. */
#define FUSE_USE_VERSION 31
#include <fuse.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char body[] = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n";
static char *source;

static int fk_getattr(const char *p, struct stat *st, struct fuse_file_info *fi)
{
    (void)fi;
    memset(st, 0, sizeof *st);
    if (!strcmp(p, "/")) { st->st_mode = S_IFDIR | 0555; st->st_nlink = 2; return 0; }
    if (!strcmp(p, "/merged.ics")) {
        st->st_mode = S_IFREG | 0444; st->st_nlink = 1; st->st_size = sizeof body - 1;
        return 0;
    }
    return -ENOENT;
}

static int fk_readdir(const char *p, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags fl)
{
    (void)off; (void)fi; (void)fl;
    if (strcmp(p, "/")) return -ENOENT;
    fill(buf, ".", NULL, 0, 0); fill(buf, "..", NULL, 0, 0);
    fill(buf, "merged.ics", NULL, 0, 0);
    return 0;
}

static int fk_open(const char *p, struct fuse_file_info *fi)
{
    if (strcmp(p, "/merged.ics")) return -ENOENT;
    return (fi->flags & O_ACCMODE) == O_RDONLY ? 0 : -EROFS;
}

static int fk_read(const char *p, char *buf, size_t n, off_t off, struct fuse_file_info *fi)
{
    (void)p; (void)fi;
    size_t len = sizeof body - 1;
    if ((size_t)off >= len) return 0;
    if (n > len - (size_t)off) n = len - (size_t)off;
    memcpy(buf, body + off, n);
    return (int)n;
}

static const struct fuse_operations ops = {
    .getattr = fk_getattr, .readdir = fk_readdir, .open = fk_open, .read = fk_read,
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *out)
{
    (void)data; (void)out;
    if (key == FUSE_OPT_KEY_NONOPT && !source) { source = strdup(arg); return 0; }
    if (key == FUSE_OPT_KEY_OPT && !strncmp(arg, "cafile=", 7)) return 0;
    return 1;
}

int main(int argc, char **argv)
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    int rc = 1;
    if (fuse_opt_parse(&args, NULL, NULL, opt_proc) == 0) {
        if (source && !strcmp(source, "fail"))
            fprintf(stderr, "fakefs: refusing to mount on purpose\n");
        else
            rc = fuse_main(args.argc, args.argv, &ops, NULL);
    }
    free(source);
    fuse_opt_free_args(&args);
    return rc;
}
"""


@pytest.fixture(scope="module")
def fakefs(workroot):
    """The fake file system above, compiled against libfuse3."""
    src = os.path.join(workroot, "fakefs.c")
    exe = os.path.join(workroot, "fakefs")
    with open(src, "w") as f:
        f.write(FAKEFS_C)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True,
                           text=True, check=True).stdout.split()
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Werror", "-o", exe, src]
                   + flags, check=True)
    return exe


def test_mount_helper_mounts_reads_and_unmounts(fakefs, workroot):
    m = mount.Mount("imaps://alice@127.0.0.1:1", os.path.join(workroot, "fake-ok"),
                    options=["cafile=/dev/null"], password="pw", prog=fakefs)
    try:
        m.start()
        assert mount.is_mounted(m.mountpoint)
        assert fs.ls(m.mountpoint) == ["merged.ics"]
        data = fs.cat(m.path("merged.ics"))
        assert fs.stat(m.path("merged.ics"))["size"] == len(data)
        assert fs.syscall("open_write", m.path("merged.ics"))[0] == "EROFS"
        assert m.env["IMAPCALFS_PASSWORD"] == "pw"
        assert m.env["XDG_CACHE_HOME"].startswith(m.workdir)
    finally:
        rc = m.stop()
    assert rc == 0
    assert not mount.is_mounted(m.mountpoint)
    assert m.stop() == 0  # idempotent


def test_mount_helper_reports_a_daemon_that_fails(fakefs, workroot):
    rc, err = mount.run_mount_expect_failure("fail", os.path.join(workroot, "fake-fail"),
                                             prog=fakefs)
    assert (rc, err) == (1, "fakefs: refusing to mount on purpose\n")
    m = mount.Mount("fail", os.path.join(workroot, "fake-fail2"), prog=fakefs)
    with pytest.raises(mount.MountError, match="status 1 before mounting:\nfakefs: refusing"):
        m.start()
    assert not mount.is_mounted(m.mountpoint)


def test_mount_helper_refuses_a_mount_that_should_fail(fakefs, workroot):
    with pytest.raises(mount.MountError, match="should have failed"):
        mount.run_mount_expect_failure("imaps://x@127.0.0.1:1", os.path.join(workroot, "fk3"),
                                       prog=fakefs)
    assert not mount.is_mounted(os.path.join(workroot, "fk3", "mnt"))
