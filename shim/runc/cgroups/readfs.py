"""Reading cgroupfs and procfs files cheaply, and parsing their formats.

Rules:
- Pure functions, no trio, no global state: the stats readers call these from a worker thread.
- `read` does one open, one `os.read` of up to 64 KiB and one close per file (a seq_file fills the whole
  user buffer on the first read); only a file that fills the buffer is read further. A missing file (or a
  cgroup removed under us: ENOENT, ENODEV) is None, so a caller leaves just that file's fields zero.
- Numbers are parsed like containerd's cgroups library: a negative value becomes 0, "max" is decided by
  the caller (v1 pids.max "max" is 0, every v2 "max" is 2**64-1). A malformed line is skipped, never fatal:
  one odd line must not cost the whole sample.
"""
from __future__ import annotations

import errno
import os
from typing import Iterator

CHUNK = 65536
MAX_U64 = 2**64 - 1
_GONE = (errno.ENOENT, errno.ENODEV, errno.ENOTDIR, errno.ESRCH)


def read(path: str) -> bytes | None:
    """The whole file, or None if it (or its cgroup) does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in _GONE:
            return None
        raise
    try:
        data = os.read(fd, CHUNK)
        if len(data) == CHUNK:
            parts = [data]
            while chunk := os.read(fd, CHUNK):
                parts.append(chunk)
            data = b"".join(parts)
        return data
    except OSError as e:
        if e.errno in _GONE:
            return None
        raise
    finally:
        os.close(fd)


def uint(token: bytes | str) -> int | None:
    """A decimal counter; negative values are 0 (as upstream's parseUint); None if not a number."""
    try:
        v = int(token)
    except ValueError:
        return None
    if v < 0:
        return 0
    return min(v, MAX_U64)


def single(data: bytes | None, max_value: int | None = None) -> int | None:
    """A one-value file; "max" gives `max_value` (None: not a number)."""
    if data is None:
        return None
    text = data.strip()
    if text == b"max":
        return max_value
    return uint(text)


def kv(data: bytes | None) -> dict[str, int]:
    """`key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control...)."""
    out: dict[str, int] = {}
    if not data:
        return out
    for line in data.split(b"\n"):
        parts = line.split()
        if len(parts) != 2:
            continue
        v = uint(parts[1])
        if v is not None:
            out[parts[0].decode()] = v
    return out


def blkio_lines(data: bytes | None) -> Iterator[tuple[int, int, str, int]]:
    """(major, minor, op, value) of a v1 blkio.* file: `8:0 Read 123` or `8:0 123`; `Total N` is skipped."""
    if not data:
        return
    for line in data.split(b"\n"):
        fields = line.replace(b":", b" ").split()
        if len(fields) == 3:
            major, minor, op, value = fields[0], fields[1], b"", fields[2]
        elif len(fields) == 4:
            major, minor, op, value = fields
        else:
            continue  # "Total 123" and blank lines
        nums = uint(major), uint(minor), uint(value)
        if None in nums:
            continue
        yield nums[0], nums[1], op.decode(), nums[2]


def partitions(data: bytes | None) -> dict[tuple[int, int], str]:
    """(major, minor) -> /dev/<name> from /proc/partitions (the first name of a device wins)."""
    out: dict[tuple[int, int], str] = {}
    if not data:
        return out
    for line in data.split(b"\n")[2:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        major, minor = uint(fields[0]), uint(fields[1])
        if major is None or minor is None:
            continue
        out.setdefault((major, minor), "/dev/" + fields[3].decode())
    return out


def io_stat(data: bytes | None) -> Iterator[tuple[int, int, dict[str, int]]]:
    """(major, minor, {rbytes, wbytes, rios, wios, ...}) per line of a v2 io.stat file."""
    if not data:
        return
    for line in data.split(b"\n"):
        parts = line.split()
        if len(parts) < 2:
            continue
        majmin = parts[0].split(b":")
        if len(majmin) != 2:
            continue
        major, minor = uint(majmin[0]), uint(majmin[1])
        if major is None or minor is None:
            continue
        values = {}
        for item in parts[1:]:
            key, sep, value = item.partition(b"=")
            v = uint(value) if sep else None
            if v is not None:
                values[key.decode()] = v
        yield major, minor, values


def psi(data: bytes | None) -> dict[str, dict[str, float | int]] | None:
    """{"some": {...}, "full": {...}} of a *.pressure file (avg10/avg60/avg300 floats, total int)."""
    if data is None:
        return None
    out: dict[str, dict[str, float | int]] = {}
    for line in data.split(b"\n"):
        parts = line.split()
        if not parts or parts[0] not in (b"some", b"full"):
            continue
        entry: dict[str, float | int] = {}
        for item in parts[1:]:
            key, _, value = item.partition(b"=")
            try:
                entry[key.decode()] = int(value) if key == b"total" else float(value)
            except ValueError:
                continue
        out[parts[0].decode()] = entry
    return out


def rdma(data: bytes | None) -> list[tuple[str, int, int]]:
    """(device, hca_handles, hca_objects) per line of rdma.current / rdma.max ("max" is 2**32-1)."""
    out = []
    if not data:
        return out
    for line in data.split(b"\n"):
        parts = line.split()
        if len(parts) != 3:
            continue
        values = {}
        for item in parts[1:]:
            key, _, value = item.partition(b"=")
            values[key] = 2**32 - 1 if value == b"max" else min(uint(value) or 0, 2**32 - 1)
        out.append((parts[0].decode(), values.get(b"hca_handle", 0), values.get(b"hca_object", 0)))
    return out


def hugepage_size_name(dirname: str) -> str | None:
    """`hugepages-2048kB` -> "2MB", the page-size spelling of the hugetlb cgroup files."""
    _, _, size = dirname.partition("-")
    if not size.endswith("kB") or not size[:-2].isdigit():
        return None
    value = float(int(size[:-2]) * 1024)
    units = ("B", "KB", "MB", "GB", "TB", "PB")
    i = 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    return "%g%s" % (value, units[i])
