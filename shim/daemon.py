"""The long-lived shim daemon: one trio run serving a manager's task service for one container or a group.

Rules:
- ``run(manager, flags, listen_fd)`` is a plain function of already-parsed arguments, so a pre-imported parent
  (the fork server) can fork straight into it. It returns the process's exit code and nothing else.
- Process-wide set-up happens once, before trio starts: SIGPIPE ignored, inherited descriptors above stdio made
  close-on-exec, diagnostics to the bundle's ``log`` FIFO (daemon_log.py), child subreaper, and a core
  scheduling cookie when containerd asks for one (``SCHED_CORE`` in the environment).
- ``build`` makes the parts in a fixed order (the reaper, the launcher on it, the event publisher, the
  ``Daemon`` context, the manager's task service, the occupancy, the ttrpc server) and does no I/O; ``serve``
  starts them in the root nursery: reaper, publisher, the service's own ``run``, the occupancy's idle exit, then
  the server. The service's Task methods are registered behind ``Occupancy.wrap`` (task ids, log routing) and,
  inside it, ``Failpoints.wrap`` (containerd's failpoint annotations, where the service enables them).
- Shutdown: a daemon of a group leaves when the service calls ``Daemon.shutdown`` (no task left), or when no
  Create reached it within ``unused_exit()`` seconds of its start (shim/occupancy.py); a daemon shared
  by unrelated containers (``-shared MAX:IDLE``, shim/sharing.py) leaves when its occupancy has been idle for IDLE
  seconds, and also serves ``pyshim.shard.v1.Shard/Reserve``; any daemon leaves on SIGTERM/SIGINT. Leaving
  unlinks the socket, lets in-flight calls finish for up to SERVER_DRAIN, lets the publisher drain for up to
  PUBLISH_DRAIN, and exits.
- A shared daemon moves its cwd to ``/``: the bundle it started in belongs to one container and goes with it.
- The daemon owns its socket file: it unlinks the path its listener is bound to, while still bound, so a
  concurrent ``start`` of the group binds a fresh socket instead of taking ours for stale.
- SIGUSR1 logs every trio task and where it waits (like the Go shim's stack dump) and, when the daemon traces
  memory (``PYSHIM_TRACEMALLOC=N`` in its environment, N frames per allocation: the installed launcher runs
  Python isolated, so PYTHONTRACEMALLOC is ignored), its traced Python memory, the top allocation sites and
  the allocations that grew most since the previous SIGUSR1 (how a leak shows itself).
"""
from __future__ import annotations

import logging
import os
import signal
import socket

import trio

from shim import sharing
from shim.events import Publisher, TaskEvents
from shim.failpoint_wrap import Failpoints
from shim.flags import ShimFlags
from shim.linux.libc import prctl
from shim.occupancy import Occupancy
from shim.reaper import Reaper, ReaperLauncher
from ttrpc.server import Server

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shim.daemon_log import TaskLogs
    from shim.manager import Manager
    from shim.service import TaskService

__all__ = ["Daemon", "build", "run"]

log = logging.getLogger("shim")

PR_SET_CHILD_SUBREAPER = 36
PR_SCHED_CORE, PR_SCHED_CORE_CREATE, PIDTYPE_PGID = 62, 1, 2
PUBLISH_DRAIN = 5.0
SERVER_DRAIN = 5.0  # in-flight calls get this long to finish after Shutdown


