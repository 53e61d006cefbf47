"""The one owner of waitpid(2) in the shim daemon, and the Launcher built on it.

Rules:
- Only `Reaper.run` calls waitpid, always as waitpid(-1, WNOHANG) in a loop after SIGCHLD. The shim is a
  child subreaper, so container inits and execs (reparented to us when the runtime CLI exits) are reaped
  here too.
- Anyone who needs an exit status subscribes *before* the child can exit (before spawning it, or before
  running the runtime command that creates it). A subscription receives every exit reaped while it is
  open, in order; nothing is lost between spawn and wait.
- Exit statuses follow the runc shim: the exit code, or 128 + the signal number.
- `ReaperLauncher.run` is the only way the daemon runs a child program (runtime CLI, logger binary):
  posix_spawn (no Python code runs in the child), subscribe-then-spawn. The command leads a process group of its
  own, and if the caller is cancelled (a call's deadline, shim/runc/deadlines.py) the whole group gets TERM,
  up to 5 s for the command to exit, then KILL, and the command is reaped before the cancellation goes on: a
  hung runtime that forked helpers leaves none behind. The group is signalled only while the command itself is
  not reaped yet, i.e. while its pid is certainly still the group's id. Captured output goes to a memfd read
  after the exit, never to a pipe whose EOF could be held off by the command's own long-lived children (those
  that outlive a command that ended by itself are left alone: runsc's gofer). CPython's subprocess is never
  used: it would waitpid itself.
"""
from __future__ import annotations

import collections
import errno
import fcntl
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import trio


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """A finished command of ``ReaperLauncher.run`` (what runtime.base.Launcher promises its backends)."""

    pid: int
    status: int   # exit code, or 128+signal
    output: bytes  # combined stdout+stderr when captured, else b""


@dataclass(frozen=True)
class Exit:
    pid: int
    status: int
    timestamp: float  # time.time() when reaped


def exit_status(wait_status: int) -> int:
    """waitpid status -> exit status as containerd reports it (128+signal for a signal)."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return 255


class Subscription:
    """Exits reaped while this subscription is open, in order. Use as a context manager."""

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper
        self._exits: collections.deque[Exit] = collections.deque()
        self._by_pid: dict[int, Exit] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._pid_filter: int | None = None

    def _deliver(self, ex: Exit) -> None:
        if self._pid_filter is not None and ex.pid != self._pid_filter:
            return
        self._exits.append(ex)
        self._by_pid[ex.pid] = ex
        self._lot.unpark_all()

    def keep_only(self, pid: int) -> None:
        """From now on hold only `pid`'s exit (a long-lived child's subscription must not grow)."""
        self._pid_filter = pid
        self._exits = collections.deque(e for e in self._exits if e.pid == pid)
        self._by_pid = {k: v for k, v in self._by_pid.items() if k == pid}

    def reaped(self, pid: int) -> Exit | None:
        """The exit of `pid` if it was already reaped (the early-exit race), without waiting."""
        return self._by_pid.get(pid)

    async def wait(self, pid: int) -> Exit:
        """The exit of ``pid``, waiting for it if it has not been reaped yet."""
        while pid not in self._by_pid:
            await self._lot.park()
        return self._by_pid[pid]

    async def next(self) -> Exit:
        """The next exit reaped while this subscription is open, in reaping order."""
        while not self._exits:
            await self._lot.park()
        ex = self._exits.popleft()
        if self._by_pid.get(ex.pid) is ex:
            del self._by_pid[ex.pid]
        return ex

    def close(self) -> None:
        """Stop receiving exits (the context manager does it on exit)."""
        self._reaper._subs.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Reaper:
    """Collects every child exit of this process and hands it to the open subscriptions."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        """A new subscription: every exit reaped from now on reaches it. Take it before the child can exit."""
        sub = Subscription(self)
        self._subs.add(sub)
        return sub

    def reap(self) -> int:
        """Collect every exited child now; returns how many. Called by `run` after each SIGCHLD."""
        n = 0
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return n
            except InterruptedError:
                continue
            if pid == 0:
                return n
            n += 1
            ex = Exit(pid, exit_status(status), time.time())
            for sub in tuple(self._subs):
                sub._deliver(ex)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Reap after every SIGCHLD until cancelled (the daemon's root nursery runs it)."""
        with trio.open_signal_receiver(signal.SIGCHLD) as signals:
            self.reap()  # children that exited before the handler was installed
            task_status.started()
            async for _ in signals:
                self.reap()


