"""The one reader of /proc/<pid>/mountinfo: every mount of a mount namespace, as proc(5) describes the lines.

Rules:
- A line is ``id parent major:minor root point options [optional fields...] - fstype source super-options``;
  the optional fields end at the lone ``-``. A line that does not have that shape is skipped (the kernel never
  writes one; a truncated read could).
- Path fields (root, point, source) have their octal escapes (``\\040`` for a space) decoded; the result is a
  str through os.fsdecode, so any byte survives.
- Order is the file's order: a later mount on the same point hides an earlier one.
- Standard library only (``delete`` and ``start`` use it on the critical path).
"""

from __future__ import annotations

import os

from shim.record import Record

__all__ = ["MountInfo", "cgroup_mounts", "parse", "read", "unescape"]


class MountInfo(Record):
    """One line of mountinfo."""

    mount_id: int
    parent_id: int
    root: str          # the path inside the filesystem that is mounted (not "/" for bind mounts)
    point: str         # where it is mounted, relative to the reader's root
    options: str       # per-mount options (rw, nosuid, ...)
    fstype: str
    source: str
    super_options: str  # per-superblock options; cgroup v1 names its controllers here

    def super_option_set(self) -> frozenset[str]:
        return frozenset(self.super_options.split(","))


def unescape(raw: bytes) -> str:
    r"""Decode a mountinfo path field (octal escapes like \040 for space)."""
    if b"\\" not in raw:
        return os.fsdecode(raw)
    out = bytearray()
    i = 0
    while i < len(raw):
        code = raw[i + 1:i + 4]
        if raw[i] == 0x5C and len(code) == 3 and code.isdigit() and b"8" not in code and b"9" not in code:
            out.append(int(code, 8) & 0xFF)
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def parse(data: bytes) -> list[MountInfo]:
    """Every well-formed line of a mountinfo text."""
    found = []
    for line in data.splitlines():
        left, sep, right = line.partition(b" - ")
        if not sep:
            continue
        fields, tail = left.split(b" "), right.split(b" ")
        if len(fields) < 6 or len(tail) < 3:
            continue
        try:
            mount_id, parent_id = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        found.append(MountInfo(mount_id, parent_id, unescape(fields[3]), unescape(fields[4]),
                               fields[5].decode(errors="replace"), tail[0].decode(errors="replace"),
                               unescape(tail[1]), tail[2].decode(errors="replace")))
    return found


def read(pid: int | str = "self") -> list[MountInfo]:
    """The mounts of ``pid``'s mount namespace (this process's by default)."""
    with open(f"/proc/{pid}/mountinfo", "rb") as f:
        return parse(f.read())


def cgroup_mounts(mounts: list[MountInfo] | None = None) -> list[MountInfo]:
    """The cgroup (v1) and cgroup2 mounts, in mountinfo order."""
    return [m for m in (read() if mounts is None else mounts) if m.fstype in ("cgroup", "cgroup2")]