class Daemon:
    """What a task service gets from the library: who the daemon is, and the daemon-wide parts it shares.

    Attributes: ``namespace``, ``id`` (the task whose start made this daemon), ``address`` (containerd's gRPC
    address), ``debug``; ``reaper`` (the only waitpid of the process: subscribe before a child can exit),
    ``launcher`` (runs helper programs through the reaper), ``publisher`` and ``events`` (task events to
    containerd, in order)."""

    def __init__(self, flags: ShimFlags, reaper: Reaper, launcher: ReaperLauncher, publisher: Publisher) -> None:
        self.namespace = flags.namespace
        self.id = flags.id
        self.address = flags.address
        self.debug = flags.debug
        self.reaper = reaper
        self.launcher = launcher
        self.publisher = publisher
        self.events = TaskEvents(publisher)
        self.shared = shared_settings(flags.shared)
        self._shutdown = trio.Event()

    def shutdown(self) -> None:
        """Let the daemon exit: call it from Shutdown once no task is left (containerd sends Shutdown after
        every Delete; a daemon of a group keeps serving while other tasks remain). A shared daemon ignores it:
        it leaves after its idle time (shim/occupancy.py)."""
        if self.shared is None:
            self._shutdown.set()

    def stop(self) -> None:
        """Leave now, whatever the tasks (SIGTERM, or a shared daemon's idle exit)."""
        self._shutdown.set()

    @property
    def shutting_down(self) -> bool:
        """``shutdown`` was called (or a signal asked the daemon to stop)."""
        return self._shutdown.is_set()

    async def wait_shutdown(self) -> None:
        """Return once the daemon is shutting down."""
        await self._shutdown.wait()


def shared_settings(value: str) -> sharing.Sharing | None:
    """The ``-shared MAX:IDLE`` flag; None for a daemon that is not shared. A malformed value is a ValueError."""
    if not value:
        return None
    max_tasks, _, idle = value.partition(":")
    settings = sharing.Sharing(key="", max_tasks=int(max_tasks), idle_exit=float(idle or 0))
    if settings.max_tasks < 1 or not settings.idle_exit >= 0:  # NaN too
        raise ValueError(f"-shared {value!r}: MAX_TASKS must be at least 1 and IDLE_SECONDS not negative")
    return settings


class Parts:
    """The daemon's parts, made by ``build`` and started by ``serve``."""

    def __init__(self, daemon: Daemon, service: TaskService, occupancy: Occupancy, server: Server) -> None:
        self.daemon, self.service, self.occupancy, self.server = daemon, service, occupancy, server


def build(manager: Manager, flags: ShimFlags, task_logs: TaskLogs | None = None) -> Parts:
    """Construct (no I/O, no tasks started) the parts of a daemon for ``manager``."""
    from shim.service import SERVICES

    reaper = Reaper()
    publisher = Publisher(os.environ.get("TTRPC_ADDRESS", ""), flags.namespace)
    daemon = Daemon(flags, reaper, ReaperLauncher(reaper), publisher)
    service = manager.task_service(daemon)
    occupancy = Occupancy(flags.id, task_logs, daemon.shared, daemon.stop, lambda: daemon.shutting_down,
                          unused_exit=unused_exit())
    server = Server()
    methods = occupancy.wrap(Failpoints(service.failpoints_enabled).wrap(service.methods()))
    for name in SERVICES:
        server.register(name, methods)
    if daemon.shared is not None:
        server.register(sharing.SERVICE, occupancy.shard_methods())
    return Parts(daemon, service, occupancy, server)


def unused_exit() -> float:
    """Seconds a daemon of a group waits for its first Create (shim/occupancy.py): UNUSED_EXIT, or
    ``$PYSHIM_UNUSED_EXIT`` (a positive number; tests wait less)."""
    from shim.occupancy import UNUSED_EXIT

    try:
        value = float(os.environ.get("PYSHIM_UNUSED_EXIT", UNUSED_EXIT))
    except ValueError:
        return UNUSED_EXIT
    return value if value > 0 else UNUSED_EXIT


def set_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1, what="prctl(PR_SET_CHILD_SUBREAPER)")


def enable_sched_core() -> None:
    """A core-scheduling cookie for this daemon's process group, inherited by every container it starts
    (containerd sets SCHED_CORE=1 when its ``sched_core`` option is on; upstream's shim does this in start)."""
    prctl(PR_SCHED_CORE, PR_SCHED_CORE_CREATE, 0, PIDTYPE_PGID, 0, what="enable sched core support")


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


