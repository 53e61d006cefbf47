"""Kernel OOM notification sources of one cgroup: a v1 eventfd or a v2 inotify watch, plus the counters.

Rules:
- Synchronous, non-blocking and trio-free; shim/runc/cgroups/oom.py waits on `fd` and calls the rest.
- v1: an eventfd registered for memory.oom_control through cgroup.event_control (the memory.oom_control
  fd is only needed while registering, as upstream). The kernel signals it on every OOM episode of the
  cgroup, and when the cgroup is removed. Episodes = the eventfd counts summed; kills = `oom_kill` of
  memory.oom_control (kernel >= 4.13; older kernels: every episode counts as a kill, upstream's rule).
- v2: an inotify IN_MODIFY watch on memory.events. Episodes = its `oom`, kills = its `oom_kill`
  (upstream's rule: an OOM event is an `oom_kill` increase, not `oom`).
- `counters()` is None when the cgroup is gone. `fd` is owned here: `close` closes it, once.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

from shim.runc.cgroups import readfs

IN_MODIFY = 0x2
IN_IGNORED = 0x8000
_libc = ctypes.CDLL(None, use_errno=True)
_EVENT = struct.Struct("=iIII")  # struct inotify_event without its name


class Source:
    fd: int | None = None

    def consume(self) -> None:
        """Take what the fd says (never blocks)."""

    def counters(self) -> tuple[int, int] | None:
        """(episodes, kills) so far; None if the cgroup is gone."""
        raise NotImplementedError

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


class V1Source(Source):
    def __init__(self, memory_dir: str) -> None:
        self.dir = memory_dir
        self.episodes = 0
        self.has_kill_counter = True

    def open(self) -> None:
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            ofd = os.open(os.path.join(self.dir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
            try:
                ctl = os.open(os.path.join(self.dir, "cgroup.event_control"), os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(ctl, f"{efd} {ofd}".encode())
                finally:
                    os.close(ctl)
            finally:
                os.close(ofd)
        except BaseException:
            os.close(efd)
            raise
        self.fd = efd

    def consume(self) -> None:
        if self.fd is None:
            return
        try:
            self.episodes += struct.unpack("=Q", os.read(self.fd, 8))[0]
        except BlockingIOError:
            pass

    def counters(self) -> tuple[int, int] | None:
        data = readfs.read(os.path.join(self.dir, "memory.oom_control"))
        if data is None:
            return None
        values = readfs.kv(data)
        if "oom_kill" not in values:
            self.has_kill_counter = False
            return self.episodes, self.episodes
        return self.episodes, values["oom_kill"]


class V2Source(Source):
    def __init__(self, group_dir: str) -> None:
        self.path = os.path.join(group_dir, "memory.events")
        self.watch_gone = False

    def open(self) -> None:
        fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        if _libc.inotify_add_watch(fd, os.fsencode(self.path), IN_MODIFY) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch({self.path}): {os.strerror(err)}", self.path)
        self.fd = fd

    def consume(self) -> None:
        if self.fd is None:
            return
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            off = 0
            while off + _EVENT.size <= len(data):
                _wd, mask, _cookie, name_len = _EVENT.unpack_from(data, off)
                if mask & IN_IGNORED:
                    self.watch_gone = True  # the file (the cgroup) was removed
                off += _EVENT.size + name_len

    def counters(self) -> tuple[int, int] | None:
        data = readfs.read(self.path)
        if data is None:
            return None
        values = readfs.kv(data)
        return values.get("oom", 0), values.get("oom_kill", 0)
