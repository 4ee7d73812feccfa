"""Security (issue 5, SPEC §5): verified TLS on both transports and nothing
below TLS 1.2, credentials from the documented sources in order and never
exposed, the login method the server asks for, and untrusted names from
the server kept inside the mount and the cache.

Every server here is a real Dovecot (tests/harness/oauth.TunedDovecot when
its configuration must differ), except where no Dovecot configuration can
play the part: then a scripted TLS IMAP server (tests/harness/fakeimap)
answers.  Secrets are planted and then looked for, as bytes and in every
base64 alignment, in everything a user or another process could read.
"""

import base64
import contextlib
import grp
import imaplib
import os
import pty
import pwd
import re
import select
import shutil
import signal
import ssl
import stat
import tempfile
import termios
import time
import warnings

import icalendar
import pytest

from harness import dovecot as dvmod
from harness import fakeimap, fs, mount, oauth, scenario


# ----- helpers ----------------------------------------------------------------


def one_line(err):
    """Asserts stderr is one non-empty line; returns it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, "expected one line on stderr, got:\n" + err
    return lines[0]


def start_tuned(factory, cert=None, root=None, **kwargs):
    """A TunedDovecot stopped with the module's other instances."""
    pair = cert or factory.pki.server
    d = oauth.TunedDovecot(root or tempfile.mkdtemp(prefix="dv-", dir=factory.root), pair.cert,
                           pair.key, factory.pki.ca_file, **kwargs)
    factory.started.append(d)
    return d.start()


def logins(dv):
    """Number of successful logins Dovecot logged so far."""
    with open(dv.log_path, errors="replace") as f:
        return len(re.findall(r"imap-login: Info: Login: ", f.read()))


def wait_for(cond, what, timeout=None):
    """Polls cond() until it is true (Dovecot logs through its log process,
    a moment after the fact)."""
    deadline = time.monotonic() + (timeout or mount.ACCESS_TIMEOUT)
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def url_for_host(dv, scheme, host):
    port = dv.imaps_port if scheme == "imaps" else dv.imap_port
    return "%s://%s@%s:%d" % (scheme, dv.user, host, port)


def start_mount(mounter, source, options=(), password=None, env=None, extra_args=(),
                cafile=True, wrap=None):
    """A mount the mounter will stop, with extra command-line arguments
    (-d) or a wrapper command in front of the daemon (strace)."""
    m = mount.Mount(source, mounter.workdir(), mounter.options(options, cafile),
                    password=password, env=env, extra_args=extra_args)
    if wrap and not mount.under_valgrind():
        # (Under valgrind the wrapper is left out: Mount checks argv's layout.)
        m.argv = [shutil.which(wrap[0])] + list(wrap[1:]) + m.argv
    mounter.mounts.append(m)
    return m.start()