def run(manager: Manager, flags: ShimFlags, listen_fd: int) -> int:
    """Serve until shut down; the process's exit status."""
    from shim.daemon_log import setup_logging

    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if os.environ.get("PYSHIM_TRACEMALLOC"):
        import tracemalloc

        frames = os.environ["PYSHIM_TRACEMALLOC"]
        tracemalloc.start(int(frames) if frames.isdigit() and int(frames) > 0 else 1)
    _cloexec_inherited()
    task_logs = setup_logging(flags, manager.name)
    try:
        set_subreaper()
        if os.environ.get("SCHED_CORE"):
            enable_sched_core()
        if flags.shared:
            os.chdir("/")
        sock = socket.socket(fileno=listen_fd)
        trio.run(serve, manager, flags, sock, task_logs)
    except Exception:
        log.exception("shim daemon failed")
        return 1
    return 0


async def serve(manager: Manager, flags: ShimFlags, sock: socket.socket, task_logs: TaskLogs | None = None) -> None:
    """The daemon's trio run: the root nursery and the shutdown sequence (see the module rules)."""
    path = sock.getsockname()
    unlinked = False
    try:
        parts = build(manager, flags, task_logs)
        log.info("starting %s daemon%s, listening on %s", manager.name,
                 f" shared by up to {parts.daemon.shared.max_tasks} tasks" if parts.daemon.shared else "", path)
        async with trio.open_nursery() as root:
            await root.start(parts.daemon.reaper.run)
            await root.start(parts.daemon.publisher.run)
            await root.start(parts.service.run)
            await root.start(parts.occupancy.run)
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            root.start_soon(parts.server.serve, listener)
            root.start_soon(_signals, parts.daemon)
            await parts.daemon.wait_shutdown()
            log.info("shutting down")
            _unlink(path)
            unlinked = True
            with trio.move_on_after(SERVER_DRAIN):
                await parts.server.shutdown()
            parts.server.close()
            parts.daemon.publisher.close()
            await parts.daemon.publisher.drain(PUBLISH_DRAIN)
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


async def _signals(daemon: Daemon) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
        async for signum in signals:
            if signum == signal.SIGUSR1:
                log.info("task dump:\n%s", "\n".join(_task_tree(trio.lowlevel.current_root_task())))
                _memory_dump()
            else:
                daemon.stop()


_last_snapshot = None  # the previous SIGUSR1's tracemalloc snapshot


def _memory_dump() -> None:
    """When the daemon traces memory: its traced Python memory, the top allocation sites, and what grew most since
    the previous dump (by whole traceback)."""
    import gc
    import linecache
    import tracemalloc

    global _last_snapshot
    if not tracemalloc.is_tracing():
        return
    gc.collect()  # what is left is reachable: cyclic garbage waiting for the collector is not a leak
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, linecache.__file__)])
    top = snapshot.statistics("lineno")[:15]
    log.info("traced memory: %d bytes now, %d at the peak; top sites:\n%s", current, peak,
             "\n".join(str(stat) for stat in top))
    if _last_snapshot is not None:  # one record per traceback: a log line is bounded (shim/daemon_log.py)
        grown = [d for d in snapshot.compare_to(_last_snapshot, "traceback") if d.count_diff > 0][:10]
        for d in grown:
            frames = [f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(d.traceback)]
            log.info("grown since the previous dump: %+d B, %+d blocks at %s", d.size_diff, d.count_diff,
                     " <- ".join(frames))
    _last_snapshot = snapshot


def _task_tree(task, depth: int = 0) -> list[str]:
    """Every trio task with the line it waits on."""
    frame = task.coro.cr_frame
    where = " <- ".join(f"{os.path.basename(f.f_code.co_filename)}:{lineno} {f.f_code.co_name}"
                        for f, lineno in task.iter_await_frames())
    lines = [f"{'  ' * depth}{task.name} @ {where or frame}"]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            lines += _task_tree(child, depth + 1)
    return lines
