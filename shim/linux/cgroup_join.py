"""Moving a forked daemon into the cgroups of the ``start`` that asked for it (v1, v2 and hybrid hosts).

Rules:
- Input is /proc/<pid>/cgroup text (``id:controllers:path`` lines; ``0::path`` is the unified hierarchy).
  Only hierarchies whose line differs from the process's current one are written, so the usual case (the
  fork server already sits where containerd does) costs nothing.
- A hierarchy is found in /proc/self/mountinfo: the cgroup2 mount for ``0::``; for v1 the ``cgroup`` mount
  whose super options name every controller of the line (``name=systemd`` included). A mount whose root is
  not ``/`` (inside a cgroup namespace or a bind mount) maps the path below its root.
- A hierarchy that cannot be found or written raises OSError: the caller then refuses to fork and ``start``
  spawns a fresh daemon, which inherits the right cgroups by itself. Correctness beats the fast path.
"""

from __future__ import annotations

import os

from shim.linux.unmount import unescape


def parse(text: str) -> dict[str, tuple[str, str]]:
    """{hierarchy id: (controllers, path)} of /proc/<pid>/cgroup text."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


def mounts() -> list[tuple[str, str, str, frozenset[str]]]:
    """(mount point, root, fstype, super options) of every cgroup and cgroup2 mount."""
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f.read().splitlines():
            left, _, right = line.partition(b" - ")
            fields, tail = left.split(b" "), right.split(b" ")
            if len(fields) < 5 or len(tail) < 3 or tail[0] not in (b"cgroup", b"cgroup2"):
                continue
            found.append((unescape(fields[4]), unescape(fields[3]), tail[0].decode(),
                          frozenset(tail[2].decode().split(","))))
    return found


def hierarchy_dir(controllers: str, path: str, table: list[tuple[str, str, str, frozenset[str]]]) -> str:
    """The directory of cgroup ``path`` in the hierarchy of ``controllers`` ("" for the unified one)."""
    wanted = frozenset(c for c in controllers.split(",") if c)
    for mount_point, root, fstype, options in table:
        if (fstype == "cgroup2") if not wanted else (fstype == "cgroup" and wanted <= options):
            if root != "/":
                if path != root and not path.startswith(root.rstrip("/") + "/"):
                    continue
                path = path[len(root):] or "/"
            return os.path.join(mount_point, path.lstrip("/"))
    raise OSError(f"cgroup hierarchy {controllers or 'unified'} holding {path} is not mounted here")


def join(wanted: str, current: str, pid: int) -> list[str]:
    """Write ``pid`` into every hierarchy where ``wanted`` differs from ``current``; the directories written."""
    want, have = parse(wanted), parse(current)
    changed = [(c, p) for hid, (c, p) in want.items() if have.get(hid) != (c, p)]
    if not changed:
        return []
    table = mounts()
    written = []
    for controllers, path in changed:
        directory = hierarchy_dir(controllers, path, table)
        fd = os.open(os.path.join(directory, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)
        written.append(directory)
    return written