def secret_forms(secret):
    """The secret as bytes, and the three shapes it takes inside any base64
    text (one per alignment of the bytes before it): what SASL PLAIN,
    XOAUTH2 or a careless log would show."""
    raw = secret.encode() if isinstance(secret, str) else secret
    forms = [raw]
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw)
        inner = enc[(8 * k + 5) // 6:len(enc) - 4]
        if len(inner) >= 8:
            forms.append(inner)
    return forms


def leaks(data, secret):
    """Which forms of secret occur in data (bytes)."""
    return [f for f in secret_forms(secret) if f in data]


def tree_bytes(root):
    """{path: content} of every regular file below root."""
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                out[p] = f.read()
    return out


def proc_file(pid, name):
    with open("/proc/%d/%s" % (pid, name), "rb") as f:
        return f.read()


def environ_of(pid):
    """/proc/PID/environ, or b"" under valgrind: valgrind hands the program
    a copy of the environment, and /proc shows valgrind's own, which the
    program cannot wipe."""
    return b"" if mount.under_valgrind() else proc_file(pid, "environ")


def daemon_pid(m):
    """PID of imapcalfs itself (the mount's process, or its child when a
    wrapper such as strace runs in front)."""
    pid = m.proc.pid
    for _ in range(3):
        if os.path.basename(proc_file(pid, "cmdline").split(b"\0")[0]) == b"imapcalfs":
            return pid
        kids = proc_file(pid, "task/%d/children" % pid).split()
        if not kids:
            break
        pid = int(kids[0])
    return m.proc.pid


def run_as(user, argv):
    """argv as another user (setpriv), with a timeout; CompletedProcess."""
    pw = pwd.getpwnam(user)
    return fs.run(["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid,
                   "--clear-groups", "--"] + argv, check=False)


def write_config(path, source, password=None, lines=(), mode=0o600):
    """A config file with one account for source (0600 unless told)."""
    text = "[account]\nsource = %s\n" % source
    if password is not None:
        text += 'password = "%s"\n' % password
    text += "".join(line + "\n" for line in lines)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return str(path)


def tls_probe(dv, scheme, lowest):
    """The TLS version a client allowing `lowest` and up gets from dv."""
    ctx = ssl.create_default_context(cafile=dv.ca_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = lowest
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")
    if scheme == "imaps":
        c = imaplib.IMAP4_SSL(dvmod.HOST, dv.imaps_port, ssl_context=ctx, timeout=30)
    else:
        c = imaplib.IMAP4(dvmod.HOST, dv.imap_port, timeout=30)
        c.starttls(ctx)
    try:
        return c.sock.version()
    finally:
        with contextlib.suppress(Exception):
            c.logout()


# ----- TLS ----------------------------------------------------------------------

BAD_CERTS = {
    "unknown_ca": "unable to get local issuer certificate",
    # It names only wrong.example.org; the mount goes to 127.0.0.1.
    "wrong_host": "IP address mismatch",
    "expired": "certificate has expired",
}


@pytest.fixture(scope="module")
def bad_cert_servers(dovecot_factory, pki):
    return {kind: dovecot_factory.start(cert=getattr(pki, kind)) for kind in BAD_CERTS}


@pytest.mark.parametrize("scheme", ["imaps", "imap"])
@pytest.mark.parametrize("kind", sorted(BAD_CERTS))
def test_bad_certificate_fails_before_login(bad_cert_servers, mounter, scheme, kind):
    dv = bad_cert_servers[kind]
    rc, err = mounter.expect_failure(dv.url(scheme), password=dv.password)
    assert rc == 1, err
    line = one_line(err)
    assert "certificate" in line and BAD_CERTS[kind] in line, line
    assert logins(dv) == 0 and "auth failed" not in open(dv.log_path).read()


@pytest.mark.parametrize("scheme", ["imaps", "imap"])
def test_trusted_certificate_mounts(dovecot_server, mounter, scheme):
    dv = dovecot_server
    before = logins(dv)
    m = mounter.mount(dv, scheme=scheme)
    assert "merged.ics" in fs.ls(m.mountpoint)
    wait_for(lambda: logins(dv) > before, "the login in Dovecot's log")
    with open(dv.log_path) as f:
        lines = [ln for ln in f if "Login: user=<alice>" in ln][before:]
    assert lines and all(", TLS," in ln for ln in lines), lines


@pytest.fixture(scope="module")
def name_servers(dovecot_factory, pki):
    """One server whose certificate names only DNS:localhost, one whose
    certificate names only IP:127.0.0.1."""
    dns = pki.ca.issue("server-dns-only", dns=["localhost"])
    ip = pki.ca.issue("server-ip-only", ips=["127.0.0.1"])
    return dovecot_factory.start(cert=dns), dovecot_factory.start(cert=ip)


@pytest.mark.parametrize("scheme", ["imaps", "imap"])
def test_certificate_must_name_the_host_or_its_ip(name_servers, mounter, scheme):
    dns, ip = name_servers
    m = mounter.mount(dns, source=url_for_host(dns, scheme, "localhost"))
    assert "merged.ics" in fs.ls(m.mountpoint)
    rc, err = mounter.expect_failure(url_for_host(dns, scheme, "127.0.0.1"), password=dns.password)
    assert rc == 1 and "IP address mismatch" in one_line(err), err
    m = mounter.mount(ip, source=url_for_host(ip, scheme, "127.0.0.1"))
    assert "merged.ics" in fs.ls(m.mountpoint)
    rc, err = mounter.expect_failure(url_for_host(ip, scheme, "localhost"), password=ip.password)
    assert rc == 1 and "hostname mismatch" in one_line(err), err
    assert "auth failed" not in open(dns.log_path).read() + open(ip.log_path).read()


def test_capath_trusts_a_hashed_directory_only(dovecot_server, pki, mounter, tmp_path):
    dv = dovecot_server
    dirs = {}
    for name, ca, rehash in (("good", pki.ca_file, True), ("other", pki.other_ca.cert, True),
                             ("unhashed", pki.ca_file, False)):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(ca, str(d / "ca.pem"))
        if rehash:
            fs.run(["openssl", "rehash", str(d)])
        dirs[name] = str(d)
    m = mounter.mount(dv, options=["capath=" + dirs["good"]], cafile=False)
    assert "merged.ics" in fs.ls(m.mountpoint)
    for name in ("other", "unhashed"):
        rc, err = mounter.expect_failure(dv.url(), options=["capath=" + dirs[name]],
                                         password=dv.password, cafile=False)
        assert rc == 1 and "unable to get local issuer certificate" in one_line(err), (name, err)


def test_system_store_is_the_default_trust(dovecot_server, pki, mounter):
    dv = dovecot_server
    rc, err = mounter.expect_failure(dv.url(), password=dv.password, cafile=False)
    assert rc == 1 and "unable to get local issuer certificate" in one_line(err), err
    # OpenSSL's default store, pointed at the test CA the standard way.
    m = mounter.mount(dv, cafile=False, env={"SSL_CERT_FILE": pki.ca_file})
    assert "merged.ics" in fs.ls(m.mountpoint)


OPENSSL_TLS11 = """openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MaxProtocol = TLSv1.1
CipherString = DEFAULT@SECLEVEL=0
"""


@pytest.fixture(scope="module")
def tls11_server(dovecot_factory, workroot):
    """Dovecot offering TLS 1.0 and 1.1 only: its OpenSSL gets a
    MaxProtocol through OPENSSL_CONF (Dovecot 2.3 has no ssl_max_protocol)
    and a security level that still allows these versions."""
    conf = os.path.join(workroot, "openssl-tls11.cnf")
    with open(conf, "w") as f:
        f.write(OPENSSL_TLS11)
    return start_tuned(
        dovecot_factory,
        replace=[("ssl_min_protocol = TLSv1.2",
                  "ssl_min_protocol = TLSv1\nssl_cipher_list = DEFAULT@SECLEVEL=0")],
        extra=["import_environment = TZ OPENSSL_CONF=" + conf])


@pytest.mark.parametrize("scheme", ["imaps", "imap"])
def test_server_without_tls_1_2_is_refused(tls11_server, mounter, scheme):
    dv = tls11_server
    # The server is up and speaks TLS 1.1 (Debian's OpenSSL allows it at
    # security level 0), and nothing newer.
    assert tls_probe(dv, scheme, ssl.TLSVersion.MINIMUM_SUPPORTED) == "TLSv1.1"
    with pytest.raises(ssl.SSLError):
        tls_probe(dv, scheme, ssl.TLSVersion.TLSv1_2)
    rc, err = mounter.expect_failure(dv.url(scheme), password=dv.password)
    assert rc == 1, err
    line = one_line(err)
    assert "TLS 1.2" in line and "handshake" in line, line
    assert logins(dv) == 0 and "auth failed" not in open(dv.log_path).read()


def test_implicit_tls_against_plaintext_port_fails(dovecot_factory, mounter):
    dv = dovecot_factory.start(tls=False)
    source = "imaps://%s@%s:%d" % (dv.user, dvmod.HOST, dv.imap_port)
    rc, err = mounter.expect_failure(source, password=dv.password)
    assert rc == 1, err
    line = one_line(err)
    assert "TLS handshake" in line and "does not speak TLS" in line, line
    assert logins(dv) == 0 and "auth failed" not in open(dv.log_path).read()


# ----- where the password comes from ------------------------------------------------


def test_password_sources_in_documented_order(dovecot_server, mounter, tmp_path):
    """passcmd, then passfile, then IMAPCALFS_PASSWORD, then the config
    file: each right one wins over wrong ones below it, and a wrong one
    above a right one loses."""
    dv = dovecot_server
    good, bad = dv.password, dv.password + "-not"
    cases = [
        (dict(passcmd=good, passfile=bad, env=bad, config=bad), True),
        (dict(passcmd=bad, passfile=good, env=good, config=good), False),
        (dict(passfile=good, env=bad, config=bad), True),
        (dict(passfile=bad, env=good, config=good), False),
        (dict(env=good, config=bad), True),
        (dict(env=bad, config=good), False),
        (dict(config=good), True),
    ]
    for i, (sources, works) in enumerate(cases):
        opts = []
        if "passcmd" in sources:
            f = mount.write_passfile(str(tmp_path / ("cmd%d" % i)), sources["passcmd"])
            opts.append("passcmd=cat " + f)
        if "passfile" in sources:
            opts.append("passfile=" + mount.write_passfile(str(tmp_path / ("pf%d" % i)),
                                                           sources["passfile"]))
        if "config" in sources:
            opts.append("config=" + write_config(tmp_path / ("config%d" % i), dv.url(),
                                                 sources["config"]))
        password = sources.get("env")
        if works:
            m = mounter.mount(dv, options=opts, password=password)
            assert "merged.ics" in fs.ls(m.mountpoint), sources
            assert m.stop() == 0, m.stderr()
        else:
            rc, err = mounter.expect_failure(dv.url(), options=opts, password=password)
            assert rc == 1 and "login as alice" in one_line(err), (sources, err)


def read_pty(fd, until, timeout):
    """Reads fd until `until` (bytes) has been seen; returns all read."""
    out, deadline = b"", time.monotonic() + timeout
    while until not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no %r on the terminal; got %r" % (until, out))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def drain_pty(fd):
    out = b""
    while select.select([fd], [], [], 0)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def test_prompt_on_terminal_reads_password_without_echo(dovecot_server, mounter):
    dv = dovecot_server
    m = mount.Mount(dv.url(), mounter.workdir(), mounter.options((), True), password=None)
    pid, master = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        try:
            os.execvpe(m.argv[0], m.argv, m.env)
        finally:
            os._exit(127)
    status, shown = None, b""
    try:
        shown = read_pty(master, b"Password for alice@127.0.0.1:%d: " % dv.imaps_port,
                         mount.MOUNT_TIMEOUT)
        # Echo is off while it waits (Linux reports the slave's modes on the master).
        assert not termios.tcgetattr(master)[3] & termios.ECHO
        os.write(master, dv.password.encode() + b"\n")
        wait_for(lambda: mount.is_mounted(m.mountpoint), "the mount", mount.MOUNT_TIMEOUT)
        assert "merged.ics" in fs.ls(m.mountpoint)
        shown += drain_pty(master)
        assert not leaks(shown, dv.password), shown
        # The terminal is as it was once the password has been read.
        assert termios.tcgetattr(master)[3] & termios.ECHO
    finally:
        if mount.is_mounted(m.mountpoint):
            mount.fusermount_u(m.mountpoint)
        deadline = time.monotonic() + mount.EXIT_TIMEOUT
        while status is None and time.monotonic() < deadline:
            wpid, st = os.waitpid(pid, os.WNOHANG)
            if wpid:
                status = st
            else:
                shown += drain_pty(master)
                time.sleep(0.05)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            status = os.waitpid(pid, 0)[1]
        shown += drain_pty(master)
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0, shown.decode(errors="replace")


def test_no_password_and_no_terminal_fails_with_one_clear_line(dovecot_server, mounter):
    dv = dovecot_server
    before = logins(dv)
    rc, err = mounter.expect_failure(dv.url(), password=None)
    assert rc == 1, err
    line = one_line(err)
    for word in ("passfile", "passcmd", "IMAPCALFS_PASSWORD", "terminal"):
        assert word in line, line
    assert logins(dv) == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o602])
