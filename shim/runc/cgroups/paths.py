"""Where a container's cgroup is: the host's cgroup mounts and mode, and the cgroup of one process.

Rules:
- Pure: the parsers take file contents and return frozen data; the two `*_of` helpers do the reading.
- Mode, decided like containerd's cgroups.Mode(): the mount on /sys/fs/cgroup is cgroup2 -> unified (v2);
  otherwise v1 (legacy, or hybrid with cgroup2 at /sys/fs/cgroup/unified). Hybrid hosts are read as v1,
  as the runc shim does: their controllers live in the v1 hierarchies.
- Mounts come from /proc/self/mountinfo; when a point is mounted twice the last mount wins. A process's
  path from /proc/<pid>/cgroup is taken relative to the root of the mount (nested cgroup namespaces),
  like upstream's getCgroupDestination.
- v1: a controller appears only if /proc/<pid>/cgroup names it, a hierarchy mounts it and the directory
  exists (upstream's Load drops the others); `name=systemd` style hierarchies are kept under that name.
- The host's mount table does not change under a running shim: `host_mounts()` reads it once per process.
"""
from __future__ import annotations

import functools
import os
import posixpath
from dataclasses import dataclass, field
from typing import Mapping

from shim.linux import mountinfo

CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class Mount:
    point: str
    root: str
    fstype: str  # "cgroup" or "cgroup2"
    controllers: frozenset[str]  # v1: the super options (cpu, cpuacct, name=systemd, ...); v2: empty


@dataclass(frozen=True)
class Mounts:
    version: int  # 1 or 2
    v1: Mapping[str, Mount] = field(default_factory=dict, hash=False)  # controller -> hierarchy
    unified: Mount | None = None  # the cgroup2 mount (on v1 hosts: /sys/fs/cgroup/unified if any)


@dataclass(frozen=True)
class CgroupPaths:
    """Absolute directories of one cgroup: per v1 controller, or the v2 group."""
    version: int
    v1: Mapping[str, str] = field(default_factory=dict, hash=False)
    unified: str = ""

    def dir(self, controller: str) -> str | None:
        return self.v1.get(controller)


def parse_mountinfo(text: str, cgroup_root: str = CGROUP_ROOT) -> Mounts:
    """The cgroup hierarchies of a mountinfo text and the host's cgroup mode."""
    by_point: dict[str, Mount] = {}
    for m in mountinfo.parse(text.encode(errors="surrogateescape")):
        ctrls = m.super_option_set() - {"rw", "ro"} if m.fstype == "cgroup" else frozenset()
        by_point.pop(m.point, None)  # re-insert: the last mount on a point wins and keeps its order
        by_point[m.point] = Mount(m.point, m.root, m.fstype, ctrls)
    top = by_point.get(cgroup_root)
    if top is not None and top.fstype == "cgroup2":
        return Mounts(2, {}, top)
    v1: dict[str, Mount] = {}
    unified = None
    for m in by_point.values():
        if m.fstype not in ("cgroup", "cgroup2"):
            continue  # other filesystems only matter for hiding what they are mounted over
        if m.fstype == "cgroup2":
            if m.point == posixpath.join(cgroup_root, "unified") or unified is None:
                unified = m
            continue
        for c in m.controllers:
            v1[c] = m
    return Mounts(1, v1, unified)


def parse_proc_cgroup(text: str) -> tuple[dict[str, str], str | None]:
    """(v1 controller -> path, unified path or None) of a /proc/<pid>/cgroup text."""
    legacy: dict[str, str] = {}
    unified = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            unified = parts[2]
            continue
        for c in parts[1].split(","):
            if c:
                legacy[c] = parts[2]
    return legacy, unified


def _under(mount: Mount, path: str) -> str:
    """The directory of cgroup `path` (as /proc/<pid>/cgroup shows it) inside `mount`."""
    root = mount.root.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return posixpath.normpath(posixpath.join(mount.point, path.lstrip("/")))


def resolve(mounts: Mounts, proc_cgroup: str, *, exists=os.path.isdir) -> CgroupPaths | None:
    """The cgroup directories of a process given its /proc/<pid>/cgroup text; None if it has none."""
    legacy, unified = parse_proc_cgroup(proc_cgroup)
    if mounts.version == 2:
        if unified is None or mounts.unified is None:
            return None
        d = _under(mounts.unified, unified)
        return CgroupPaths(2, {}, d) if exists(d) else None
    dirs = {}
    for controller, path in legacy.items():
        mount = mounts.v1.get(controller)
        if mount is None:
            continue
        d = _under(mount, path)
        if exists(d):
            dirs[controller] = d
    if not dirs:
        return None
    u = _under(mounts.unified, unified) if unified is not None and mounts.unified is not None else ""
    return CgroupPaths(1, dirs, u)


@functools.cache
def host_mounts() -> Mounts:
    with open("/proc/self/mountinfo", "rb") as f:
        return parse_mountinfo(f.read().decode(errors="surrogateescape"))


def paths_of(pid: int, mounts: Mounts | None = None) -> CgroupPaths | None:
    """The cgroup of a live process; None if it is gone or in no cgroup we can read."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return resolve(mounts or host_mounts(), text)
