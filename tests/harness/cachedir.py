"""Looking at imapcalfs's cache directory from outside: its files, and
whether each entry is whole by the format cache.c documents (magic, payload
length, SHA-256 of the payload, payload)."""

import hashlib
import os
import re
import struct

PACK = b"ICFSPAK"
LISTING = b"ICFSLST"


def files(root):
    """{path: bytes} of every regular file below root."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.join(d, n)] = f.read()
    return out


def magic_for(path):
    return LISTING if os.path.basename(path) == "listing" else PACK


def entry_ok(data, magic):
    """A whole entry: magic (8 bytes: the kind, then a format version
    digit), payload length (u64, host order), SHA-256 of the payload (32),
    the payload."""
    if len(data) < 48 or data[:7] != magic or not data[7:8].isdigit():
        return False
    (length,) = struct.unpack("=Q", data[8:16])
    return len(data) == 48 + length and hashlib.sha256(data[48:]).digest() == data[16:48]


def damaged(root):
    """Paths of entries below root that are not whole (temporary files,
    which were never renamed into place, are not entries)."""
    return [p for p, data in files(root).items()
            if ".tmp." not in os.path.basename(p) and not entry_ok(data, magic_for(p))]


def pack_records(data):
    """[(uid, section, payload)] of a whole pack: after the header, records
    of u32 uid, u16 section length, u64 data length, section, data."""
    out, pos = [], 48
    while pos < len(data):
        uid, slen, dlen = struct.unpack("=IHQ", data[pos:pos + 14])
        pos += 14
        section = data[pos:pos + slen].decode()
        pos += slen
        out.append((uid, section, data[pos:pos + dlen]))
        pos += dlen
    return out


def packs(root):
    """Paths of the (committed) packs of parts below root."""
    return sorted(p for p in files(root) if os.path.basename(p).startswith("pack-")
                  and os.path.basename(os.path.dirname(p)).isdigit())


def part_entries(root):
    """{(uid, section): path of the pack holding it} of the cached parts
    (packs right in a UIDVALIDITY directory; those on a shelf below it hold
    parsed versions, not parts)."""
    out = {}
    for path, data in files(root).items():
        if (os.path.basename(path).startswith("pack-") and entry_ok(data, PACK)
                and os.path.basename(os.path.dirname(path)).isdigit()):
            for uid, section, _ in pack_records(data):
                out[(uid, section)] = path
    return out


def uidvalidity_dirs(root):
    """Names of the per-UIDVALIDITY directories below root."""
    return sorted(n for _, dirs, _ in os.walk(root) for n in dirs if n.isdigit())


def version_packs(root):
    """Paths of the packs of parsed versions (on a shelf below a UIDVALIDITY
    directory, named after the filter)."""
    return sorted(p for p in files(root) if os.path.basename(p).startswith("pack-")
                  and os.path.basename(os.path.dirname(p)).startswith("v-"))
