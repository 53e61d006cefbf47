"""One container of the pychroot shim: its init, its execs and their lifecycles, in domain terms.

Rules:
- A process goes created -> running -> stopped, and deleted last. Refusals are the runc shim's sentences:
  FailedPrecondition for a forbidden step, NotFound for an unknown exec and for a kill of a finished process.
  Start, Kill and Delete of one process hold its ``lock``, so a kill waits for a start in flight.
- Every process is started with the library's ``ReaperLauncher.spawn``, which holds its exit from before it can
  happen. One watcher task per process (in the service's nursery) awaits that exit, drains the stdio copies and
  only then publishes ``/tasks/exit``. With the start event queued before the watcher exists, each process's
  events go out in order: create (or exec-added), start (or exec-started), exit, delete.
- The init's exit ends the container: what is left in it is SIGKILLed (no pid namespace does that for us), the
  execs' exits go out first (bounded wait), the init's last.
- Start answers once the init is in its own mount namespace (a bounded poll of ``/proc/<pid>/ns/mnt``, a
  few milliseconds): with its root, that namespace tells the container's processes apart (bundle.py).
- Killing an init that was never started stops it with 128+signal, as killing runc's waiting init does, so
  containerd's forced delete (kill, wait, delete) works between Create and Start.
- Stdio: the init's is prepared at Create, an exec's at its Start; ``ProcessIO.start`` runs right after the
  spawn (it closes our copies of the child's ends), ``drain`` at exit, ``aclose`` at Delete.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time

import trio

from chrootshim import bundle
from chrootshim.spec import ProcessSpec, Tools, exec_argv, init_argv
from shim import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unknown
from shim.io import LoggerStartError, ProcessIO, StdioConfig, StdioOpenError, UnsupportedStdioError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shim import Daemon, SpawnedChild

__all__ = ["Container", "Process", "prepare_io"]

log = logging.getLogger(__name__)

IO_DRAIN = 2.0  # seconds for the output copies to finish after an exit, as the runc shim waits
NAMESPACE_WAIT = 1.0  # seconds for a started init to enter its mount namespace


async def prepare_io(daemon: Daemon, container_id: str, stdio: StdioConfig) -> ProcessIO:
    """The library's ProcessIO for one process, its errors as the client should see them."""
    try:
        return await ProcessIO.prepare(stdio, container_id=container_id, namespace=daemon.namespace,
                                       spawner=daemon.launcher)
    except UnsupportedStdioError as exc:
        raise InvalidArgument(str(exc)) from None
    except StdioOpenError as exc:
        raise (NotFound if exc.errno == errno.ENOENT else Unknown)(str(exc)) from None
    except LoggerStartError as exc:
        raise Unknown(str(exc)) from None


class Process:
    """The init (``exec_id`` "") or an exec."""

    def __init__(self, container_id: str, exec_id: str, stdio: StdioConfig, spec: ProcessSpec) -> None:
        self.container_id = container_id
        self.exec_id = exec_id
        self.stdio = stdio
        self.spec = spec
        self.state = "created"
        self.pid = 0
        self.exit_status = 0
        self.exited_at: float | None = None  # None: not exited
        self.io: ProcessIO | None = None
        self.child: SpawnedChild | None = None
        self.lock = trio.Lock()
        self._exited = trio.Event()

    @property
    def id(self) -> str:
        """The id containerd uses for the process in State and events."""
        return self.exec_id or self.container_id

    @property
    def is_init(self) -> bool:
        return not self.exec_id

    def set_exited(self, status: int, at: float) -> None:
        self.exit_status, self.exited_at, self.state = status, at, "stopped"
        self._exited.set()

    async def wait(self) -> None:
        await self._exited.wait()