def _devnull() -> int:
    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


class ReaperLauncher:
    """Runs helper programs through the reaper (see module rules); implements runtime.base.Launcher."""

    KILL_GRACE = 5.0

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: int | bytes | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        pass_fds: Sequence[int] = (),
    ) -> RunResult:
        """Run ``argv`` to completion: ``stdin`` an fd to use, bytes to feed, or None (/dev/null); ``stdout`` and
        ``stderr`` fds, or None to capture both into ``RunResult.output``. Cancelling the caller terminates the
        child (TERM, KILL_GRACE, KILL) before the cancellation goes on."""
        parent_fds: list[int] = []  # our ends: closed when the call ends
        child_fds: list[int] = []  # the child's ends: closed right after spawn
        try:
            if isinstance(stdin, int):
                child_in, feed_w = stdin, None
            elif stdin is None:
                child_in, feed_w = _devnull(), None
                child_fds.append(child_in)
            else:
                child_in, feed_w = os.pipe2(os.O_CLOEXEC)
                child_fds.append(child_in)
                parent_fds.append(feed_w)
            capture = None
            if stdout is None or stderr is None:
                # A file, not a pipe: a runtime command may leave children holding its stdout (runsc start of
                # a pod's container leaves a gofer), and waiting for a pipe's EOF would then never end.
                capture = os.memfd_create("pyshim-capture", os.MFD_CLOEXEC)
                parent_fds.append(capture)
                stdout = capture if stdout is None else stdout
                stderr = capture if stderr is None else stderr
            actions = [
                (os.POSIX_SPAWN_DUP2, child_in, 0),
                (os.POSIX_SPAWN_DUP2, stdout, 1),
                (os.POSIX_SPAWN_DUP2, stderr, 2),
                # dup2 onto itself clears FD_CLOEXEC (POSIX 2017, glibc >= 2.29)
                *((os.POSIX_SPAWN_DUP2, fd, fd) for fd in pass_fds),
            ]
            with self._reaper.subscribe() as sub:
                pid = _spawn(argv, env, actions, own_group=True, cwd=cwd)
                while child_fds:
                    os.close(child_fds.pop())
                if feed_w is not None:
                    parent_fds.remove(feed_w)  # _collect owns it from here on
                try:
                    ex = await _feed_and_wait(sub, pid, _Feed(feed_w, stdin) if feed_w is not None else None)
                except BaseException:
                    with trio.move_on_after(self.KILL_GRACE + 2, shield=True):
                        await _terminate(pid, sub, self.KILL_GRACE)
                    raise
            return RunResult(pid=pid, status=ex.status, output=_read_all(capture) if capture is not None else b"")
        finally:
            for fd in child_fds + parent_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass


    async def spawn(self, argv: Sequence[str], *, env: Mapping[str, str], extra_fds: Sequence[int] = (),
                    stdio: tuple[int | None, int | None, int | None] = (None, None, None)) -> SpawnedChild:
        """Start a long-lived child (a logger binary, a container process): fds 0-2 = ``stdio`` (None:
        /dev/null), 3.. = ``extra_fds``, nothing else inherited, ``env`` the whole environment (argv[0] is
        looked up in its PATH when it has no ``/``). Its exit is held for ``SpawnedChild.wait`` from before it
        can happen; cancelling the caller later does not touch the child. Raises OSError if the exec fails."""
        # Move the sources out of the 0..N range first, so no dup2 clobbers a later source.
        null = _devnull()
        sources = [null if fd is None else fd for fd in stdio] + list(extra_fds)
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in sources]
        try:
            actions = [(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(high)]
            sub = self._reaper.subscribe()
            try:
                pid = _spawn(argv, env, actions)
            except BaseException:
                sub.close()
                raise
        finally:
            for fd in (*high, null):
                os.close(fd)
        sub.keep_only(pid)
        return SpawnedChild(pid, sub)


class SpawnedChild:
    """A child started by `ReaperLauncher.spawn`; its subscription stays open until it was reaped."""

    def __init__(self, pid: int, sub: Subscription) -> None:
        self.pid = pid
        self.exit: Exit | None = None  # set once ``wait`` returned: the status and when it was reaped
        self._sub = sub

    async def wait(self) -> int:
        """The child's exit status (exit code or 128 + signal); cancelling the wait does not touch the child.
        ``exit`` holds the whole Exit afterwards (its ``timestamp`` is when it was reaped)."""
        ex = await self._sub.wait(self.pid)
        self._sub.close()
        self.exit = ex
        return ex.status

    def signal(self, sig: int) -> None:
        """Send ``sig`` unless the child was already reaped (its pid may belong to someone else by now)."""
        if self._sub.reaped(self.pid) is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def _spawn(argv: Sequence[str], env: Mapping[str, str] | None, actions: list, own_group: bool = False,
           cwd: str | None = None) -> int:
    """posix_spawn ``argv``; with ``own_group`` the child leads a new process group (its pgid is its pid); in
    ``cwd`` when given. posix_spawn has no chdir action before Python 3.13, so the daemon itself changes
    directory around the (synchronous) spawn and back: no other task runs meanwhile, and its threads (stats,
    checkpoint copies, netns) only use absolute paths."""
    if cwd is None:
        return _spawn_here(argv, env, actions, own_group)
    back = os.open(".", os.O_PATH | os.O_CLOEXEC)  # also where a deleted bundle was: fchdir returns there
    try:
        os.chdir(cwd)
        try:
            return _spawn_here(argv, env, actions, own_group)
        finally:
            os.fchdir(back)
    finally:
        os.close(back)


def _spawn_here(argv: Sequence[str], env: Mapping[str, str] | None, actions: list, own_group: bool) -> int:
    env = dict(os.environ if env is None else env)
    path = argv[0]
    if "/" not in path:
        found = shutil.which(path, path=env.get("PATH", os.defpath))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, f"executable file not found in $PATH: {path}")
        path = found
    return os.posix_spawn(
        path,
        list(argv),
        env,
        file_actions=actions,
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT, signal.SIGTERM),
        setsigmask=(),
        **({"setpgroup": 0} if own_group else {}),
    )


