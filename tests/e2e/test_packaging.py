"""Packages and the systemd user unit (issue 6).

- `make deb` (run in a copy of the working tree, so that it never disturbs
  the tree's own build-deb/) gives a .deb with both programs, every man page
  of man/ and the user unit; it depends on fuse3, apt accepts it, lintian
  finds no error in it, and the programs it ships run and mount.
- packaging/rpm/imapcalfs.spec builds (rpmbuild, dependencies not checked:
  this is Debian) an RPM holding the same files as `make install`.
- packaging/systemd/imapcalfs@.service passes `systemd-analyze verify`, and
  its lifecycle works when played the way systemd plays it: ExecStartPre,
  ExecStart with NOTIFY_SOCKET (Type=notify: READY=1 from the main PID once
  the mount is live), ExecStop, ExecStopPost, exit status 0.

Tools that are missing (debhelper, lintian, rpmbuild, systemd-analyze) skip
their tests with the reason; scripts/deps installs all of them."""

import array
import os
import re
import shutil
import socket
import struct
import subprocess
import tarfile

import pytest

from harness import fs, mount, scenario

REPO = mount.REPO
UNIT = os.path.join(REPO, "packaging", "systemd", "imapcalfs@.service")
SPEC = os.path.join(REPO, "packaging", "rpm", "imapcalfs.spec")
BUILD_TIMEOUT = 900


def version():
    with open(os.path.join(REPO, "include", "version.h")) as f:
        return re.search(r'#define IMAPCALFS_VERSION "([^"]+)"', f.read()).group(1)


def man_pages():
    """(section, file name) of every man page in man/."""
    return sorted((n.rsplit(".", 1)[1], n) for n in os.listdir(os.path.join(REPO, "man"))
                  if re.match(r".+\.[1-8]$", n))


def need(tool, package):
    if shutil.which(tool) is None:
        pytest.skip("%s is not installed (Debian package %s; scripts/deps installs it)"
                    % (tool, package))


def run(argv, cwd=None, env=None, timeout=120):
    return subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory):
    """The working tree as `make deb` copies it (no build output, no .git)."""
    dst = str(tmp_path_factory.mktemp("src") / "imapcalfs")
    skip = {".git", "__pycache__", ".pytest_cache"}
    shutil.copytree(REPO, dst, symlinks=True, ignore=lambda d, names: [
        n for n in names if n in skip or (d == REPO and re.match(r"build(-.+)?$", n))])
    return dst