def test_secret_files_refused_unless_private(dovecot_server, mounter, tmp_path, mode):
    dv = dovecot_server
    passfile = mount.write_passfile(str(tmp_path / "pass"), dv.password, mode)
    config = write_config(tmp_path / "config", dv.url(), dv.password, mode=mode)
    for opts, path in ((["passfile=" + passfile], passfile), (["config=" + config], config)):
        rc, err = mounter.expect_failure(dv.url(), options=opts)
        assert rc == 1, err
        line = one_line(err)
        assert path in line and "chmod 600 " + path in line, line


def test_password_refused_on_the_command_line(dovecot_server, mounter):
    dv = dovecot_server
    secret = "cmdline-" + dv.password
    before = logins(dv)
    for source, opts in ((url_for_host(dv, "imaps", "127.0.0.1").replace(
            "alice@", "alice:%s@" % secret), ()), (dv.url(), ["password=" + secret]),
            (dv.url(), ["pass=" + secret])):
        rc, err = mounter.expect_failure(source, options=opts, password=dv.password)
        assert rc == 1, err
        line = one_line(err)
        assert "password" in line and secret not in line, line
    assert logins(dv) == before


# ----- the password never shows -----------------------------------------------------


@pytest.fixture(scope="module")
def mail_server(dovecot_factory):
    """Dovecot with the article's mail, so that the cache gets filled."""
    dv = dovecot_factory.start()
    scenario.fill(dv, scenario.MAILBOX2ICS)
    return dv