class _Feed:
    """Bytes for a child's stdin pipe; the write end is closed exactly once (EOF for the child)."""

    def __init__(self, fd: int, data: bytes) -> None:
        self.fd: int | None = fd
        self.data = data

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    async def run(self) -> None:
        try:
            os.set_blocking(self.fd, False)
            view = memoryview(self.data)
            while view:
                try:
                    n = os.write(self.fd, view)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.fd)
                    continue
                except BrokenPipeError:
                    return  # the child stopped reading; its exit status tells the story
                view = view[n:]
        finally:
            self.close()


async def _feed_and_wait(sub: "Subscription", pid: int, feed: _Feed | None) -> Exit:
    """Feed stdin (then close it) while waiting for the child's exit; a feed the child never read is dropped."""
    if feed is None:
        return await sub.wait(pid)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed.run)
            ex = await sub.wait(pid)
            nursery.cancel_scope.cancel()
        return ex
    finally:
        feed.close()


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


async def _terminate(pid: int, sub: Subscription, grace: float) -> None:
    """TERM, ``grace`` seconds, KILL to the process group led by ``pid``, each only while ``pid`` is unreaped
    (until then its pid is the group's id: no pid reuse can make it someone else's); then wait for its exit."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        if sub.reaped(pid) is not None:
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        with trio.move_on_after(wait):
            await sub.wait(pid)
            return
