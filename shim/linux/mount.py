"""Mount container root filesystems with mount(2) through ctypes.

Public API: ``Mount`` (a containerd.types.Mount as a frozen dataclass), ``mount_all(mounts, target)``,
``parse_options(options)``, and from unmount.py ``unmount_all(target)``, ``mounts_under``, ``MountError``.

Rules (behaviour learned from containerd ``mount/mount_linux.go`` at v1.6.20 and v2.1.9):
- Options are fstab words. FLAG_WORDS become mount flags (a later word overrides an earlier one: ``ro`` then
  ``rw`` leaves read-write); PROPAGATION_WORDS (``shared``, ``rprivate``, ...) are applied by a second
  mount(2) call after the mount, since the kernel refuses them mixed with other flags (upstream 1.6-2.1 has no
  words for them and passes them to the filesystem as data); every other word is filesystem data, joined with
  ``,``. ``bind`` plus ``ro`` needs a read-only remount afterwards (the kernel ignores MS_RDONLY on a new bind).
  ``remount`` without data skips the first call and only changes propagation / read-only state.
- Unsupported with a clear EOPNOTSUPP ``MountError``, never silently ignored: ``loop``, ``uidmap=``/``gidmap=``
  (id-mapped mounts) and ``fuse.``/``fuse3.`` types (which need a helper binary). Data longer than a page is
  EINVAL, as upstream.
- Overlay options near a page long: the lowerdirs are rewritten relative to their common parent directory and
  mount(2) runs with that directory as cwd (the kernel resolves relative lowerdirs against the caller's cwd).
  No child process is forked, because in the daemon only the reaper may wait for children; instead the
  process cwd changes for the duration of the call and is restored from a saved directory fd. The call holds
  no lock: a caller must not resolve relative paths in other threads meanwhile (the daemon uses absolute paths).
- ``mount_all`` mounts in order at ``target`` (or at ``Mount.target`` resolved inside ``target`` without
  escaping it, like upstream's fs.RootPath). If any mount fails, the mounts it made are unmounted again, in
  reverse order, before the error propagates. A single mount that failed halfway (e.g. the read-only remount
  of a bind) is undone too.
- ``unmount_all`` (unmount.py) removes every mount at or under ``target``; see its rules.
- Standard library only; ctypes loads on first use. The daemon's Create uses this module.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from collections.abc import Sequence

from shim.linux.libc import errno_now, libc
from shim.linux.unmount import MountError, mount_error, mounts_under, unmount_all, unmount_point

__all__ = ["Mount", "MountError", "MountOptions", "mount_all", "mount_one", "mounts_under", "parse_options",
           "unmount_all"]

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

# word -> (clears the flag?, flag)
FLAG_WORDS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS), "atime": (True, MS_NOATIME), "bind": (False, MS_BIND),
    "defaults": (False, 0), "dev": (True, MS_NODEV), "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC), "exec": (True, MS_NOEXEC), "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME), "nodev": (False, MS_NODEV), "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC), "nomand": (True, MS_MANDLOCK), "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME), "nosuid": (False, MS_NOSUID), "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME), "remount": (False, MS_REMOUNT), "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY), "strictatime": (False, MS_STRICTATIME), "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
PROPAGATION_WORDS: dict[str, int] = {
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}


@dataclass(frozen=True)
class Mount:
    """A containerd.types.Mount: what Create asks to mount (``target`` relative to the rootfs, "" = the rootfs)."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.options, tuple):
            object.__setattr__(self, "options", tuple(self.options))


@dataclass(frozen=True)
class MountOptions:
    flags: int
    propagation: int
    data: str
    loop: bool


def parse_options(options: Sequence[str]) -> MountOptions:
    """Split fstab-style words into mount flags, propagation flags, the data string and the loop request."""
    flags = propagation = 0
    data: list[str] = []
    loop = False
    for word in options:
        if word in FLAG_WORDS:
            clear, bit = FLAG_WORDS[word]
            flags = flags & ~bit if clear else flags | bit
        elif word in PROPAGATION_WORDS:
            propagation = PROPAGATION_WORDS[word]
        elif word == "loop":
            loop = True
        else:
            data.append(word)
    return MountOptions(flags, propagation, ",".join(data), loop)


# -- mounting ------------------------------------------------------------------------------------------

def _b(value: str) -> bytes | None:  # "" is passed as NULL
    return os.fsencode(value) if value else None


def _sys_mount(source: str, target: str, fstype: str, flags: int, data: str) -> int:
    """mount(2); returns 0 or the errno."""
    if libc().mount(_b(source), os.fsencode(target), _b(fstype), flags, _b(data)) != 0:
        return errno_now()
    return 0


