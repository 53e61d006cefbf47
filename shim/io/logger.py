"""The `binary://` logging process: how it is started, when it counts as ready, how it is stopped.

Rules (containerd ``pkg/process/io.go`` ``NewBinaryIO`` at v1.6.20):
- The logger is exec'd with argv from the URI, an environment of exactly CONTAINER_ID and
  CONTAINER_NAMESPACE, /dev/null as 0/1/2, and fd 3 = the read end of the stdout pipe, fd 4 = the read end of
  the stderr pipe, fd 5 = the write end of a readiness pipe. It is ready when it writes a byte to fd 5 or
  closes it (exiting counts). The wait has no bound of its own, like upstream's; the caller's deadline applies
  and a cancelled start kills the logger.
- The shim never forks it itself: a `Spawner` (implemented by the daemon on top of its reaper) starts it, so
  the one waitpid(-1) owner sees its exit and no library wait races the reaper.
- `stop`: SIGTERM, wait up to 12 s (upstream's binaryIOProcTermTimeout), then SIGKILL and a short wait. It
  runs shielded, so it completes even inside a cancelled scope.
"""
from __future__ import annotations

import logging
import os
import signal
from typing import Mapping, Protocol, Sequence

import trio

from shim.io.errors import LoggerStartError
from shim.io.fds import Fd, FdOwner

log = logging.getLogger(__name__)

TERM_GRACE = 12.0
KILL_GRACE = 5.0


class ChildProcess(Protocol):
    """What a Spawner returns: a started child whose exit the reaper holds for it."""

    pid: int

    async def wait(self) -> int:
        """The child's exit status (exit code or 128 + signal), from the reaper subscription taken before the
        fork. Cancelling the wait does not affect the child."""
        ...

    def signal(self, sig: int) -> None:
        """Send `sig` unless the child has already been reaped (a reaped pid may belong to someone else)."""
        ...


class Spawner(Protocol):
    """Starts long-lived helper processes without forking the caller (the daemon's ReaperLauncher)."""

    async def spawn(self, argv: Sequence[str], *, env: Mapping[str, str], extra_fds: Sequence[int]) -> ChildProcess:
        """Start argv[0] (an absolute path, no PATH search) detached from the caller: stdin/stdout/stderr are
        /dev/null, child fd 3+i is a dup of `extra_fds[i]` (mind sources that already sit on 3..5), no other fd
        is inherited, `env` is the whole environment. Raises OSError if the exec fails. The child must outlive
        the call: cancelling the caller later must not kill it."""
        ...


class BinaryLogger:
    def __init__(self, child: ChildProcess, argv: Sequence[str]) -> None:
        self.child = child
        self.argv = tuple(argv)
        self._stopped = False

    @classmethod
    async def start(cls, spawner: Spawner, argv: Sequence[str], *, container_id: str, namespace: str,
                    stdout_r: Fd, stderr_r: Fd, fds: FdOwner) -> BinaryLogger:
        ready_r, ready_w = fds.pipe("logger readiness")
        env = {"CONTAINER_ID": container_id, "CONTAINER_NAMESPACE": namespace}
        try:
            child = await spawner.spawn(argv, env=env, extra_fds=[stdout_r.fileno, stderr_r.fileno, ready_w.fileno])
        except OSError as exc:
            ready_r.close()
            ready_w.close()
            raise LoggerStartError(f"failed to start logging binary {argv[0]}: {exc}") from exc
        ready_w.close()  # ours: the logger's copy is the only writer now, so its exit reads as EOF
        logger = cls(child, argv)
        log.debug("logging binary %s started as pid %d", argv[0], child.pid)
        try:
            await _wait_ready(ready_r)
        except BaseException:
            await logger.stop()
            raise
        finally:
            ready_r.close()
        return logger

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with trio.CancelScope(shield=True):
            self.child.signal(signal.SIGTERM)
            with trio.move_on_after(TERM_GRACE):
                await self.child.wait()
                return
            log.warning("logging binary pid %d ignored SIGTERM for %.0f s; killing it", self.child.pid, TERM_GRACE)
            self.child.signal(signal.SIGKILL)
            with trio.move_on_after(KILL_GRACE):
                await self.child.wait()
                return
            log.error("logging binary pid %d did not exit after SIGKILL", self.child.pid)


async def _wait_ready(ready_r: Fd) -> None:
    os.set_blocking(ready_r.fileno, False)
    while True:
        try:
            os.read(ready_r.fileno, 1)  # a byte or EOF: both mean ready
            return
        except BlockingIOError:
            await trio.lowlevel.wait_readable(ready_r.fileno)
