"""Test PKI made with the openssl command line.

A CA (key + self-signed cert) signs server certificates.  Besides the good
server certificate (DNS:localhost, IP:127.0.0.1) it makes the bad ones the
TLS tests need: one from an unknown CA, one for the wrong host name and one
that has expired.  Everything lives in one directory; nothing is cached
between runs.
"""

import datetime
import os
import subprocess
from dataclasses import dataclass

OPENSSL = "openssl"

# EC keys: generating them is instant, and OpenSSL, GnuTLS and Python's ssl
# all handle P-256 server certificates.
_KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass
class CertPair:
    """A certificate and its private key, both PEM files."""

    cert: str
    key: str


def _run(args, cwd):
    """Runs openssl, raising with its stderr when it fails."""
    proc = subprocess.run(
        [OPENSSL] + args, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise RuntimeError(
            "openssl %s failed (%d): %s" % (" ".join(args), proc.returncode, proc.stderr)
        )
    return proc.stdout


def _asn1_time(when):
    """Formats a datetime as the GeneralizedTime `openssl ca` expects."""
    return when.strftime("%Y%m%d%H%M%SZ")


class CA:
    """A certificate authority in its own directory.

    Signing goes through `openssl ca` (not `x509 -req`) because only that
    accepts explicit start and end dates, which an expired cert needs.
    """

    def __init__(self, directory, name="imapcalfs test CA"):
        self.dir = directory
        os.makedirs(self.dir, exist_ok=True)
        self.key = os.path.join(self.dir, "ca.key")
        self.cert = os.path.join(self.dir, "ca.pem")
        _run(
            ["req", "-x509"]
            + _KEY_ARGS
            + [
                "-keyout", self.key,
                "-out", self.cert,
                "-days", "3650",
                "-subj", "/O=imapcalfs tests/CN=" + name,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-addext", "subjectKeyIdentifier=hash",
            ],
            self.dir,
        )
        os.chmod(self.key, 0o600)
        self._db = os.path.join(self.dir, "db")
        os.makedirs(self._db, exist_ok=True)
        open(os.path.join(self._db, "index.txt"), "w").close()
        with open(os.path.join(self._db, "serial"), "w") as f:
            f.write("1000\n")
        self._conf = os.path.join(self.dir, "ca.cnf")
        with open(self._conf, "w") as f:
            f.write(
                "[ca]\ndefault_ca = testca\n"
                "[testca]\n"
                "dir = %s\n"
                "database = $dir/index.txt\n"
                "serial = $dir/serial\n"
                "new_certs_dir = $dir\n"
                "default_md = sha256\n"
                "policy = anything\n"
                "unique_subject = no\n"
                "copy_extensions = none\n"
                "email_in_dn = no\n"
                "[anything]\n"
                "commonName = supplied\n"
                "organizationName = optional\n" % self._db
            )

    def issue(self, name, dns=(), ips=(), not_before=None, not_after=None, days=825):
        """Makes a server cert `name`.pem/.key signed by this CA.

        dns/ips become the subjectAltName; not_before/not_after are
        `YYYYMMDDHHMMSSZ` strings (both or neither) for certs outside their
        validity period.  Returns a CertPair.
        """
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".pem")
        cn = (list(dns) + list(ips) + [name])[0]
        _run(
            ["req", "-new"] + _KEY_ARGS
            + ["-keyout", key, "-out", csr, "-subj", "/O=imapcalfs tests/CN=" + cn],
            self.dir,
        )
        os.chmod(key, 0o600)
        ext = os.path.join(self.dir, name + ".ext")
        san = ["DNS:" + d for d in dns] + ["IP:" + i for i in ips]
        with open(ext, "w") as f:
            f.write("[srv]\nbasicConstraints = critical,CA:FALSE\n")
            f.write("keyUsage = critical,digitalSignature,keyEncipherment\n")
            f.write("extendedKeyUsage = serverAuth\n")
            f.write("subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
            if san:
                f.write("subjectAltName = %s\n" % ",".join(san))
        args = [
            "ca", "-batch", "-config", self._conf, "-notext",
            "-cert", self.cert, "-keyfile", self.key,
            "-in", csr, "-out", cert, "-extfile", ext, "-extensions", "srv",
        ]
        if not (not_before and not_after):
            # Backdated a day so that a clock a little behind still accepts it.
            now = datetime.datetime.now(datetime.timezone.utc)
            not_before = _asn1_time(now - datetime.timedelta(days=1))
            not_after = _asn1_time(now + datetime.timedelta(days=days))
        args += ["-startdate", not_before, "-enddate", not_after]
        _run(args, self.dir)
        return CertPair(cert=cert, key=key)


@dataclass
class TestPKI:
    """Every certificate the suite uses, made once per session."""

    ca: CA
    server: CertPair  # localhost + 127.0.0.1, signed by ca
    unknown_ca: CertPair  # localhost + 127.0.0.1, signed by another CA
    wrong_host: CertPair  # only DNS:wrong.example.org, signed by ca
    expired: CertPair  # localhost + 127.0.0.1, signed by ca, expired in 2021
    other_ca: CA

    @property
    def ca_file(self):
        return self.ca.cert


def make_pki(directory):
    """Creates the CA, the good server cert and the three bad ones."""
    ca = CA(os.path.join(directory, "ca"))
    other = CA(os.path.join(directory, "other-ca"), name="unknown test CA")
    local = dict(dns=["localhost"], ips=["127.0.0.1"])
    return TestPKI(
        ca=ca,
        server=ca.issue("server", **local),
        unknown_ca=other.issue("server-unknown-ca", **local),
        wrong_host=ca.issue("server-wrong-host", dns=["wrong.example.org"]),
        expired=ca.issue(
            "server-expired",
            not_before="20200101000000Z",
            not_after="20210101000000Z",
            **local,
        ),
        other_ca=other,
    )
