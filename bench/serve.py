#!/usr/bin/python3
"""Keeps the benchmark's Dovecot running with generated mail, for profiling
by hand: bench/serve.py [--size N] [--seed S] DIR

Starts the same private Dovecot and fills it with the same mail as
bench/run.py does for that size, then prints the environment to mount it
(IMAPCALFS_PASSWORD, the source URL, the CA file) as shell assignments and
waits until it is interrupted (Ctrl-C or SIGTERM), when it stops Dovecot.
Example:

    bench/serve.py --size 10000 /tmp/prof > /tmp/prof.env &
    . /tmp/prof.env
    valgrind --tool=massif build/imapcalfs -f -o cafile=$CA,cache_dir=/tmp/c $URL /mnt
"""

import argparse
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import mailgen  # noqa: E402
import server  # noqa: E402
from harness import certs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=2007)
    ap.add_argument("dir")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    os.chmod(a.dir, 0o755)
    pki = certs.make_pki(os.path.join(a.dir, "pki"))
    dv = server.BenchDovecot(os.path.join(a.dir, "dovecot"), pki.server.cert, pki.server.key,
                             pki.ca_file)
    dv.start()
    try:
        gen = mailgen.MailGenerator(a.seed)
        count, nbytes = dv.fill(gen, gen.plan(a.size))
        print("# %d messages, %d bytes" % (count, nbytes))
        print("IMAPCALFS_PASSWORD='%s'; export IMAPCALFS_PASSWORD" % dv.password)
        print("URL='%s'" % dv.url("imaps"))
        print("CA='%s'" % pki.ca_file)
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        dv.stop()


if __name__ == "__main__":
    main()
