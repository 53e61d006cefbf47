"""The fork server: a long-lived, pre-imported parent that keeps zygotes ready to become shim daemons.

Run as ``python -P -m shim.forkserver DIR MODULE:MANAGER [padding]`` (client.revive does that). Rules:
- One server per installed copy of the code and directory (protocol.py ``Location``). It holds an exclusive
  flock on ``fs-<key>.lock`` for its whole life; a second server that cannot take it exits at once. Under the
  lock it (re)binds ``fs-<key>.sock`` (SOCK_SEQPACKET, 0600, in a 0700 directory), writes ``fs-<key>.pid``
  and removes the ``revive`` stamp (it came up). The directory (and a parent it has to make) is made 0700, or
  tightened to 0700; one that another uid owns is refused (the server exits): its owner could swap the socket.
- Before serving it imports every module of shim/ttrpc/runtime/protos and what a daemon imports lazily
  (preload.py) with the collector off, runs a trial trio run building a daemon's parts (a finished
  run leaves no loop and no thread), then ``gc.freeze()``: daemons share those pages and their collector
  skips them (no collection before the freeze, and the trial run: both leave less to copy per daemon;
  bench/README.md has the figures).
- It never accepts a request itself: POOL zygotes (zygote.py) wait on its listening socket, and
  one of them checks a request and becomes the daemon. The server only keeps the pool full: a zygote's
  channel reaching EOF means it was taken (or died), and another is forked at once. Single-threaded, no
  trio run, nothing but poll in the loop, so forking is safe.
- Code changes restart it (preload.Watch): zygotes check our packages' files and the sys.path
  directories per request and report a change; the server checks every loaded module file and the
  interpreter on a CHECK_INTERVAL timer. A restart unlinks the socket, drops the lock, closes the channels
  (idle zygotes exit) and re-executes the server. It exits when its socket file is removed or replaced, when
  no zygote was taken for IDLE_EXIT seconds (e.g. an old install nobody runs), and on SIGTERM/SIGINT/SIGHUP,
  unlinking only what is still its own. Daemons are never affected by any of this.
- Diagnostics go to ``fs-<key>.log`` (truncated at start when over LOG_LIMIT), written with os.write only: the
  server holds no Python file objects, so nothing it owns can close a daemon's descriptor after a fork.
"""

from __future__ import annotations

import fcntl
import gc
import importlib
import os
import select
import signal
import socket
import stat
import sys
import threading
import time

from shim.forkserver import child
from shim.forkserver import preload
from shim.forkserver import protocol as proto
from shim.forkserver import zygote

CHECK_INTERVAL = 2.0
# An unused server goes (a copy of the code nobody runs any more); the next start revives it. The server's own
# environment may shorten it (tests).
IDLE_EXIT = float(os.environ.get("PYSHIM_FORKSERVER_IDLE", "3600"))
POOL = 2
BACKLOG = 4096
LOG_LIMIT = 1 << 20
SERVER_NAME = "pyshim-forkserver"  # command lines: "<name> <dir>", for ps and tests
ZYGOTE_NAME = "pyshim-forkserver-zygote"


class Stop(Exception):
    """SIGTERM/SIGINT/SIGHUP, or the socket file is gone: leave the loop and clean up."""


def _stop(signum: int, frame: object) -> None:
    raise Stop(signum)