def read_everything(m):
    """Reads every file of the mount and .status; returns the bytes seen."""
    seen = b""
    for f in fs.find(m.mountpoint, kind="f"):
        seen += fs.cat(m.path(f))
    seen += fs.cat(m.path(".status"))
    return seen


def test_password_never_in_argv_environ_log_status_or_cache(mail_server, mounter):
    dv = mail_server
    m = start_mount(mounter, dv.url(), password=dv.password, extra_args=["-d"])
    seen = read_everything(m)
    assert len(seen) > 1000 and b"BEGIN:VCALENDAR" in seen
    pid = daemon_pid(m)
    places = {
        "argv": proc_file(pid, "cmdline"),
        # unsetenv() alone leaves the bytes in the initial environment block.
        "environ": environ_of(pid),
        "files and .status": seen,
        "debug log": open(m.stderr_path, "rb").read(),
    }
    places.update(("cache " + p, data) for p, data in
                  tree_bytes(os.path.join(m.workdir, "cache")).items())
    assert any(p.startswith("cache ") for p in places), "nothing was cached"
    found = {where: leaks(data, dv.password) for where, data in places.items()}
    assert not any(found.values()), {k: v for k, v in found.items() if v}
    assert b"AUTHENTICATE PLAIN" in places["debug log"]  # the trace was on
    assert m.stop() == 0, m.stderr()


def test_passcmd_child_gets_no_password_in_its_environment(dovecot_server, mounter, tmp_path):
    dv = dovecot_server
    dump = tmp_path / "child.env"
    secret = mount.write_passfile(str(tmp_path / "secret"), dv.password)
    # IMAPCALFS_PASSWORD is set too; passcmd wins, and neither it nor its
    # children may see the other.
    m = mounter.mount(dv, options=["passcmd=env > %s; cat %s" % (dump, secret)],
                      password=dv.password)
    assert "merged.ics" in fs.ls(m.mountpoint)
    env = dump.read_bytes()
    assert b"PATH=" in env, env  # the dump worked
    assert b"IMAPCALFS_PASSWORD" not in env and not leaks(env, dv.password)
    assert not leaks(environ_of(daemon_pid(m)), dv.password)


# ----- login methods -----------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_servers(dovecot_factory):
    """Dovecot as shipped (AUTH=PLAIN, LOGIN allowed); one that announces
    LOGINDISABLED although it would take LOGIN (so that only the client's
    obedience keeps LOGIN off the wire); one without PLAIN at all, which
    therefore announces LOGINDISABLED itself.  All log auth requests."""
    debug = ["auth_debug = yes"]
    return {
        "plain": start_tuned(dovecot_factory, extra=debug),
        "logindisabled": start_tuned(dovecot_factory,
                                     extra=debug + ["imap_capability = +LOGINDISABLED"]),
        "no_plain": start_tuned(dovecot_factory, extra=debug,
                                replace=[("auth_mechanisms = plain login",
                                          "auth_mechanisms = login")]),
    }


def new_requests(dv, before, count):
    wait_for(lambda: len(dv.auth_requests()) >= before + count, "auth requests in the log")
    return dv.auth_requests()[before:]


