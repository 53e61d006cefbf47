"""Moving a process into cgroups: a daemon into ``shim_cgroup`` (``start``), or a forked daemon into the cgroups
of the ``start`` that asked the fork server for it (v1, v2 and hybrid hosts).

Rules:
- ``join_path(pid, cgroup)``: the unified hierarchy if /sys/fs/cgroup is cgroup2, else every v1 hierarchy where
  that cgroup exists (like containerd's cgroups.Load with a static path at v1.6.20); no hierarchy has it:
  CgroupJoinError.
- ``join_like(wanted, current, pid)``: input is /proc/<pid>/cgroup text (``id:controllers:path`` lines;
  ``0::path`` is the unified hierarchy). Only hierarchies whose line differs from ``current`` are written, so the
  usual case (the fork server already sits where containerd does) costs nothing. A hierarchy is found in
  mountinfo: the cgroup2 mount for ``0::``; for v1 the ``cgroup`` mount whose super options name every controller
  of the line (``name=systemd`` included). A mount whose root is not ``/`` (inside a cgroup namespace or a bind
  mount) maps the path below its root. A hierarchy that cannot be found or written raises OSError: the fork
  server then refuses to fork and ``start`` spawns a fresh daemon, which inherits the right cgroups by itself.
- Standard library only (``start`` runs this).
"""

from __future__ import annotations

import os

from shim.linux.mountinfo import MountInfo, cgroup_mounts

__all__ = ["CgroupJoinError", "hierarchy_dir", "join_like", "join_path", "parse_proc_cgroup"]

UNIFIED_ROOT = "/sys/fs/cgroup"


class CgroupJoinError(OSError):
    """No hierarchy holds the cgroup to join."""


def _write_pid(directory: str, pid: int) -> None:
    fd = os.open(os.path.join(directory, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)


def join_path(pid: int, cgroup: str, mounts: list[MountInfo] | None = None) -> list[str]:
    """Move ``pid`` into the cgroup at path ``cgroup``; the directories written."""
    relative = cgroup.strip("/")
    table = cgroup_mounts(mounts)
    if any(m.point == UNIFIED_ROOT and m.fstype == "cgroup2" for m in table):
        targets = [UNIFIED_ROOT]
    else:
        targets = [m.point for m in table if m.fstype == "cgroup"]
    written = []
    for mount_point in targets:
        directory = os.path.join(mount_point, relative)
        if os.path.exists(os.path.join(directory, "cgroup.procs")):
            _write_pid(directory, pid)
            written.append(directory)
    if not written:
        raise CgroupJoinError(f"failed to load cgroup {cgroup}: no such cgroup")
    return written


def parse_proc_cgroup(text: str) -> dict[str, tuple[str, str]]:
    """{hierarchy id: (controllers, path)} of /proc/<pid>/cgroup text."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


def hierarchy_dir(controllers: str, path: str, table: list[MountInfo]) -> str:
    """The directory of cgroup ``path`` in the hierarchy of ``controllers`` ("" for the unified one)."""
    wanted = frozenset(c for c in controllers.split(",") if c)
    for m in table:
        if (m.fstype == "cgroup2") if not wanted else (m.fstype == "cgroup" and wanted <= m.super_option_set()):
            if m.root != "/":
                if path != m.root and not path.startswith(m.root.rstrip("/") + "/"):
                    continue
                path = path[len(m.root):] or "/"
            return os.path.join(m.point, path.lstrip("/"))
    raise OSError(f"cgroup hierarchy {controllers or 'unified'} holding {path} is not mounted here")


def join_like(wanted: str, current: str, pid: int, mounts: list[MountInfo] | None = None) -> list[str]:
    """Write ``pid`` into every hierarchy where ``wanted`` differs from ``current``; the directories written."""
    want, have = parse_proc_cgroup(wanted), parse_proc_cgroup(current)
    changed = [(c, p) for hid, (c, p) in want.items() if have.get(hid) != (c, p)]
    if not changed:
        return []
    table = cgroup_mounts(mounts)
    written = []
    for controllers, path in changed:
        directory = hierarchy_dir(controllers, path, table)
        _write_pid(directory, pid)
        written.append(directory)
    return written
