"""Mount and unmount container root filesystems with mount(2)/umount2(2) through ctypes.

Public API: ``Mount`` (a containerd.types.Mount as a frozen dataclass), ``mount_all(mounts, target)``,
``unmount_all(target)``, ``parse_options(options)``, ``MountError``.

Rules (task-api.md §4.2, shim-v2.md §6, §9; behaviour learned from containerd ``mount/mount_linux.go``):
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
- ``unmount_all`` removes every mount at or under ``target``, deepest first, repeating until
  /proc/self/mountinfo lists none (stacked mounts). EBUSY is retried briefly, then the mount is detached
  lazily (MNT_DETACH), which always succeeds for a mount point. Missing target or nothing mounted: no-op, so
  it is idempotent. ``/`` is refused.
- Standard library only: ``delete`` (critical path) imports this module; ctypes loads on first use.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass, field
from collections.abc import Sequence

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
MNT_DETACH = 0x2

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
_EBUSY_RETRIES = 5
_EBUSY_DELAY = 0.02
_MAX_PASSES = 64


class MountError(OSError):
    """mount(2)/umount2(2) failed, or the request is not supported; ``errno`` is set."""


@dataclass(frozen=True)
class Mount:
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


# -- syscalls ------------------------------------------------------------------------------------------

_libc = None


def _syscalls():
    global _libc
    if _libc is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
        libc.mount.restype = ctypes.c_int
        libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
        libc.umount2.restype = ctypes.c_int
        _libc = (libc, ctypes.get_errno)
    return _libc


def _b(value: str) -> bytes | None:
    return os.fsencode(value) if value else None


def _sys_mount(source: str, target: str, fstype: str, flags: int, data: str) -> int:
    """mount(2); returns 0 or the errno."""
    libc, get_errno = _syscalls()
    if libc.mount(_b(source), os.fsencode(target), _b(fstype), flags, _b(data)) != 0:
        return get_errno()
    return 0


def _sys_umount(target: str, flags: int) -> int:
    libc, get_errno = _syscalls()
    if libc.umount2(os.fsencode(target), flags) != 0:
        return get_errno()
    return 0


# -- mounting ------------------------------------------------------------------------------------------

def _error(err: int, what: str) -> MountError:
    return MountError(err, f"{what}: {os.strerror(err)}")


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
            raise _error(err, what)
        mounted = True
    try:
        if opts.propagation:
            err = _sys_mount("", target, "", opts.propagation, "")
            if err:
                raise _error(err, f"{what}: set propagation")
        if opts.flags & (MS_BIND | MS_RDONLY) == MS_BIND | MS_RDONLY:
            err = _sys_mount("", target, "", opts.flags | MS_REMOUNT, "")
            if err:
                raise _error(err, f"{what}: read-only remount")
    except BaseException:
        if mounted:
            try:
                _unmount_point(target)
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
                _unmount_point(point)
            except OSError:
                pass  # the original error matters more; unmount_all at delete retries
        raise


# -- unmounting ----------------------------------------------------------------------------------------

def _unescape(raw: bytes) -> str:
    r"""Decode a mountinfo path field (octal escapes like \040 for space)."""
    if b"\\" not in raw:
        return os.fsdecode(raw)
    out = bytearray()
    i = 0
    while i < len(raw):
        code = raw[i + 1:i + 4]
        if raw[i] == 0x5C and len(code) == 3 and code.isdigit():
            out.append(int(code, 8) & 0xFF)
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def mount_points() -> list[str]:
    """Every mount point of this process's mount namespace, in mountinfo order."""
    with open("/proc/self/mountinfo", "rb") as f:
        lines = f.read().splitlines()
    return [_unescape(line.split(b" ", 5)[4]) for line in lines if line]


def mounts_under(target: str) -> list[str]:
    """Mount points equal to ``target`` or below it (``target`` must be canonical)."""
    prefix = target.rstrip("/") + "/"
    return [p for p in mount_points() if p == target or p.startswith(prefix)]


def _unmount_point(point: str) -> bool:
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
        raise _error(err, f"unmount {point!r}")
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
            progress = _unmount_point(point) or progress
        if not progress:
            break
    raise MountError(errno.EBUSY, f"cannot unmount {sorted(set(points))} under {canonical!r}")