def test_authenticate_plain_used_when_offered(auth_servers, mounter):
    dv = auth_servers["plain"]
    before = len(dv.auth_requests())
    m = start_mount(mounter, dv.url(), password=dv.password, extra_args=["-d"])
    assert new_requests(dv, before, 1)[0] == ("AUTHENTICATE", "PLAIN")
    assert "merged.ics" in fs.ls(m.mountpoint)
    assert set(dv.auth_requests()[before:]) == {("AUTHENTICATE", "PLAIN")}
    log = open(m.stderr_path, "rb").read()
    assert b"with AUTHENTICATE PLAIN" in log and not leaks(log, dv.password)


def test_auth_login_option_sends_the_login_command(auth_servers, mounter):
    dv = auth_servers["plain"]
    before = len(dv.auth_requests())
    m = start_mount(mounter, dv.url(), options=["auth=login"], password=dv.password,
                    extra_args=["-d"])
    assert set(new_requests(dv, before, 1)) == {("LOGIN", "PLAIN")}
    log = open(m.stderr_path, "rb").read()
    assert b"with LOGIN" in log and not leaks(log, dv.password)


def test_login_used_when_server_offers_no_plain(pki, mounter):
    with fakeimap.FakeImap(pki.server.cert, pki.server.key,
                           capabilities=["IMAP4rev1"]) as srv:
        m = mounter.mount(source=srv.url(), password=srv.password)
        assert "INBOX" in fs.ls(m.mountpoint)
        assert m.stop() == 0, m.stderr()
    assert srv.logins and set(srv.logins) == {("LOGIN", True)}
    assert "AUTHENTICATE" not in srv.command_names()


def test_logindisabled_is_respected(auth_servers, mounter):
    # Announced but not enforced: the client alone keeps LOGIN off the wire,
    # and its default method (AUTHENTICATE PLAIN) still works.
    dv = auth_servers["logindisabled"]
    rc, err = mounter.expect_failure(dv.url(), options=["auth=login"], password=dv.password)
    assert rc == 1 and "LOGINDISABLED" in one_line(err), err
    assert dv.auth_requests() == []
    m = mounter.mount(dv)
    assert "merged.ics" in fs.ls(m.mountpoint)
    assert set(new_requests(dv, 0, 1)) == {("AUTHENTICATE", "PLAIN")}
    # No PLAIN at all: nothing the client may use.
    dv = auth_servers["no_plain"]
    rc, err = mounter.expect_failure(dv.url(), password=dv.password)
    assert rc == 1, err
    line = one_line(err)
    assert "LOGINDISABLED" in line and "AUTH=PLAIN" in line, line
    assert dv.auth_requests() == [] and logins(dv) == 0


@pytest.fixture(scope="module")
def oauth_server(dovecot_factory):
    """Dovecot whose XOAUTH2 logins are checked by its oauth2 passdb
    against the local introspection endpoint; returns (server, endpoint,
    valid token)."""
    token = "ya29." + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
    intro = oauth.Introspection({token: "alice"}).start()
    root = tempfile.mkdtemp(prefix="dv-", dir=dovecot_factory.root)
    pair = dovecot_factory.pki.server
    dv = oauth.TunedDovecot(
        root, pair.cert, pair.key, dovecot_factory.pki.ca_file,
        replace=[("auth_mechanisms = plain login",
                  "auth_mechanisms = plain login xoauth2 oauthbearer")],
        extra=["auth_debug = yes", "passdb {", "  driver = oauth2",
               "  mechanisms = xoauth2 oauthbearer",
               "  args = " + os.path.join(root, "oauth2.conf"), "}"],
        files={"oauth2.conf": intro.dovecot_conf()})
    dovecot_factory.started.append(dv)
    dv.start()
    yield dv, intro, token
    intro.stop()


def test_xoauth2_logs_in_with_the_token_passcmd_prints(oauth_server, mounter, tmp_path):
    dv, intro, token = oauth_server
    tokfile = mount.write_passfile(str(tmp_path / "token"), token)
    m = start_mount(mounter, dv.url(), options=["auth=xoauth2", "passcmd=cat " + tokfile],
                    extra_args=["-d"])
    assert token in intro.asked
    assert "merged.ics" in fs.ls(m.mountpoint)
    wait_for(lambda: "method=XOAUTH2" in dv.log(), "the XOAUTH2 login in Dovecot's log")
    log = open(m.stderr_path, "rb").read()
    assert b"with AUTHENTICATE XOAUTH2" in log and not leaks(log, token)
    assert not leaks(environ_of(daemon_pid(m)) + proc_file(daemon_pid(m), "cmdline"), token)


def test_xoauth2_wrong_token_fails_mount(oauth_server, auth_servers, mounter, tmp_path):
    dv, intro, token = oauth_server
    wrong = mount.write_passfile(str(tmp_path / "wrong"), token[:-4] + "XXXX")
    rc, err = mounter.expect_failure(dv.url(), options=["auth=xoauth2", "passcmd=cat " + wrong])
    assert rc == 1, err
    line = one_line(err)
    assert "XOAUTH2" in line and "failed" in line, line
    assert token[:-4] + "XXXX" in intro.asked and token not in line
    # A server that offers no XOAUTH2 never gets the token.
    plain = auth_servers["plain"]
    rc, err = mounter.expect_failure(plain.url(), options=["auth=xoauth2", "passcmd=cat " + wrong])
    assert rc == 1 and "AUTH=XOAUTH2" in one_line(err), err