def _unsupported(m: Mount) -> str | None:
    if m.type.startswith(("fuse.", "fuse3.")):
        return f"mount type {m.type!r} needs a FUSE helper, which pyshim does not run"
    for word in m.options:
        if word == "loop":
            return "loop mounts (option 'loop') are not supported"
        if word.startswith(("uidmap=", "gidmap=")):
            return "id-mapped mounts (uidmap=/gidmap= options) are not supported"
    return None


def compact_lowerdirs(options: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """Rewrite ``lowerdir=`` relative to the lowerdirs' common parent; return (that dir or "", options)."""
    index = next((i for i, o in enumerate(options) if o.startswith("lowerdir=")), -1)
    if index < 0:
        return "", tuple(options)
    dirs = options[index][len("lowerdir="):].split(":")
    prefix = os.path.commonprefix(dirs)
    if len(dirs) < 2 or not prefix.startswith("/"):
        return "", tuple(options)
    # The character-wise prefix may end inside a name (snapshots/1 of snapshots/12 and snapshots/13).
    common = os.path.normpath(os.path.dirname(prefix))
    if common == "/":
        return "", tuple(options)
    cut = len(common) + 1
    relative = "lowerdir=" + ":".join(d[cut:] for d in dirs)
    rest = tuple(o for i, o in enumerate(options) if i != index)
    return common, rest + (relative,)


def _mount_in(chdir: str, source: str, target: str, fstype: str, flags: int, data: str) -> int:
    if not chdir:
        return _sys_mount(source, target, fstype, flags, data)
    saved = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(chdir)
        try:
            return _sys_mount(source, target, fstype, flags, data)
        finally:
            os.fchdir(saved)
    finally:
        os.close(saved)


def mount_one(m: Mount, target: str) -> None:
    """Mount ``m`` exactly at ``target`` (``m.target`` is ignored here); undo a half-done mount on error."""
    target = os.path.abspath(target)
    what = f"mount {m.type or '(none)'} {m.source!r} on {target!r} with {list(m.options)}"
    reason = _unsupported(m)
    if reason:
        raise MountError(errno.EOPNOTSUPP, f"{what}: {reason}")
    chdir, options = "", m.options
    page = os.sysconf("SC_PAGESIZE")
    if m.type == "overlay" and sum(len(o) for o in options) >= page - 512:
        chdir, options = compact_lowerdirs(options)
    opts = parse_options(options)
    if len(opts.data) > page:
        raise MountError(errno.EINVAL, f"{what}: mount data is longer than a page ({len(opts.data)} bytes)")
    mounted = False
    if not opts.flags & MS_REMOUNT or opts.data:
        err = _mount_in(chdir, m.source, target, m.type, opts.flags, opts.data)
        if err:
            raise mount_error(err, what)
        mounted = True
    try:
        if opts.propagation:
            err = _sys_mount("", target, "", opts.propagation, "")
            if err:
                raise mount_error(err, f"{what}: set propagation")
        if opts.flags & (MS_BIND | MS_RDONLY) == MS_BIND | MS_RDONLY:
            err = _sys_mount("", target, "", opts.flags | MS_REMOUNT, "")
            if err:
                raise mount_error(err, f"{what}: read-only remount")
    except BaseException:
        if mounted:
            try:
                unmount_point(target)
            except OSError:
                pass  # report the mount error, not the cleanup's
        raise


def root_path(root: str, unsafe: str) -> str:
    """Join ``unsafe`` under ``root`` following symlinks as if ``root`` were ``/`` (never escapes root)."""
    root = os.path.abspath(root)
    pending = [p for p in unsafe.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > 255:
            raise MountError(errno.ELOOP, f"too many symlinks resolving {unsafe!r} in {root!r}")
        dest = os.readlink(candidate)
        if dest.startswith("/"):
            resolved = []
        pending[:0] = [p for p in dest.split("/") if p not in ("", ".")]
    return os.path.join(root, *resolved)


def mount_all(mounts: Sequence[Mount], target: str) -> None:
    """Mount each of ``mounts`` in order at ``target`` (or ``Mount.target`` inside it); all or nothing."""
    done: list[str] = []
    try:
        for m in mounts:
            point = root_path(target, m.target) if m.target else os.path.abspath(target)
            mount_one(m, point)
            done.append(point)
    except BaseException:
        for point in reversed(done):
            try:
                unmount_point(point)
            except OSError:
                pass  # the original error matters more; unmount_all at delete retries
        raise
