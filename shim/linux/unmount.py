"""Unmount everything at or under a directory, with umount2(2) through ctypes.

Split from mount.py so that ``delete`` (critical path) loads neither dataclasses nor the mounting code: a shim's
cleanup imports this module (public), not mount.py, which re-exports ``unmount_all``, ``mounts_under`` and
``MountError`` for the daemon side.

Rules (containerd ``mount/mount_linux.go`` ``UnmountRecursive``/``UnmountAll`` at v1.6.20):
- ``unmount_all(target)`` removes every mount at or under ``target``, deepest path first, pass after pass
  until /proc/self/mountinfo lists none (stacked mounts, and mounts hidden below a later mount, surface one
  pass at a time). A pass that removes nothing ends with MountError (EBUSY) naming what is left.
- One unmount: umount2(path, 0); EBUSY is retried briefly (5 x 20 ms; upstream waits up to 2.5 s, too long for
  containerd's 5 s cleanup budget), then the mount is detached lazily (MNT_DETACH), which succeeds for any
  mount point. EINVAL/ENOENT mean "not (or no longer) a mount point" and are not errors.
- Missing target, or nothing mounted: no-op, so the call is idempotent. ``/`` is refused.
- Standard library only; ctypes (and libc) load on first use.
"""

from __future__ import annotations

import errno
import os
import time

from shim.linux import mountinfo
from shim.linux.libc import errno_now, libc

__all__ = ["MountError", "mounts_under", "unmount_all", "unmount_point"]

MNT_DETACH = 0x2
_EBUSY_RETRIES = 5
_EBUSY_DELAY = 0.02
_MAX_PASSES = 64


class MountError(OSError):
    """mount(2)/umount2(2) failed, or the request is not supported; ``errno`` is set."""


def mount_error(err: int, what: str) -> MountError:
    return MountError(err, f"{what}: {os.strerror(err)}")


def _sys_umount(target: str, flags: int) -> int:
    """umount2(2); returns 0 or the errno."""
    if libc().umount2(os.fsencode(target), flags) != 0:
        return errno_now()
    return 0


def mounts_under(target: str) -> list[str]:
    """Mount points equal to ``target`` or below it (``target`` must be canonical)."""
    prefix = target.rstrip("/") + "/"
    return [m.point for m in mountinfo.read() if m.point == target or m.point.startswith(prefix)]


def unmount_point(point: str) -> bool:
    """Unmount the top mount at ``point``: retry EBUSY, then detach lazily. Return False if not mounted."""
    for attempt in range(_EBUSY_RETRIES + 1):
        err = _sys_umount(point, 0)
        if err != errno.EBUSY:
            break
        if attempt < _EBUSY_RETRIES:
            time.sleep(_EBUSY_DELAY)
    else:
        err = _sys_umount(point, MNT_DETACH)
    if err in (errno.EINVAL, errno.ENOENT):
        return False
    if err:
        raise mount_error(err, f"unmount {point!r}")
    return True


def unmount_all(target: str) -> None:
    """Unmount everything at or under ``target``, deepest first, until nothing is left. Idempotent."""
    if not target:
        return
    try:
        canonical = os.path.realpath(target, strict=True)
    except FileNotFoundError:
        return
    if canonical == "/":
        raise ValueError("refusing to unmount everything under /")
    for _ in range(_MAX_PASSES):
        points = mounts_under(canonical)
        if not points:
            return
        progress = False
        for point in sorted(set(points), key=len, reverse=True):
            progress = unmount_point(point) or progress
        if not progress:
            break
    raise MountError(errno.EBUSY, f"cannot unmount {sorted(set(points))} under {canonical!r}")