# ----- untrusted names ------------------------------------------------------------------

MARKER = "icfs-evil-%d" % os.getpid()
HOSTILE_UIDS = [
    "../../etc/passwd",
    "../../../../../../../../tmp/%s" % MARKER,
    "/tmp/%s-abs" % MARKER,
    ".", "..", "...", ".status", ".refresh", "merged", "merged.ics", "displayname",
    "a/b/c",
    "%2e%2e%2f" + MARKER,
    "new\nline\ttab",
    "ctl-\x01\x02\x1b[31m-\x7f-" + MARKER,
    "nul-\x00-" + MARKER,
    "junk-\udcff\udcfe\udcc3(-" + MARKER,  # bytes that are not UTF-8
    "x" * 300,
    "y" * 4096,
    "z" * 199 + "/",
    "Ünïcødé €vent ∕ slash",
]


def hostile_message(uid, n):
    """A mail whose text/calendar part (base64, so any byte survives
    transport) holds one VEVENT with the given UID (escaped as RFC 5545
    TEXT, which libical unescapes again)."""
    text = uid.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")
    line = "UID:" + text
    folded = []
    data = line.encode("utf-8", "surrogateescape")
    while len(data) > 74:
        cut = 74
        while cut > 1 and (data[cut] & 0xC0) == 0x80:  # never split a UTF-8 sequence
            cut -= 1
        folded.append(data[:cut])
        data = b" " + data[cut:]
    folded.append(data)
    ics = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//evil//EN\r\nMETHOD:PUBLISH\r\n"
           b"BEGIN:VEVENT\r\n" + b"\r\n".join(folded) + b"\r\n"
           b"DTSTAMP:20260101T000000Z\r\nDTSTART:20260102T%02d0000Z\r\n"
           b"DTEND:20260102T%02d3000Z\r\nSUMMARY:hostile %d\r\n"
           b"END:VEVENT\r\nEND:VCALENDAR\r\n" % (n % 24, n % 24, n))
    body = base64.encodebytes(ics).decode()
    return ("From: mallory@example.org\nTo: alice@example.org\nSubject: hostile %d\n"
            "Date: Thu, 1 Jan 2026 00:00:00 +0000\nMessage-ID: <hostile-%d@example.org>\n"
            "MIME-Version: 1.0\nContent-Type: text/calendar; charset=utf-8; method=PUBLISH\n"
            "Content-Transfer-Encoding: base64\n\n%s" % (n, n, body))


def mount_names(root):
    """Every path below root as bytes (find -print0: newlines survive)."""
    out = fs.run(["find", root, "-mindepth", "1", "-printf", "%P\\0"]).stdout
    return sorted(p for p in out.split(b"\0") if p)


def assert_safe_names(paths):
    for p in paths:
        for comp in p.split(b"/"):
            assert comp not in (b"", b".", b".."), p
            assert len(comp) <= 255, p
            assert not re.search(rb"[\x00-\x1f\x7f]", comp), p


STRACE_CALLS = ("open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,link,linkat,symlink,"
                "symlinkat,unlink,unlinkat,rmdir,truncate,chmod,fchmodat,chown,lchown,fchownat,"
                "mknod,mknodat,utimensat")
_STRACE_ARG = re.compile(r'(?:(?:AT_FDCWD|\d+)<((?:\\x[0-9a-f]{2})*)>, )?"((?:\\x[0-9a-f]{2})*)"')
_STRACE_CALL = re.compile(r"^\d+\s+(\w+)\(")


def _unhex(s):
    return bytes.fromhex(s.replace("\\x", ""))


def files_changed(strace_log, cwd):
    """(syscall, absolute path) of every successful call in an strace -z
    -xx -y log that could create or change a file: opens for writing or
    creating, and every mkdir, rename, link, unlink, chmod..."""
    out = []
    with open(strace_log, errors="replace") as f:
        for line in f:
            m = _STRACE_CALL.match(line)
            if not m:
                continue
            call = m.group(1)
            if call in ("open", "openat", "creat") and call != "creat" and not re.search(
                    r"O_CREAT|O_TRUNC|O_WRONLY|O_RDWR", line):
                continue
            for base, path in _STRACE_ARG.findall(line):
                p = _unhex(path)
                if not p.startswith(b"/"):
                    p = os.path.join(_unhex(base) if base else cwd.encode(), p)
                out.append((call, os.path.normpath(p)))
    return out


def assert_writes_only_under(changes, allowed):
    """Every changed path is allowed or below it, or an existing device that
    is opened for reading and writing (/dev/fuse, /dev/null)."""
    allowed = os.path.realpath(allowed).encode()
    bad = [(c, p) for c, p in changes
           if not (p == allowed or p.startswith(allowed + b"/"))
           and not (c.startswith("open") and (p.startswith(b"/dev/") or p.startswith(b"/proc/")))]
    assert not bad, "imapcalfs changed files outside its cache: %r" % bad[:20]


@pytest.fixture(scope="module")
def hostile_uid_server(dovecot_factory):
    dv = dovecot_factory.start()
    for n, uid in enumerate(HOSTILE_UIDS):
        dv.add_message("Hostile", hostile_message(uid, n))
    return dv