class Container:
    def __init__(self, *, daemon: Daemon, tools: Tools, nursery: trio.Nursery, id: str, bundle_dir: str,
                 root: str, mounted: bool, init: Process) -> None:
        self.daemon = daemon
        self.tools = tools
        self.nursery = nursery  # the service's: stdio copies and exit watchers
        self.id = id
        self.bundle = bundle_dir
        self.root = root  # the container's root directory
        self.mounted = mounted  # Create mounted the rootfs at <bundle>/rootfs: Delete unmounts it
        self.mntns: int | None = None  # the init's mount namespace, known from its start
        self.init = init
        self.execs: dict[str, Process] = {}
        self._running_execs = 0
        self._execs_idle = trio.Event()
        self._execs_idle.set()

    def process(self, exec_id: str) -> Process:
        if not exec_id:
            return self.init
        try:
            return self.execs[exec_id]
        except KeyError:
            raise NotFound(f"process does not exist {exec_id}") from None

    # -- exec ------------------------------------------------------------------------------------------------
    def add_exec(self, exec_id: str, stdio: StdioConfig, spec: ProcessSpec) -> None:
        if exec_id in self.execs:
            raise AlreadyExists(f"id {exec_id}: already exists")
        if self.init.state not in ("created", "running"):
            raise FailedPrecondition(f"cannot exec in a {self.init.state} state")
        self.execs[exec_id] = Process(self.id, exec_id, stdio, spec)

    # -- start -----------------------------------------------------------------------------------------------
    async def start(self, exec_id: str) -> int:
        p = self.process(exec_id)
        async with p.lock:
            return await self._start(p)

    async def _start(self, p: Process) -> int:
        if p.state != "created":
            raise FailedPrecondition(f"cannot start a {p.state} process")
        if p.is_init:
            await self._spawn(p, init_argv(self.tools, self.root, p.spec))
            await self._learn_namespace(p.pid)
            bundle.write_pid(self.bundle, p.pid)
            self.daemon.events.start(self.id, p.pid)
        else:
            if self.init.state != "running":
                raise FailedPrecondition(f"container {self.id} init process is not running")
            p.io = await prepare_io(self.daemon, self.id, p.stdio)
            self._exec_started()
            try:
                await self._spawn(p, exec_argv(self.tools, self.init.pid, p.spec))
            except BaseException:
                self._exec_finished()
                raise
            self.daemon.events.exec_started(self.id, p.exec_id, p.pid)
        self.nursery.start_soon(self._watch, p)  # after the start event: the exit is published after it
        return p.pid

    async def _spawn(self, p: Process, argv: list[str]) -> None:
        """Spawn ``p`` with its stdio and start the copies; on failure nothing of ``p`` is left running."""
        assert p.io is not None
        try:
            child = await self.daemon.launcher.spawn(argv, env=p.spec.env, stdio=p.io.runtime_stdio)
        except OSError as exc:
            with trio.CancelScope(shield=True):
                await p.io.aclose()
            raise Unknown(f"start {p.id}: {argv[0]}: {exc}") from None
        try:
            await p.io.start(self.nursery)  # closes everything itself when it fails
        except BaseException as exc:
            child.signal(signal.SIGKILL)
            with trio.CancelScope(shield=True):
                p.set_exited(await child.wait(), child.exit.timestamp)  # never started for containerd: no event
            if isinstance(exc, OSError):
                raise Unknown(f"start {p.id}: stdio: {exc}") from None
            raise
        p.child, p.pid, p.state = child, child.pid, "running"

    async def _learn_namespace(self, pid: int) -> None:
        """Wait (bounded) until unshare made the init's mount namespace; remember it. An init that exits first
        leaves it unknown: then only the init itself is the container."""
        own = bundle.mount_namespace("self")
        with trio.move_on_after(NAMESPACE_WAIT):
            while (ns := bundle.mount_namespace(pid)) == own:
                await trio.sleep(0.001)
            self.mntns = ns

    # -- exits -----------------------------------------------------------------------------------------------
    async def _watch(self, p: Process) -> None:
        assert p.child is not None
        status = await p.child.wait()
        at = p.child.exit.timestamp  # when the reaper collected it
        if p.is_init:
            self._kill_rest(signal.SIGKILL)
            with trio.move_on_after(2 * IO_DRAIN):
                await self._execs_idle.wait()  # the init's exit is the container's last
        if p.io is not None:
            await p.io.drain(IO_DRAIN)
        p.set_exited(status, at)
        self.daemon.events.exit(self.id, p.id, p.pid, status, at)
        if not p.is_init:
            self._exec_finished()

    def _exec_started(self) -> None:
        if not self._running_execs:
            self._execs_idle = trio.Event()
        self._running_execs += 1

    def _exec_finished(self) -> None:
        self._running_execs -= 1
        if not self._running_execs:
            self._execs_idle.set()

    def _kill_rest(self, sig: int) -> None:
        """Signal every process of the container but the init (see bundle.py for how they are found)."""
        if self.mntns is None:
            return
        try:
            bundle.signal_all(self.root, self.mntns, sig, skip=self.init.pid)
        except (OSError, ValueError) as exc:
            log.warning("container %s: signalling its processes: %s", self.id, exc)

    # -- kill ------------------------------------------------------------------------------------------------
    async def kill(self, exec_id: str, sig: int, all: bool) -> None:
        p = self.process(exec_id)
        async with p.lock:
            self._kill(p, sig, all)

    def _kill(self, p: Process, sig: int, all: bool) -> None:
        if p.state in ("stopped", "deleted"):
            raise NotFound("process already finished: not found")  # runc.v2's text (shim/runc/task/states.py)
        if p.state == "created":
            if not p.is_init:
                raise FailedPrecondition("process not created")
            if sig:  # nothing runs yet: the init "dies" of the signal, as runc's waiting init would
                p.set_exited(128 + sig, time.time())
                self.daemon.events.exit(self.id, p.id, p.pid, p.exit_status, p.exited_at)
            return
        assert p.child is not None
        if all and p.is_init:
            self._kill_rest(sig)
        p.child.signal(sig)  # a no-op once the exit was reaped: never a reused pid

    def pids(self) -> list[tuple[int, str]]:
        """(pid, exec id or "") of every live process of the container."""
        by_pid = {p.pid: p.exec_id for p in self.execs.values() if p.state == "running"}
        try:
            pids = set(bundle.container_pids(self.root, self.mntns)) if self.mntns is not None else set()
        except (OSError, ValueError) as exc:
            raise Unknown(f"listing the processes of {self.id}: {exc}") from None
        if self.init.state == "running":
            pids.add(self.init.pid)  # also in the moment before it chrooted
        return [(pid, by_pid.get(pid, "")) for pid in sorted(pids)]

    # -- delete ----------------------------------------------------------------------------------------------
    async def delete_exec(self, exec_id: str) -> Process:
        p = self.process(exec_id)
        async with p.lock:
            if p.state == "running":
                raise FailedPrecondition("cannot delete a running process")
            if p.io is not None:
                await p.io.aclose()
            del self.execs[exec_id]
            p.state = "deleted"
        return p

    async def delete_init(self) -> Process:
        """Delete the stopped (or never started) init: close every stdio, unmount, remove the pid file."""
        p = self.init
        async with p.lock:
            if p.state == "running":
                raise FailedPrecondition("cannot delete a running process")
            if p.state == "deleted":
                raise NotFound("cannot delete a deleted process")
            p.state = "deleted"
            with trio.CancelScope(shield=True):
                for proc in (p, *self.execs.values()):
                    if proc.io is not None:
                        await proc.io.aclose()
            self.release()
        return p

    def release(self) -> None:
        """Unmount what Create mounted and remove the pid file; errors are logged (``delete`` retries)."""
        if self.mounted:
            from shim.linux.unmount import unmount_all

            try:
                unmount_all(os.path.join(self.bundle, "rootfs"))
            except OSError as exc:
                log.warning("container %s: unmounting its rootfs: %s", self.id, exc)
            self.mounted = False
        bundle.remove_pid(self.bundle)
