"""The bundle's files, and the container's processes as the host sees them; standard library only (``delete``).

Rules:
- ``config.json``: this shim reads ``root.path`` (relative to the bundle, ``rootfs`` when absent) and
  ``process`` only. ``load_config`` and ``root_dir`` raise ValueError for a malformed file; a root that
  resolves to the host's ``/`` is refused, since every host process would then count as the container's.
- ``init.pid`` holds the init's pid in decimal, as runc writes it. The daemon writes it (atomically) when the
  init starts and removes it at Delete; ``cleanup`` reads it after a daemon died.
- The container's processes are the live ones whose root directory (``/proc/<pid>/root``, compared by device
  and inode) is the container's root and whose mount namespace is the init's. That covers the init once it
  chrooted, its descendants and every exec (nsenter takes the init's root and namespaces); it tells apart two
  containers run on one rootfs directory, and it cannot mistake a stranger that reused a pid for ours.
"""

from __future__ import annotations

import os

__all__ = ["PID_FILE", "container_pids", "load_config", "mount_namespace", "read_pid", "remove_pid", "root_dir",
           "signal_all", "write_pid"]

PID_FILE = "init.pid"


def load_config(bundle: str) -> dict:
    """``<bundle>/config.json`` as a dict; OSError if unreadable, ValueError if not a JSON object."""
    import json

    with open(os.path.join(bundle, "config.json"), "rb") as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise ValueError("config.json is not a JSON object")
    return config


def root_dir(bundle: str, config: dict) -> str:
    """The container's root directory: ``root.path`` resolved against the bundle, symlinks resolved."""
    root = config.get("root") or {}
    path = root.get("path", "rootfs") if isinstance(root, dict) else None
    if not isinstance(path, str) or not path:
        raise ValueError("config.json: root.path must be a non-empty string")
    resolved = os.path.realpath(os.path.join(bundle, path))
    if resolved == "/":
        raise ValueError("config.json: root.path must not be the host's root directory")
    return resolved


def write_pid(bundle: str, pid: int) -> None:
    path = os.path.join(bundle, PID_FILE)
    with open(path + ".tmp", "w") as f:
        f.write(f"{pid}")
    os.replace(path + ".tmp", path)


def read_pid(bundle: str) -> int:
    """The pid in ``init.pid``; 0 when the file is missing or does not hold a positive number."""
    try:
        with open(os.path.join(bundle, PID_FILE), "rb") as f:
            pid = int(f.read().strip() or b"0")
    except (OSError, ValueError):
        return 0
    return pid if pid > 0 else 0


def remove_pid(bundle: str) -> None:
    try:
        os.unlink(os.path.join(bundle, PID_FILE))
    except FileNotFoundError:
        pass


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:  # gone, a zombie (no root any more), or not ours to look at
        return None
    return st.st_dev, st.st_ino


def mount_namespace(pid: int | str) -> int | None:
    """The inode of a process's mount namespace; None once it is gone (a zombie has none either)."""
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def container_pids(root: str, mntns: int) -> list[int]:
    """Pids of the live processes rooted in ``root`` within mount namespace ``mntns`` (see the module rules)."""
    want = _identity(root)
    if want is None:
        return []
    if want == _identity("/"):
        raise ValueError(f"{root} is the host's root directory")
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _identity(f"/proc/{name}/root") == want and mount_namespace(name) == mntns:
            pids.append(int(name))
    return sorted(pids)


def signal_all(root: str, mntns: int, sig: int, skip: int = 0) -> list[int]:
    """Send ``sig`` to every process of the container but ``skip``; returns the pids signalled."""
    sent = []
    for pid in container_pids(root, mntns):
        if pid == skip:
            continue
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
        sent.append(pid)
    return sent