def test_hostile_event_uids_stay_inside_mount_and_cache(hostile_uid_server, mounter, tmp_path,
                                                        workroot):
    dv = hostile_uid_server
    private = tmp_path / "p"
    cache = private / "a" / "b" / "c" / "cache"
    cache.parent.mkdir(parents=True)
    log = str(tmp_path / "strace.log")
    env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"}
    strace = ["strace", "-f", "-z", "-qq", "-xx", "-y", "-s", "8192", "-o", log,
              "-e", "trace=" + STRACE_CALLS]
    m = start_mount(mounter, dv.url(), options=["cache_dir=" + str(cache)], password=dv.password,
                    env=env, wrap=strace)
    names = mount_names(m.mountpoint)
    assert_safe_names(names)
    files = [n for n in names if n.startswith(b"Hostile/") and n != b"Hostile/merged.ics"]
    assert all(n.endswith(b".ics") for n in files), files
    # Every event is one file of its own, found under a safe name.
    uids = {}
    for n in files:
        cal = icalendar.Calendar.from_ical(fs.cat(m.path(n.decode(errors="surrogateescape"))))
        got = [str(e["UID"]) for e in cal.walk("VEVENT")]
        assert len(got) == 1, (n, got)
        uids[got[0]] = n
    # RFC 5545 TEXT has no control characters but HTAB (and escaped LF), and
    # is UTF-8: other controls are dropped on the way, bytes that are not
    # UTF-8 become U+FFFD; the event stays.
    expected = sorted(re.sub("[\x00-\x08\x0b-\x1f\x7f]", "", u.encode(
        "utf-8", "surrogateescape").decode("utf-8", "replace")) for u in HOSTILE_UIDS)
    assert sorted(uids) == expected
    merged = icalendar.Calendar.from_ical(fs.cat(m.path("Hostile", "merged.ics")))
    assert sorted(str(e["UID"]) for e in merged.walk("VEVENT")) == expected
    assert fs.stat(m.path("Hostile", "merged.ics"))["mode"] & stat.S_IFREG
    assert m.stop() == 0, m.stderr()
    # Nothing was written anywhere but in the cache, and the cache holds
    # files (so the check saw the daemon write).
    if mount.under_valgrind():
        return
    changes = files_changed(log, os.getcwd())
    assert any(p.startswith(str(cache).encode()) for _, p in changes), changes[:10]
    assert_writes_only_under(changes, str(cache))
    assert sorted(os.listdir(private)) == ["a"]
    assert not [p for p in ("/tmp/" + MARKER, "/tmp/%s-abs" % MARKER, "/etc/" + MARKER)
                if os.path.lexists(p)]


HOSTILE_MAILBOXES_DOVECOT = ["merged.ics", ".status", ".refresh", "displayname", "100%",
                             "star*", "...", "back\\slash", "%2F", "%2E%2E", "  spaces  ",
                             'quote"d', "-rf", "Ünïcødé"]


def test_hostile_mailbox_names_from_dovecot_become_safe_directories(dovecot_factory, mounter):
    # Dovecot with '/' as separator and a directory per mailbox accepts all
    # of these; it refuses '..', control characters and empty parts (those
    # come from the scripted server in the next test).
    root = tempfile.mkdtemp(prefix="dv-", dir=dovecot_factory.root)
    location = "mail_location = maildir:%s/%%u" % os.path.join(root, "mail")
    dv = start_tuned(dovecot_factory, root=root, replace=[
        ("separator = .", "separator = /"), (location, location + ":LAYOUT=fs")])
    for name in HOSTILE_MAILBOXES_DOVECOT:
        dv.create_mailbox(name)
    dv.add_message("merged.ics", scenario.MAILBOX2ICS[0].raw())
    m = mounter.mount(dv)
    check_hostile_tree(m, len(HOSTILE_MAILBOXES_DOVECOT) + 1)
    # The mailbox named merged.ics keeps its event, under another name.
    events = [icalendar.Calendar.from_ical(fs.cat(m.path(d.decode(), "merged.ics")))
              for d in fs_dirs(m)]
    assert sum(len(list(c.walk("VEVENT"))) for c in events) == 1


def fs_dirs(m):
    return [n for n in mount_names(m.mountpoint) if b"/" not in n
            and stat.S_ISDIR(fs.stat(m.path(n.decode(errors="surrogateescape")))["mode"])]


def check_hostile_tree(m, ndirs):
    """The root holds ndirs mailbox directories with safe names, and its
    own merged.ics and .status are still the real ones."""
    names = mount_names(m.mountpoint)
    assert_safe_names(names)
    top = [n for n in names if b"/" not in n]
    assert top.count(b"merged.ics") == 1 and b".status" not in top, top
    assert stat.S_ISREG(fs.stat(m.path("merged.ics"))["mode"])
    cal = icalendar.Calendar.from_ical(fs.cat(m.path("merged.ics")))
    assert cal.name == "VCALENDAR"
    assert stat.S_ISREG(fs.stat(m.path(".status"))["mode"])
    assert b"VCALENDAR" not in fs.cat(m.path(".status"))
    assert len(fs_dirs(m)) == ndirs, top
    for d in fs_dirs(m):
        inside = fs.syscall("listdir", m.path(d.decode(errors="surrogateescape")))
        assert inside[0] == "OK", (d, inside)


