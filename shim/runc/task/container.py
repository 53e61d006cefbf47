"""A container: its init, its execs, its rootfs mounts, its runtime backend and its IO nursery.

Rules:
- Operations take the process's `lock`; state changes go through `Process.transition` (states.py).
- Runtime calls that create a process (create, exec) run inside a reaper subscription opened before the
  call, so an exit that happens before the pid file is read is still seen (early-exit race): the pid is
  registered with the container table only if its exit was not already received.
- Every stdio copy task of the container runs in the container's IO nursery (owned by Tasks, closed
  when the container is deleted).
- Event order per process: the start event is queued while `lifecycle` is held; the exit handler takes
  `lifecycle` before it queues the exit. The init's exit is queued after all its execs' exits.
- Kill of the init holds `lifecycle` across the runtime call (upstream Init.Kill holds p.mu, which SetExited
  needs), so the exit it causes is neither queued nor answered to Wait before Kill returns. Otherwise
  containerd (1.7, 2.x CRI) reacts to that Wait with Delete, Shutdown and closing the connection while the
  Kill is still in flight, and the Kill fails with "ttrpc: closed".
- A container created from a checkpoint (`restore` set) runs nothing at create: its stdio is prepared and
  Start runs the backend's restore, which creates a new init pid (registered like an exec's).
- An init that exits while paused gets its cgroup resumed, so what is left of the container can die
  (upstream pausedState.SetExited).
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import os
import signal
from typing import Callable

import trio

from runtime import base as rt
from runtime.errors import BackendError, ContainerNotFound
from shim.runc.cgroups.cgroup import ContainerCgroup
from shim.runc.cgroups.oom import OomWatcher
from shim.errors import AlreadyExists, FailedPrecondition, NotFound, Unknown
from shim.runc.task import checkpoint as ckpt
from shim.runc.task.errmap import backend_error
from shim.io import StdioConfig
from shim.runc.task.process import Process
from shim.runc.task.states import PROCESS_FINISHED, Op, State

log = logging.getLogger(__name__)

IO_DRAIN_TIMEOUT = 2.0  # as the runc shim (C16) waits for output before Delete / the exit event


class Container:
    def __init__(self, *, id: str, bundle: str, namespace: str, backend: rt.RuntimeBackend,
                 stdio: StdioConfig, rootfs: str | None, io_factory, register_pid: Callable,
                 options=None, restore: rt.CriuOptions | None = None) -> None:
        self.id = id
        self.bundle = bundle
        self.namespace = namespace
        self.backend = backend
        self.rootfs = rootfs  # the mount target we own, None if containerd sent no mounts
        self.ref = rt.ContainerRef(id, bundle)
        self.options = options  # shim.runc.options.RuntimeOptions or None
        self.restore = restore  # CRIU options of the checkpoint this container is created from
        self._no_pivot = False
        self.init = Process(id, "", stdio, state=State.CREATED_CHECKPOINT if restore else State.CREATED)
        self.execs: dict[str, Process] = {}
        self.io_nursery: trio.Nursery | None = None
        self.closed = trio.Event()  # set when the container is gone: its IO nursery closes
        self.cgroup: ContainerCgroup | None = None  # located from the init pid (Stats, OOM)
        self.oom: OomWatcher | None = None  # runs in the IO nursery from the init's start
        self._io_factory = io_factory  # async (StdioConfig, Process) -> ProcessIO
        self._register_pid = register_pid  # (pid, Process) -> None
        self._running_execs = 0
        self._execs_idle = trio.Event()
        self._execs_idle.set()

    # -- lookup ---------------------------------------------------------------------------
    def process(self, exec_id: str) -> Process:
        if not exec_id:
            return self.init
        try:
            return self.execs[exec_id]
        except KeyError:
            raise NotFound(f"process does not exist {exec_id}") from None

    # -- create / start -------------------------------------------------------------------
    async def create(self, sub, create_spec_kwargs: dict) -> int:
        """Run the runtime's create for the init; returns its pid. `sub` is an open reaper subscription."""
        p = self.init
        p.io = await self._io_factory(p.stdio, p)
        if self.restore is not None:
            self._no_pivot = create_spec_kwargs.get("no_pivot", False)
            return 0  # upstream: no pid until Start restored the checkpoint
        spec = rt.CreateSpec(
            id=self.id, bundle=self.bundle, pid_file=os.path.join(self.bundle, "init.pid"),
            stdio=rt.StdioFds(*p.io.runtime_stdio), console_socket=p.io.console_socket_path,
            **create_spec_kwargs,
        )
        pid = await self._launch(p, self.backend.create(spec))
        p.pid = pid
        if sub.reaped(pid) is None:  # else: already exited, the caller handles it after the create event
            self._register_pid(pid, p)
            self.cgroup = ContainerCgroup.locate(self.id, pid)
        return pid

    async def _launch(self, p: Process, runtime_call) -> int:
        """Await the runtime call that makes `p`'s process (create, exec), then start its IO copying; if either
        fails, `p`'s IO is closed and the error raised (a backend error mapped to its code)."""
        try:
            try:
                pid = await runtime_call
            except BackendError as e:
                raise backend_error(e) from None
            await p.io.start(self.io_nursery)
        except BaseException:
            with trio.move_on_after(5, shield=True):
                await p.io.aclose()
            raise
        return pid

    async def start(self, exec_id: str, sub, events) -> int:
        p = self.process(exec_id)
        async with p.lock:
            p.check(Op.START)
            if p.is_init and p.state is State.CREATED_CHECKPOINT:
                return await self._restore_init(p, sub, events)
            if p.is_init:
                return await self._start_init(p, events)
            if self.init.exited or self.init.state in (State.STOPPED, State.DELETED):
                raise FailedPrecondition(f"container {self.id} init process is not running")
            return await self._start_exec(p, sub, events)

    async def _start_init(self, p: Process, events) -> int:
        async with p.lifecycle:
            try:
                await self.backend.start(self.ref)
            except BackendError as e:
                raise backend_error(e) from None
            if p.state is State.CREATED:
                p.transition(Op.START)
            events.start(self.id, p.pid)
            await self._watch_oom(events)
        return p.pid

    async def _watch_oom(self, events) -> None:
        """The OOM watch starts with the init (as upstream); not finding the cgroup is only logged."""
        if self.cgroup is None:
            self.cgroup = ContainerCgroup.locate(self.id, self.init.pid)
        if self.cgroup is not None and self.oom is None:
            self.oom = OomWatcher.for_cgroup(self.id, self.cgroup.paths, lambda: events.oom(self.id))
            if self.oom is not None:
                await self.io_nursery.start(self.oom.run)

    async def _restore_init(self, p: Process, sub, events) -> int:
        async with p.lifecycle:
            spec = rt.RestoreSpec(
                id=self.id, bundle=self.bundle, pid_file=os.path.join(self.bundle, "init.pid"), criu=self.restore,
                stdio=rt.StdioFds(*p.io.runtime_stdio), console_socket=p.io.console_socket_path,
                no_pivot=self._no_pivot,
            )
            try:
                pid = await self.backend.restore(spec)
            except BackendError as e:
                raise backend_error(e) from None  # still created-from-checkpoint, as upstream
            p.pid = pid
            ex = sub.reaped(pid)
            if ex is None:
                self._register_pid(pid, p)
            await p.io.start(self.io_nursery)
            p.transition(Op.START)
            events.start(self.id, pid)
            if ex is None:
                await self._watch_oom(events)
        if ex is not None:
            await self.handle_exit(p, ex.status, ex.timestamp, events)
        return pid

    async def _start_exec(self, p: Process, sub, events) -> int:
        # Counted from before the runtime call, as upstream's runningExecs: an init exit reaped while an exec is
        # being started is held until that start ended, so the container still reads as running meanwhile
        # (containerd 2.1's TestIssue10589 creates a second exec right after killing the init).
        self._exec_started()
        try:
            p.io = await self._io_factory(p.stdio, p)
        except BaseException:
            self._exec_finished()
            raise
        async with p.lifecycle:
            spec = rt.ExecSpec(
                id=self.id, exec_id=p.exec_id, bundle=self.bundle, process_json=p.spec,
                pid_file=os.path.join(self.bundle, f"{p.exec_id}.pid"),
                stdio=rt.StdioFds(*p.io.runtime_stdio), console_socket=p.io.console_socket_path,
            )
            try:
                pid = await self._launch(p, self.backend.exec(spec))
            except BaseException:
                # upstream releases the exec's waiters with status 0 when its exec failed; it stays created
                p.release_waiters()
                self._exec_finished()
                raise
            p.pid = pid
            p.transition(Op.START)
            ex = sub.reaped(pid)
            if ex is None:
                self._register_pid(pid, p)
            events.exec_started(self.id, p.exec_id, pid)
        if ex is not None:
            # exited before we could register it: handle the exit like the exit loop would
            await self.handle_exit(p, ex.status, ex.timestamp, events)
        return pid

    # -- exec bookkeeping -----------------------------------------------------------------
    def add_exec(self, exec_id: str, stdio: StdioConfig, spec: bytes) -> Process:
        if exec_id in self.execs:
            raise AlreadyExists(f"id {exec_id}: already exists")
        self.init.check(Op.EXEC)
        p = Process(self.id, exec_id, stdio, spec)
        self.execs[exec_id] = p
        return p

    def _exec_started(self) -> None:
        if not self._running_execs:
            self._execs_idle = trio.Event()
        self._running_execs += 1

    def _exec_finished(self) -> None:
        self._running_execs -= 1
        if not self._running_execs:
            self._execs_idle.set()

    # -- exits ----------------------------------------------------------------------------
    async def handle_exit(self, p: Process, status: int, at: float, events) -> None:
        """Run by the exit loop (in the IO nursery) for a reaped process of this container. Never raises and
        never loses the exit: if draining its stdio or OOM events fails, the failure is logged and the process
        is still marked exited, its waiters released and its /tasks/exit published."""
        try:
            await self._handle_exit(p, status, at, events)
        except Exception:  # noqa: BLE001 - this container's trouble must not reach the daemon's other tasks
            log.exception("container %s: handling the exit of %s (pid %d) failed", self.id, p.id, p.pid)
            if not p.exited:
                p.set_exited(status, at)
                events.exit(self.id, p.id, p.pid, status, at)
                if not p.is_init:
                    self._exec_finished()

    async def _handle_exit(self, p: Process, status: int, at: float, events) -> None:
        if p.is_init:
            await self._kill_leftovers()
            await self._thaw(p)
            with trio.move_on_after(IO_DRAIN_TIMEOUT * 2):
                await self._execs_idle.wait()  # the init's exit is the container's last
        if p.io is not None:
            await p.io.drain(IO_DRAIN_TIMEOUT)
        if p.is_init and self.oom is not None:
            await self.oom.drain(killed=status == 128 + signal.SIGKILL)  # /tasks/oom before /tasks/exit
        async with p.lifecycle:
            p.set_exited(status, at)
            events.exit(self.id, p.id, p.pid, status, at)
        if not p.is_init:
            self._exec_finished()

    async def _kill_leftovers(self) -> None:
        """Processes of a container without its own pid namespace outlive the init: kill them."""
        if self.shares_host_pidns:
            try:
                await self.backend.kill(self.ref, signal.SIGKILL, all=True)
            except BackendError as e:
                log.debug("kill --all after init exit of %s: %s", self.id, e)

    async def _thaw(self, p: Process) -> None:
        """The init exited while paused (or pausing): resume the cgroup, errors only logged."""
        if p.state not in (State.PAUSED, State.PAUSING):
            return
        async with p.lock:  # a pause in flight finishes first
            if p.state is not State.PAUSED:
                return
            try:
                await self.backend.resume(self.ref)
            except BackendError as e:
                log.debug("resume after the exit of paused %s: %s", self.id, e)

    # -- checkpoint -----------------------------------------------------------------------
    async def checkpoint(self, req: ckpt.CheckpointRequest) -> None:
        plan = ckpt.plan_checkpoint(req, self.bundle)
        p = self.init
        async with p.lock:
            p.check(Op.CHECKPOINT)
            try:
                await self.backend.checkpoint(self.ref, plan.spec)
            except BackendError as e:
                raise backend_error(e) from None
            finally:
                with trio.move_on_after(30, shield=True):
                    await ckpt.remove_work(plan.remove_work)
        if plan.mirror_to:
            images = plan.spec.criu.image_path
            try:
                await ckpt.mirror_images(images, plan.mirror_to)
            except OSError as e:
                raise Unknown(f"checkpoint written to {images}, but not to image_path {plan.mirror_to}: {e}") from None

    @functools.cached_property
    def shares_host_pidns(self) -> bool:
        """No pid namespace of its own in config.json (read once, at the init's exit)."""
        try:
            with open(os.path.join(self.bundle, "config.json"), "rb") as f:
                spec = json.load(f)
        except (OSError, ValueError):
            return False
        namespaces = spec.get("linux", {}).get("namespaces", [])
        return not any(ns.get("type") == "pid" and not ns.get("path") for ns in namespaces)

    # -- kill / delete --------------------------------------------------------------------
    async def kill(self, exec_id: str, sig: int, all: bool) -> None:
        p = self.process(exec_id)
        p.check(Op.KILL)
        if p.is_init:
            async with p.lifecycle:  # see the module rules: the exit this causes waits for our reply
                try:
                    await self.backend.kill(self.ref, sig, all=all)
                except BackendError as e:
                    raise backend_error(e) from None
            return
        if p.exited:
            raise NotFound(PROCESS_FINISHED)
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            raise NotFound(PROCESS_FINISHED) from None

    async def delete_exec(self, exec_id: str) -> Process:
        p = self.process(exec_id)
        async with p.lock:
            p.transition(Op.DELETE)
            if p.io is not None:
                await p.io.aclose()
            try:
                os.unlink(os.path.join(self.bundle, f"{exec_id}.pid"))
            except FileNotFoundError:
                pass
            del self.execs[exec_id]
        return p

    async def delete_init(self) -> Process:
        p = self.init
        async with p.lock:
            p.check(Op.DELETE)
            if p.io is not None:
                await p.io.drain(IO_DRAIN_TIMEOUT)
            try:
                await self.backend.delete(self.ref, force=False)
            except ContainerNotFound:
                pass
            except BackendError as e:
                raise backend_error(e) from None
            p.transition(Op.DELETE)
            await self.release()
        return p

    async def release(self) -> None:
        """Close all IO and unmount the rootfs (also on failed creates). Idempotent."""
        for proc in (self.init, *self.execs.values()):
            if proc.io is not None:
                with trio.move_on_after(15, shield=True):
                    await proc.io.aclose()
        if self.rootfs is not None:
            from shim.linux.mount import unmount_all

            try:
                unmount_all(self.rootfs)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.EINVAL):
                    log.warning("unmounting %s: %s", self.rootfs, e)
            self.rootfs = None