@pytest.fixture(scope="module")
def deb(tree_copy):
    """Runs `make deb` in the copy; returns the path of the binary package."""
    need("dpkg-buildpackage", "dpkg-dev")
    need("dh", "debhelper")
    proc = run(["make", "deb"], cwd=tree_copy, timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode(errors="replace")[-4000:]
    debs = [os.path.join(tree_copy, "build-deb", n)
            for n in os.listdir(os.path.join(tree_copy, "build-deb"))
            if re.match(r"imapcalfs_.*\.deb$", n)]
    assert len(debs) == 1, debs
    return debs[0]


@pytest.fixture(scope="module")
def deb_root(deb, tmp_path_factory):
    """The .deb unpacked (dpkg-deb -x): what installing it puts in /."""
    root = str(tmp_path_factory.mktemp("debroot"))
    proc = run(["dpkg-deb", "-x", deb, root])
    assert proc.returncode == 0, proc.stderr
    return root


def deb_files(deb):
    """{path: mode} of the regular files in the .deb."""
    out = run(["dpkg-deb", "-c", deb]).stdout.decode()
    files = {}
    for line in out.splitlines():
        perms, _, _, _, _, path = line.split(None, 5)
        if perms.startswith("-"):
            mode = sum((c != "-") << (8 - i) for i, c in enumerate(perms[1:10]))
            files[path[1:] if path.startswith(".") else path] = mode
    return files


def test_versions_agree():
    v = version()
    with open(os.path.join(REPO, "packaging", "debian", "changelog")) as f:
        assert re.match(r"imapcalfs \(%s-\d+\)" % re.escape(v), f.readline())
    with open(SPEC) as f:
        assert re.search(r"^Version:\s+%s$" % re.escape(v), f.read(), re.M)
    out = run([mount.binary(), "-V"]).stdout.decode()
    assert re.search(r"^imapcalfs version %s$" % re.escape(v), out, re.M)


def test_deb_holds_programs_man_pages_and_user_unit(deb):
    files = deb_files(deb)
    expected = {"/usr/bin/imapcalfs": 0o755, "/usr/bin/mailbox2ics": 0o755,
                "/usr/lib/systemd/user/imapcalfs@.service": 0o644}
    for section, name in man_pages():
        expected["/usr/share/man/man%s/%s.gz" % (section, name)] = 0o644
    assert ("1", "mailbox2ics.1") in man_pages() and ("1", "imapcalfs.1") in man_pages()
    for path, mode in expected.items():
        assert path in files, "%s is not in the package: %s" % (path, sorted(files))
        assert files[path] == mode, path


def test_deb_depends_on_fuse3(deb):
    fields = {k: run(["dpkg-deb", "-f", deb, k]).stdout.decode().strip()
              for k in ("Package", "Version", "Depends")}
    assert fields["Package"] == "imapcalfs"
    assert re.match(r"%s-\d+$" % re.escape(version()), fields["Version"])
    depends = [d.strip().split()[0] for d in fields["Depends"].split(",")]
    assert "fuse3" in depends and "libfuse3-3" in depends and "libetpan20" in depends, depends
    info = run(["dpkg-deb", "-I", deb]).stdout.decode()
    assert re.search(r"^ Depends: .*\bfuse3\b", info, re.M)


def test_apt_accepts_the_deb(deb):
    need("apt-get", "apt")
    proc = run(["apt-get", "install", "--simulate", "--no-install-recommends", deb],
               env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert re.search(r"^Inst imapcalfs ", out, re.M), out


def test_lintian_finds_no_errors(deb):
    need("lintian", "lintian")
    proc = run(["lintian", "--pedantic", deb], timeout=300)
    tags = proc.stdout.decode()
    assert not re.search(r"^E: ", tags, re.M), tags
    assert proc.returncode == 0, tags + proc.stderr.decode()


def test_packaged_programs_run_and_mount(deb_root, dovecot_factory, tmp_path):
    prog = os.path.join(deb_root, "usr", "bin", "imapcalfs")
    out = run([prog, "-V"]).stdout.decode()
    assert "imapcalfs version " + version() in out
    out = run([os.path.join(deb_root, "usr", "bin", "mailbox2ics"), "-V"]).stdout.decode()
    assert version() in out
    dv = dovecot_factory.start()
    scenario.fill(dv, scenario.MAILBOX2ICS)
    work = str(tmp_path / "m")
    os.makedirs(work)
    os.chmod(tmp_path, 0o755)
    m = mount.Mount(dv.url(), work, ["cafile=" + dv.ca_file], password=dv.password, prog=prog)
    try:
        m.start()
        data = fs.cat(m.path("merged.ics"))
        for _, summary in scenario.events_in(scenario.MAILBOX2ICS):
            assert summary.encode() in data
    finally:
        rc = m.stop()
    assert rc == 0, m.stderr()
    assert not mount.is_mounted(m.mountpoint)


# ---- rpm ---------------------------------------------------------------------------

def test_rpm_spec_builds_the_files_of_make_install(tree_copy, deb, tmp_path):
    need("rpmbuild", "rpm")
    top = tmp_path / "rpmbuild"
    (top / "SOURCES").mkdir(parents=True)
    name = "imapcalfs-" + version()
    with tarfile.open(str(top / "SOURCES" / (name + ".tar.gz")), "w:gz") as tar:
        tar.add(tree_copy, arcname=name,
                filter=lambda ti: None if re.search(r"(^|/)build-deb(/|$)", ti.name) else ti)
    proc = run(["rpmbuild", "-bb", "--nodeps", "--define", "_topdir %s" % top,
                "--define", "_userunitdir /usr/lib/systemd/user",
                "--define", "debug_package %{nil}", SPEC], timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode(errors="replace")[-4000:]
    rpms = [str(p) for p in (top / "RPMS").rglob("*.rpm")]
    assert len(rpms) == 1, rpms
    listed = run(["rpm", "-qlp", rpms[0]]).stdout.decode().split()

    def installed(paths, strip_gz):
        keep = set()
        for p in paths:
            if p.startswith(("/usr/share/doc/", "/usr/share/licenses/", "/usr/lib/.build-id")):
                continue
            keep.add(re.sub(r"\.gz$", "", p) if strip_gz else p)
        return keep

    assert installed(listed, False) == installed(deb_files(deb), True)
    requires = run(["rpm", "-qp", "--requires", rpms[0]]).stdout.decode().split("\n")
    assert "fuse3" in [r.strip() for r in requires]


# ---- systemd --------------------------------------------------------------------

def unit_lines(path):
    """[(key, value)] of a unit file, in order (keys may repeat)."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, _, value = line.partition("=")
                out.append((key.strip(), value.strip()))
    return out


def test_user_unit_passes_systemd_analyze_verify(deb_root, tmp_path):
    """The unit as the package installs it, with its ExecStart pointed at the
    unpacked binary (verify checks that executables exist) and MANPATH at
    the unpacked man pages (verify checks Documentation=man:...)."""
    need("systemd-analyze", "systemd")
    unit = os.path.join(deb_root, "usr", "lib", "systemd", "user", "imapcalfs@.service")
    with open(unit) as f:
        text = f.read()
    assert "/usr/bin/imapcalfs" in text
    text = text.replace("/usr/bin/imapcalfs", os.path.join(deb_root, "usr/bin/imapcalfs"))
    for name in ("imapcalfs@.service", "imapcalfs@alice.service"):
        (tmp_path / name).write_text(text)
        proc = run(["systemd-analyze", "verify", str(tmp_path / name)],
                   env=dict(os.environ, MANPATH=os.path.join(deb_root, "usr", "share", "man"),
                            SYSTEMD_LOG_LEVEL="notice"))
        assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr.decode()
    keys = dict(unit_lines(unit))
    assert keys["Type"] == "notify"
    assert keys["Restart"] == "on-failure"
    assert re.match(r"/bin/fusermount3 -u ", keys["ExecStop"])


def expand(value, instance, home):
    """The unit specifiers used by the unit: %i, %h and %% (systemd.unit(5))."""
    return re.sub(r"%([ih%])", lambda m: {"i": instance, "h": home, "%": "%"}[m.group(1)],
                  value)


def recv_with_pid(sock, timeout):
    """One datagram and the sender's PID (SCM_CREDENTIALS)."""
    sock.settimeout(timeout)
    msg, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return msg, array.array("i", data[:12])[0]
    return msg, None


def test_user_unit_lifecycle_as_systemd_runs_it(dovecot_factory, tmp_path):
    """Plays the unit: ExecStartPre, ExecStart with NOTIFY_SOCKET; systemd
    (NotifyAccess=main) takes READY=1 only from the main PID; ExecStop
    unmounts and the service ends with status 0; ExecStopPost's '-' prefix
    makes its failure (nothing left to unmount) harmless."""
    dv = dovecot_factory.start()
    scenario.fill(dv, scenario.MAILBOX2ICS)
    os.chmod(tmp_path, 0o755)
    home, instance = str(tmp_path / "home"), "alice"
    cfgdir = os.path.join(home, ".config", "imapcalfs")
    os.makedirs(cfgdir)
    fd = os.open(os.path.join(cfgdir, "config"), os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("[alice]\nsource = %s\npassword = %s\ncafile = %s\n"
                % (dv.url(), dv.password, dv.ca_file))
    lines = unit_lines(UNIT)
    cmds = {k: [expand(v, instance, home) for kk, v in lines if kk == k]
            for k in ("ExecStartPre", "ExecStart", "ExecStop", "ExecStopPost")}
    assert len(cmds["ExecStart"]) == 1
    env = {"HOME": home, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]

    def argv(cmd):
        ignore = cmd.startswith("-")
        words = cmd.lstrip("-").split()
        if words[0] == "/usr/bin/imapcalfs":
            words[0] = mount.binary()
        return ignore, words

    for cmd in cmds["ExecStartPre"]:
        ignore, words = argv(cmd)
        assert run(words, env=env).returncode == 0 or ignore, cmd
    mnt = os.path.join(home, "Calendars", instance)
    assert os.path.isdir(mnt)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(str(tmp_path / "notify"))
    _, words = argv(cmds["ExecStart"][0])
    errpath = str(tmp_path / "service.log")
    with open(errpath, "wb") as err:
        main = subprocess.Popen(words, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                env=dict(env, NOTIFY_SOCKET=str(tmp_path / "notify")),
                                start_new_session=True)
    try:
        msg, pid = recv_with_pid(sock, mount.MOUNT_TIMEOUT * 2)
        assert msg == b"READY=1" and pid == main.pid, (msg, pid, main.pid)
        assert mount.is_mounted(mnt)
        assert b"BEGIN:VEVENT" in fs.cat(os.path.join(mnt, "merged.ics"))
        for cmd in cmds["ExecStop"]:
            ignore, words = argv(cmd)
            assert run(words, env=env).returncode == 0 or ignore, cmd
        assert main.wait(timeout=mount.EXIT_TIMEOUT) == 0, open(errpath).read()
        msg, pid = recv_with_pid(sock, mount.EXIT_TIMEOUT)
        assert msg == b"STOPPING=1" and pid == main.pid
        for cmd in cmds["ExecStopPost"]:
            ignore, words = argv(cmd)
            assert run(words, env=env).returncode == 0 or ignore, cmd
        assert not mount.is_mounted(mnt)
    finally:
        sock.close()
        if mount.is_mounted(mnt):
            mount.fusermount_u(mnt, lazy=True)
        if main.poll() is None:
            main.kill()
            main.wait(timeout=30)