class Server:
    def __init__(self, location: proto.Location, log_fd: int) -> None:
        self.location = location
        self.log_fd = log_fd
        self.pid = os.getpid()
        self.lock_fd = -1
        self.listener: socket.socket | None = None
        self.inode = 0
        self.gate: zygote.Gate | None = None
        self.zygotes: dict[int, socket.socket] = {}  # our end of each zygote's channel, by fd
        self.taken = 0
        self.last_taken = time.monotonic()

    def log(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} forkserver[{self.pid}] {message}\n"
        try:
            os.write(self.log_fd, line.encode(errors="replace"))
        except OSError:
            pass

    # -- life ---------------------------------------------------------------------------------------
    def lock(self) -> bool:
        self.lock_fd = os.open(self.location.path("lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.lock_fd)
            self.lock_fd = -1
            return False
        return True

    def bind(self) -> None:
        path = self.location.path("sock")
        try:
            os.unlink(path)  # we hold the lock: whatever is there is a dead server's
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(BACKLOG)
        listener.setblocking(False)
        self.listener, self.inode = listener, os.stat(path).st_ino
        tmp = self.location.path("pid.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.write(fd, str(self.pid).encode())
        os.close(fd)
        os.replace(tmp, self.location.path("pid"))
        try:
            os.unlink(self.location.path("revive"))  # the revive that started us succeeded
        except FileNotFoundError:
            pass

    def release(self) -> None:
        """Unlink what is still ours, close the listener and the channels, drop the lock."""
        if os.getpid() != self.pid:
            return
        if self.listener is not None:
            if self._socket_is_ours():
                for suffix in ("sock", "pid"):
                    try:
                        os.unlink(self.location.path(suffix))
                    except FileNotFoundError:
                        pass
            self.listener.close()
            self.listener = None
        for channel in self.zygotes.values():
            channel.close()  # an idle zygote sees EOF and exits
        self.zygotes.clear()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def _socket_is_ours(self) -> bool:
        try:
            st = os.stat(self.location.path("sock"))
        except FileNotFoundError:
            return False
        return stat.S_ISSOCK(st.st_mode) and st.st_ino == self.inode

    def restart(self, why: str) -> None:
        self.log(f"restarting: {why}")
        self.release()
        os.execv(sys.executable, sys.orig_argv)

    # -- the pool -----------------------------------------------------------------------------------
    def spawn_zygote(self) -> None:
        """Fork (twice) the next daemon-to-be; keep our end of its channel."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        middle = os.fork()
        if middle == 0:
            try:
                if os.fork() == 0:
                    listen_fd = self.listener.detach()  # a daemon must never close what is not its own
                    ours.detach()
                    for channel in self.zygotes.values():
                        channel.detach()
                    zygote.run(listen_fd, theirs.detach(), self.gate, [ZYGOTE_NAME, self.location.directory])
            finally:
                os._exit(0)
        theirs.close()
        os.waitpid(middle, 0)
        self.zygotes[ours.fileno()] = ours

    def serve(self) -> None:
        last_check = time.monotonic()
        while True:
            while len(self.zygotes) < POOL:
                self.spawn_zygote()
            poller = select.poll()
            for fd in self.zygotes:
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(CHECK_INTERVAL * 1000):
                channel = self.zygotes.pop(fd)
                try:
                    word = channel.recv(512)
                except OSError:
                    word = b""
                channel.close()
                if word == zygote.RESTART:
                    self.restart(zygote.CODE_CHANGED)
                if word.startswith(zygote.TAKEN):
                    self.taken += 1
                    self.last_taken = time.monotonic()
                    self.log(f"daemon {word[len(zygote.TAKEN):].decode(errors='replace').strip()}")
                else:
                    self.log("a zygote exited unused")
            if time.monotonic() - last_check >= CHECK_INTERVAL:
                last_check = time.monotonic()
                self.housekeeping()

    def housekeeping(self) -> None:
        if not self._socket_is_ours():
            self.log("socket file removed or replaced: exiting")
            raise Stop(0)
        if time.monotonic() - self.last_taken > IDLE_EXIT:
            self.log(f"no daemon asked for in {IDLE_EXIT:.0f} s: exiting")
            raise Stop(0)
        if self.gate.watch.changed(full=True):
            self.restart(zygote.CODE_CHANGED)
        gc.collect()


def open_log(location: proto.Location) -> int:
    path = location.path("log")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        if os.stat(path).st_size > LOG_LIMIT:
            flags |= os.O_TRUNC
    except FileNotFoundError:
        pass
    return os.open(path, flags, 0o600)


def private_directory(path: str) -> str:
    """Make ``path`` (and a missing parent) 0700, or tighten it to 0700 if it is ours; "" or why not."""
    os.makedirs(os.path.dirname(path.rstrip("/")) or "/", mode=0o700, exist_ok=True)
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory of uid {os.geteuid()}: someone else could replace the socket"
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return ""


def load_manager(ref: str):
    """The Manager named by "module:attribute" (shim/manager.py)."""
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or ":" not in argv[1]:
        print("usage: python -P -m shim.forkserver DIR MODULE:MANAGER [padding]", file=sys.stderr)
        return 2
    location = proto.Location(argv[0], proto.key(manager=argv[1]), argv[1])
    why = private_directory(location.directory)
    if why:
        print(f"pyshim fork server: {why}", file=sys.stderr)
        return 1
    gc.disable()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _stop)
    server = Server(location, open_log(location))
    if not server.lock():
        return 0  # another server is running or starting
    try:
        started = time.monotonic()
        manager = load_manager(location.manager)
        packages = preload.packages(manager)
        failed = preload.preload(manager, packages)
        area = child.ArgvArea.of_self()
        server.gate = zygote.Gate(manager, preload.Watch(preload.roots(packages)), area)
        area.write([SERVER_NAME, location.directory])
        server.bind()
        zygote.warm(manager)  # lazily made objects of a first trio run and build are then made once, and shared
        if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
            raise RuntimeError("the warm-up left threads behind; a process with threads must not fork")
        gc.freeze()  # no collect first: the holes it leaves would be filled, and so copied, by every daemon
        server.log(f"serving on {location.path('sock')} after {time.monotonic() - started:.3f} s preload, "
                   f"{len(sys.modules)} modules" + (f"; failed to preload {failed}" if failed else ""))
        server.serve()
    except Stop:
        server.log("stopping")
    finally:
        server.release()
    return 0


