"""Read-only views of /proc used to find what a private containerd left behind, and the forced cleanup of it.

Rules:
- Everything here identifies processes and mounts by facts unique to one harness instance (its gRPC socket
  path on a shim's command line, its containerd namespace in a cgroup path, its root/state directories as
  mount points).  Nothing here ever matches by program name, so processes other work started are never hit.
- A process that vanishes while being read is simply skipped (/proc races are normal).
"""
from __future__ import annotations

import collections
import ctypes
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

MNT_DETACH = 2


@dataclass(frozen=True)
class Proc:
    pid: int
    argv: tuple[str, ...]


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def all_processes() -> list[Proc]:
    procs = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        raw = _read(f"/proc/{entry}/cmdline")
        if raw is None or not alive(int(entry)):
            continue
        argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
        procs.append(Proc(int(entry), argv))
    return procs


def shims_of(grpc_address: str) -> list[Proc]:
    """Shim processes (start, delete or daemon) that were given ``-address <grpc_address>``."""
    found = []
    for p in all_processes():
        args = p.argv
        for i, a in enumerate(args):
            if (a in ("-address", "--address") and i + 1 < len(args) and args[i + 1] == grpc_address) or \
                    a in (f"-address={grpc_address}", f"--address={grpc_address}"):
                found.append(p)
                break
    return found


def cgroup_of(pid: int) -> str:
    """/proc/<pid>/cgroup ("" once the process is gone)."""
    raw = _read(f"/proc/{pid}/cgroup")
    return raw.decode(errors="replace") if raw is not None else ""


def in_namespace_cgroup(namespace: str) -> list[Proc]:
    """Processes in a cgroup below ``/<namespace>/`` (where ctr puts containers of that namespace)."""
    prefix = f"/{namespace}/"
    found = []
    for p in all_processes():
        raw = _read(f"/proc/{p.pid}/cgroup")
        if raw is None:
            continue
        for line in raw.decode(errors="replace").splitlines():
            path = line.split(":", 2)[-1]
            if path.startswith(prefix):
                found.append(p)
                break
    return found


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (\\040 for space etc.)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(*dirs: Path) -> list[str]:
    """Mount points (in this mount namespace) at or below any of ``dirs``."""
    roots = [str(d).rstrip("/") for d in dirs]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if any(point == r or point.startswith(r + "/") for r in roots):
            found.append(point)
    return found


def unmount(points: list[str]) -> list[str]:
    """Lazily unmount ``points``, deepest first; returns the messages of failures."""
    libc = ctypes.CDLL(None, use_errno=True)
    errors = []
    for point in sorted(set(points), key=len, reverse=True):
        if libc.umount2(point.encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            errors.append(f"umount {point}: {os.strerror(err)}")
    return errors


def socket_inode(path: str) -> int | None:
    """The inode of the listening unix socket bound at ``path`` (from /proc/net/unix), or None."""
    with open("/proc/net/unix") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and fields[3] == "00010000":  # __SO_ACCEPTCON
                return int(fields[6])
    return None


def holders_of_socket(inode: int, among: list[Proc]) -> list[int]:
    """The pids of ``among`` that hold socket ``inode`` open."""
    found = []
    for p in among:
        try:
            fds = os.listdir(f"/proc/{p.pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{p.pid}/fd/{fd}") == f"socket:[{inode}]":
                    found.append(p.pid)
                    break
            except OSError:
                continue
    return found


def zombies(parents: set[int]) -> list[Proc]:
    """Zombie children (state Z) of any of ``parents``: exits nobody reaped yet."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if stat is None:
            continue
        name, rest = stat.rsplit(b")", 1)
        fields = rest.split()
        if fields[0] == b"Z" and int(fields[1]) in parents:
            found.append(Proc(int(entry), (name.split(b"(", 1)[-1].decode(errors="replace"),)))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = _read(f"/proc/{pid}/stat")
    # A zombie (state Z) is dead for our purposes; its parent will reap it.
    return stat is not None and stat.rsplit(b")", 1)[-1].split()[0] != b"Z"


def kill_all(procs: list[Proc], timeout: float = 5.0) -> list[Proc]:
    """SIGKILL ``procs`` and wait for them to die; returns those still alive after ``timeout``."""
    for p in procs:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in procs if alive(p.pid)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in procs if alive(p.pid)]


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroups_below(name: str) -> list[str]:
    """Cgroup directories below ``/<name>/`` (e.g. a containerd namespace's containers), in every hierarchy,
    relative to it; one entry per directory and hierarchy."""
    found = []
    for top in [CGROUP_ROOT / name] + [d / name for d in CGROUP_ROOT.iterdir() if d.is_dir()]:
        if top.is_dir():
            found += [str(Path(dirpath).relative_to(top)) for dirpath, _dirs, _files in os.walk(top)
                      if Path(dirpath) != top]
    return found


def cgroup_dirs(namespace: str, cid: str) -> list[Path]:
    """The cgroup directories ``/<namespace>/<cid>`` (where ctr puts a container) that exist, in every hierarchy."""
    tops = [CGROUP_ROOT] + [d for d in CGROUP_ROOT.iterdir() if d.is_dir() and not d.is_symlink()]
    return [top / namespace / cid for top in tops if (top / namespace / cid).is_dir()]


def fd_profile(pid: int) -> collections.Counter:
    """What ``pid`` holds open, by kind: a path, or ``socket``/``pipe``/``anon_inode:...`` without inode numbers."""
    kinds: collections.Counter = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kinds[re.sub(r":\[\d+\]$", "", target)] += 1
    return kinds


def fds_grown(before: collections.Counter, after: collections.Counter) -> dict[str, tuple[int, int]]:
    """Kinds of descriptors ``after`` holds more of than ``before`` ({kind: (before, after)}): a connection that
    closed and reopened is the same count, a descriptor left open is one more."""
    return {k: (before[k], n) for k, n in after.items() if n > before[k]}


def remove_cgroups(name: str) -> list[str]:
    """rmdir the cgroup directory ``name`` (e.g. a containerd namespace) and everything below it, in every
    mounted hierarchy (v1 controllers, the hybrid ``unified`` tree, or a pure v2 root); returns failures."""
    tops = [CGROUP_ROOT / name] + [d / name for d in CGROUP_ROOT.iterdir() if d.is_dir()]
    errors = []
    for top in tops:
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
            try:
                os.rmdir(dirpath)
            except OSError as exc:
                errors.append(f"rmdir {dirpath}: {exc.strerror}")
    return errors
