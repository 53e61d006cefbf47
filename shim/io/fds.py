"""File descriptors of process IO and the one copy loop that moves bytes between them.

Rules:
- Every fd the IO package opens is wrapped in an `Fd` as soon as it exists and registered with one `FdOwner`
  (the ProcessIO); only `Fd.close` closes it, once, telling trio first (`notify_closing`) so a task parked on
  it wakes with an error instead of waiting on a recycled number. A copy task may close the fds it was handed
  when its stream ends; the owner closes whatever is left.
- Pollable fds (pipes, FIFOs, sockets, the pty master) are switched to O_NONBLOCK and driven with trio's
  wait_readable/wait_writable: no read or write ever blocks the event loop, and a stalled reader of one FIFO
  stalls only the task writing to it. Other fds (regular files, devices) cannot be polled; their reads and
  writes run in a worker thread.
- Writes to pollable fds go out in pieces of at most PIPE_BUF bytes: a non-blocking pipe write of that size is
  all-or-nothing, so two writers sharing one FIFO (stdout == stderr) interleave only at piece boundaries, as
  upstream's 4 KiB buffers do. Partial writes are still handled.
- The container-side ends of pipes stay blocking: O_NONBLOCK lives on the open file description, and the two
  ends of a pipe are different descriptions, so only the shim's ends change.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import stat

import trio

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
PIPE_BUF = select.PIPE_BUF


class Fd:
    """One open fd with a single close. `pollable=None` decides from fstat (FIFO or socket)."""

    def __init__(self, fd: int, name: str, *, pollable: bool | None = None, nonblocking: bool = True) -> None:
        self.fileno = fd
        self.name = name
        self.closed = False
        self._refs = 1
        if pollable is None:
            mode = os.fstat(fd).st_mode
            pollable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        self.pollable = pollable
        if pollable and nonblocking:
            os.set_blocking(fd, False)

    def share(self) -> Fd:
        """One more user; `release` closes when the last user is done (one writer for stdout and stderr)."""
        self._refs += 1
        return self

    def release(self) -> None:
        self._refs -= 1
        if self._refs <= 0:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.pollable:
            trio.lowlevel.notify_closing(self.fileno)
        try:
            os.close(self.fileno)
        except OSError as exc:  # EBADF would be our bug; EIO etc. on close are not actionable
            log.warning("closing %s (fd %d): %s", self.name, self.fileno, exc)

    def __repr__(self) -> str:
        return f"Fd({self.fileno}, {self.name!r}{', closed' if self.closed else ''})"


class FdOwner:
    """The set of fds one ProcessIO owns; `close_all` closes every one not closed yet."""

    def __init__(self) -> None:
        self._fds: list[Fd] = []

    def adopt(self, fd: int, name: str, **kw: bool | None) -> Fd:
        try:
            handle = Fd(fd, name, **kw)  # type: ignore[arg-type]
        except BaseException:
            os.close(fd)
            raise
        self._fds.append(handle)
        return handle

    def pipe(self, name: str) -> tuple[Fd, Fd]:
        """A close-on-exec pipe (read end, write end), both still blocking (the caller picks the shim's end)."""
        r, w = os.pipe2(os.O_CLOEXEC)
        rd = self.adopt(r, f"{name} pipe read end", pollable=True, nonblocking=False)
        wr = self.adopt(w, f"{name} pipe write end", pollable=True, nonblocking=False)
        return rd, wr

    def open(self, path: str, flags: int, name: str, mode: int = 0o644) -> Fd:
        return self.adopt(os.open(path, flags | os.O_CLOEXEC, mode), name)

    def close_all(self) -> None:
        while self._fds:
            self._fds.pop().close()

    def live(self) -> list[Fd]:
        return [f for f in self._fds if not f.closed]


class StopSignal:
    """Tells a copy loop to stop once its source has nothing more to give right now (process exit, hang-up)."""

    def __init__(self) -> None:
        self.is_set = False
        self._scopes: set[trio.CancelScope] = set()

    def set(self) -> None:
        self.is_set = True
        for scope in tuple(self._scopes):
            scope.cancel()

    async def wait_readable(self, fd: int) -> bool:
        """Wait for `fd` to be readable or the signal; False if the signal came first."""
        return await self._interruptible(trio.lowlevel.wait_readable(fd))

    async def sleep(self, seconds: float) -> bool:
        return await self._interruptible(trio.sleep(seconds))

    async def _interruptible(self, awaitable) -> bool:  # type: ignore[no-untyped-def]
        if self.is_set:
            awaitable.close()
            return False
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                await awaitable
            finally:
                self._scopes.discard(scope)
        return not scope.cancelled_caught


async def read_some(src: Fd, stop: StopSignal | None = None) -> bytes | None:
    """Up to CHUNK bytes; b"" at end of file; None if `stop` is set while nothing is readable.

    EIO (a pty master without a slave) counts as "nothing readable": with a stop signal the loop ends once the
    signal is set (the process exited), and until then it polls every 50 ms, because an fd in hang-up state
    would make wait_readable return at once forever."""
    if not src.pollable:
        return await trio.to_thread.run_sync(os.read, src.fileno, CHUNK)
    while True:
        # after the stop signal one more read is always made: bytes written just before the exit count
        try:
            return os.read(src.fileno, CHUNK)
        except BlockingIOError:
            if stop is None:
                await trio.lowlevel.wait_readable(src.fileno)
            elif stop.is_set:
                return None
            else:
                await stop.wait_readable(src.fileno)
        except OSError as exc:
            if exc.errno != errno.EIO or stop is None:
                raise
            if stop.is_set:
                return None
            await stop.sleep(0.05)


async def write_all(dst: Fd, data: bytes | memoryview) -> None:
    view = memoryview(data)
    if not dst.pollable:
        await trio.to_thread.run_sync(_write_all_blocking, dst.fileno, view)
        return
    while view:
        try:
            n = os.write(dst.fileno, view[:PIPE_BUF])
        except BlockingIOError:
            await trio.lowlevel.wait_writable(dst.fileno)
            continue
        view = view[n:]


def _write_all_blocking(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


async def pump(src: Fd, dst: Fd | None, label: str, *, stop: StopSignal | None = None,
               discard_after_write_error: bool = True) -> bool:
    """Copy `src` to `dst` until end of input (or `stop`). Returns False if a write failed.

    `dst=None` discards. After a write error the loop either keeps reading and discarding (outputs: the
    container must never block on a full pipe because its reader went away) or stops (stdin)."""
    healthy = True
    while True:
        data = await read_some(src, stop)
        if not data:
            return healthy
        if dst is not None and healthy:
            try:
                await write_all(dst, data)
            except OSError as exc:
                healthy = False
                log.warning("%s: write to %s failed (%s); %s", label, dst.name, exc,
                            "discarding further output" if discard_after_write_error else "stopping")
                if not discard_after_write_error:
                    return healthy
        await trio.lowlevel.checkpoint()  # fairness: a firehose must not starve other containers
