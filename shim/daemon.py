"""The long-lived shim daemon: one trio run serving the task service for one container or a group.

Rules:
- `run(flags, listen_fd)` is a plain function of already-parsed arguments, so a pre-imported parent can
  fork straight into it. It never returns to containerd anything but its exit code.
- Process-wide setup happens once, before trio starts: child subreaper, diagnostics to the bundle's
  `log` FIFO on fd 2, SIGPIPE ignored.
- The root nursery holds the reaper, the event publisher, the task table (exit routing and the
  containers' IO nurseries) and the ttrpc server. Shutdown (the Shutdown call with no container left,
  or SIGTERM/SIGINT) stops the server gracefully, lets the publisher drain for up to 5 s, unlinks the
  socket and exits.
- The daemon owns its socket file: it unlinks the path its listener is bound to.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import time

import trio

from shim.flags import ShimFlags

log = logging.getLogger("shim")

PR_SET_CHILD_SUBREAPER = 36
PUBLISH_DRAIN = 5.0
SERVER_DRAIN = 5.0  # in-flight calls get this long to finish after Shutdown


def set_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


PR_SCHED_CORE, PR_SCHED_CORE_CREATE, PIDTYPE_PGID = 62, 1, 2


def enable_sched_core() -> None:
    """A core-scheduling cookie for this daemon's process group, inherited by every container it starts
    (containerd sets SCHED_CORE=1 when its ``sched_core`` option is on; upstream's shim does this in start)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SCHED_CORE, PR_SCHED_CORE_CREATE, 0, PIDTYPE_PGID, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"enable sched core support: {os.strerror(err)}")


class LogfmtFormatter(logging.Formatter):
    """logrus-style text lines, as containerd relays them from the `log` FIFO."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self._fields = "".join(f" {k}={_q(v)}" for k, v in fields.items() if v)

    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        t += ".%09dZ" % int((record.created % 1) * 1e9)
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return f'time="{t}" level={record.levelname.lower()} msg={_q(msg)}{self._fields}'


def _q(v: str) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def setup_logging(flags: ShimFlags) -> None:
    """Diagnostics go to fd 2; the bundle's `log` FIFO (containerd holds it open) becomes fd 2."""
    try:
        fd = os.open("log", os.O_WRONLY | os.O_CLOEXEC)
        os.dup2(fd, 2)
        os.close(fd)
    except OSError:
        pass  # no FIFO (started by hand): keep whatever fd 2 is
    handler = logging.StreamHandler(_NonBlockingStderr())
    handler.setFormatter(LogfmtFormatter({
        "namespace": flags.namespace, "id": flags.id, "pid": str(os.getpid()),
        "runtime": "io.containerd.pyshim.v1",
    }))
    root = logging.getLogger()
    root.handlers[:] = [handler]

    root.setLevel(logging.DEBUG if flags.debug else logging.INFO)


class _NonBlockingStderr:
    """Writes to fd 2 that never block the event loop: with no reader a line is dropped, not waited for."""

    def write(self, s: str) -> None:
        data = s.encode(errors="replace")
        try:
            os.set_blocking(2, False)
            os.write(2, data)
        except (BlockingIOError, BrokenPipeError, OSError):
            pass

    def flush(self) -> None:
        pass


def _cloexec_inherited() -> None:
    """Whatever we inherited above stdio (the listener on fd 3 included) must not leak into the runtime,
    loggers or containers we spawn."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the directory fd of the listing itself, already closed


def run(flags: ShimFlags, listen_fd: int) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    _cloexec_inherited()
    setup_logging(flags)
    try:
        set_subreaper()
        if os.environ.get("SCHED_CORE"):
            enable_sched_core()
        sock = socket.socket(fileno=listen_fd)
        trio.run(_main, flags, sock)
    except Exception:
        log.exception("shim daemon failed")
        return 1
    return 0


async def _main(flags: ShimFlags, sock: socket.socket) -> None:
    path = sock.getsockname()
    unlinked = False
    try:
        from shim.runc.wiring import build

        parts = build(flags)
        log.info("starting pyshim daemon, listening on %s", path)
        async with trio.open_nursery() as root:
            await root.start(parts.reaper.run)
            await root.start(parts.publisher.run)
            await root.start(parts.tasks.run)
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            root.start_soon(parts.server.serve, listener)
            root.start_soon(_signals, parts.shutdown)
            await parts.shutdown.wait()
            log.info("shutting down")
            # Unlink while still bound: a concurrent `start` of the group then binds a fresh socket
            # instead of taking ours for stale and losing it to our unlink.
            _unlink(path)
            unlinked = True
            with trio.move_on_after(SERVER_DRAIN):
                await parts.server.shutdown()
            parts.server.close()
            parts.publisher.close()
            await parts.publisher.drain(PUBLISH_DRAIN)
            root.cancel_scope.cancel()
    finally:
        if not unlinked:  # after a failure; never after the unlink above, the name may be another's now
            _unlink(path)


def _unlink(path: object) -> None:
    if isinstance(path, str) and path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


async def _signals(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
        async for signum in signals:
            if signum == signal.SIGUSR1:
                log.info("task dump:\n%s", "\n".join(_task_tree(trio.lowlevel.current_root_task())))
            else:
                shutdown.set()


def _task_tree(task, depth: int = 0) -> list[str]:
    """Every trio task with the line it waits on (SIGUSR1, like the Go shim's stack dump)."""
    frame = task.coro.cr_frame
    where = " <- ".join(f"{os.path.basename(f.f_code.co_filename)}:{lineno} {f.f_code.co_name}"
                        for f, lineno in task.iter_await_frames())
    lines = [f"{'  ' * depth}{task.name} @ {where or frame}"]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            lines += _task_tree(child, depth + 1)
    return lines
