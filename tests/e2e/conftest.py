"""pytest fixtures for the end-to-end suite: a test PKI, private Dovecot
instances, and imapcalfs mounts that are always unmounted again.

Run with Debian's /usr/bin/python3 -m pytest tests/e2e (as root: Dovecot
and FUSE need it).  IMAPCALFS_BIN names the directory of the binary under
test; IMAPCALFS_VALGRIND=1 / IMAPCALFS_SANITIZED=1 select slower modes;
IMAPCALFS_KEEP_TMP=1 keeps the work directory for a post-mortem.
"""

import os
import re
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import certs, dovecot, mount  # noqa: E402


def pytest_report_header(config):
    mode = "valgrind" if mount.under_valgrind() else "sanitized" if mount.sanitized() else "plain"
    return "imapcalfs binary: %s (%s)" % (mount.binary(), mode)


@pytest.fixture(scope="session")
def workroot():
    """A short, world-searchable directory for everything of this run
    (Dovecot's unprivileged processes must reach their files; unix socket
    paths must stay short).  Removed at the end, after a last check that
    nothing is mounted below it."""
    if os.geteuid() != 0:
        pytest.exit("the e2e suite needs root (Dovecot as root, FUSE mounts)", returncode=2)
    root = tempfile.mkdtemp(prefix="icfs-", dir="/tmp")
    os.chmod(root, 0o755)
    yield root
    left = mount.unmount_everything_under(root)
    if os.environ.get("IMAPCALFS_KEEP_TMP") != "1":
        shutil.rmtree(root, ignore_errors=True)
    assert not left, "mounts left behind by the tests (now lazily unmounted): %s" % left


@pytest.fixture(scope="session")
def pki(workroot):
    """CA, server certificate and the bad certificates (see harness.certs)."""
    return certs.make_pki(os.path.join(workroot, "pki"))


class DovecotFactory:
    """Starts Dovecot instances for one test module and stops them all."""

    def __init__(self, root, pki):
        self.root, self.pki, self.started = root, pki, []

    def start(self, cert=None, tls=True, rawlog=False, users=("alice",)):
        """A running instance serving cert (a CertPair; default: the good
        server cert), IMAPS + STARTTLS, or plain IMAP only when tls=False."""
        pair = cert or self.pki.server
        d = dovecot.Dovecot(tempfile.mkdtemp(prefix="dv-", dir=self.root),
                            pair.cert, pair.key, self.pki.ca_file, users=users, tls=tls,
                            rawlog=rawlog)
        self.started.append(d)
        return d.start()

    def stop_all(self):
        for d in self.started:
            d.stop()
        assert not any(d.processes() for d in self.started), "Dovecot processes left"


@pytest.fixture(scope="module")
def dovecot_factory(workroot, pki):
    f = DovecotFactory(workroot, pki)
    yield f
    f.stop_all()


@pytest.fixture(scope="module")
def dovecot_server(dovecot_factory):
    """An empty instance with user alice, for the whole module."""
    return dovecot_factory.start()


class Mounter:
    """Mounts for one test; every one is unmounted at teardown and its exit
    status checked (non-zero, e.g. ASan's 99, fails the test)."""

    def __init__(self, root, pki, name):
        self.root, self.pki, self.name = root, pki, name
        self.mounts = []
        self.n = 0

    def workdir(self):
        """A fresh directory for one mount (mountpoint, stderr, cache)."""
        self.n += 1
        d = os.path.join(self.root, "%s-%d" % (self.name, self.n))
        os.makedirs(d)
        return d

    def options(self, options, cafile):
        opts = list(options)
        if cafile:
            opts.insert(0, "cafile=" + (cafile if isinstance(cafile, str) else self.pki.ca_file))
        return opts

    def source(self, dv, scheme):
        return dv.url(scheme)

    def mount(self, dv=None, scheme="imaps", options=(), password=True, source=None,
              cafile=True, env=None, start=True):
        """Mounts dv's account (or `source`) in the foreground and waits
        until it is live.  password=True uses dv's password through
        IMAPCALFS_PASSWORD; None passes none; a string passes that one.
        cafile=True adds -o cafile=<test CA>; a path uses that file."""
        if password is True:
            password = dv.password
        m = mount.Mount(source or self.source(dv, scheme), self.workdir(),
                        self.options(options, cafile), password=password, env=env)
        self.mounts.append(m)
        return m.start() if start else m

    def expect_failure(self, source, options=(), password=None, cafile=True, env=None):
        """A mount that must fail: returns (exit status, stderr)."""
        return mount.run_mount_expect_failure(source, self.workdir(),
                                              self.options(options, cafile),
                                              password=password, env=env)

    def close(self):
        """Stops every mount; returns the problems found (empty if none)."""
        problems = []
        for m in self.mounts:
            already = m.proc is None
            rc = m.stop()
            if is_bad_exit(rc) and not already:
                problems.append("imapcalfs %s exited with status %s:\n%s"
                                % (m.source, rc, m.stderr()))
            if mount.is_mounted(m.mountpoint):
                problems.append("%s still mounted" % m.mountpoint)
        return problems


def is_bad_exit(rc):
    """A daemon that was stopped by unmount must exit 0."""
    return rc not in (0, None)


@pytest.fixture
def mounter(workroot, pki, request):
    """Factory for mounts in one test; see Mounter.mount/expect_failure."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:60]
    m = Mounter(os.path.join(workroot, "mounts"), pki, name)
    yield m
    problems = m.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