HOSTILE_MAILBOXES_SCRIPTED = [
    (b"..", "."), (b".", "/"), (b"../../etc", "/"), (b"a/../../b", "/"), (b"x/y", None),
    (b"x%2Fy", None), (b"Cal..Evil", "."), (b"ctl\x01\x1b[31m", "."), (b"tab\there", "."),
    (b"new\nline", "."), (b"merged.ics", None), (b".status", None), (b".refresh", None),
    (b"/", None), (b"trailing/", "/"), (b"x" * 300, "."), (b"&AC8-slash", "."),
    (b"INBOX", "."),
]


def test_hostile_mailbox_names_from_a_scripted_server_stay_inside(pki, mounter):
    with fakeimap.FakeImap(pki.server.cert, pki.server.key,
                           mailboxes=HOSTILE_MAILBOXES_SCRIPTED) as srv:
        m = mounter.mount(source=srv.url(), password=srv.password)
        names = mount_names(m.mountpoint)
        assert_safe_names(names)
        top = [n for n in names if b"/" not in n]
        assert top.count(b"merged.ics") == 1 and b".status" not in top, top
        assert stat.S_ISREG(fs.stat(m.path("merged.ics"))["mode"])
        assert stat.S_ISREG(fs.stat(m.path(".status"))["mode"])
        # "x/y" (no hierarchy) and "x%2Fy" stay two mailboxes.
        leaves = [n for n in names if n.endswith(b"merged.ics")]
        assert len(leaves) >= len(HOSTILE_MAILBOXES_SCRIPTED), names
        assert m.stop() == 0, m.stderr()


def test_empty_hierarchy_parts_do_not_merge_mailboxes(pki, mounter):
    boxes = [(b"Cal.Evil", "."), (b"Cal..Evil", "."), (b"trailing", "."), (b"trailing.", "."),
             (b"..", "."), (b"INBOX", ".")]
    with fakeimap.FakeImap(pki.server.cert, pki.server.key, mailboxes=boxes) as srv:
        m = mounter.mount(source=srv.url(), password=srv.password)
        status = fs.cat(m.path(".status"))
        assert m.stop() == 0, m.stderr()
    assert b": %d mailboxes" % len(boxes) in status, status


# ----- cache and mount permissions -----------------------------------------------------------


def test_cache_private_even_with_umask_000(mail_server, mounter):
    dv = mail_server
    old = os.umask(0)
    try:
        m = mounter.mount(dv)
    finally:
        os.umask(old)
    read_everything(m)
    assert m.stop() == 0, m.stderr()
    root = os.path.join(m.workdir, "cache")
    entries = [root]
    for d, dirs, files in os.walk(root):
        entries += [os.path.join(d, n) for n in dirs + files]
    assert len(entries) > 5, entries
    for p in entries:
        st = os.lstat(p)
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        assert stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode), p
        assert stat.S_IMODE(st.st_mode) == want, "%s is %o" % (p, stat.S_IMODE(st.st_mode))


def test_cache_dir_owned_by_someone_else_is_refused(dovecot_server, mounter, tmp_path):
    dv = dovecot_server
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(str(cache), pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    rc, err = mounter.expect_failure(dv.url(), options=["cache_dir=%s" % cache],
                                     password=dv.password)
    assert rc == 1 and str(cache) in one_line(err), err


def test_cache_dir_writable_by_others_is_refused(dovecot_server, mounter, tmp_path):
    dv = dovecot_server
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(str(cache), 0o777)
    rc, err = mounter.expect_failure(dv.url(), options=["cache_dir=%s" % cache],
                                     password=dv.password)
    assert rc == 1 and str(cache) in one_line(err), err


def test_allow_other_only_when_asked(mail_server, mounter):
    dv = mail_server
    m = mounter.mount(dv)
    assert "merged.ics" in fs.ls(m.mountpoint)
    denied = run_as("nobody", ["ls", m.mountpoint])
    assert denied.returncode != 0 and b"Permission denied" in denied.stderr, denied
    assert m.stop() == 0, m.stderr()
    m = mounter.mount(dv, options=["allow_other"])
    allowed = run_as("nobody", ["cat", m.path("Calendars", "Alice", "merged.ics")])
    assert allowed.returncode == 0, allowed
    assert icalendar.Calendar.from_ical(allowed.stdout).walk("VEVENT")


def test_uid_gid_umask_and_default_permissions(mail_server, mounter):
    dv = mail_server
    nobody = pwd.getpwnam("nobody")
    m = mounter.mount(dv, options=["allow_other", "default_permissions",
                                   "uid=%d" % nobody.pw_uid, "gid=%d" % nobody.pw_gid,
                                   "umask=0077"])
    st = fs.stat(m.path("merged.ics"))
    assert (st["uid"], st["gid"]) == (nobody.pw_uid, nobody.pw_gid)
    assert stat.S_IMODE(st["mode"]) & 0o077 == 0
    owner = run_as("nobody", ["cat", m.path("merged.ics")])
    assert owner.returncode == 0, owner
    other = run_as("daemon", ["cat", m.path("merged.ics")])
    assert other.returncode != 0 and b"Permission denied" in other.stderr, other
