"""The shim's table of containers, its exit loop, and the task operations in domain terms.

Rules:
- `Tasks` owns the container table and the pid -> process map. Only `run` consumes the reaper's
  permanent subscription; it routes each exit to the process that owns the pid, and ignores the rest
  (runtime CLI children, whose callers have their own subscriptions, and orphans reparented to us).
- Each container gets a nursery for its IO and exit handling, opened in the daemon's task nursery
  when the container is created and closed when it is deleted.
- A failing container never affects another: every error is raised to the caller of that request.
- `idle` is set whenever no container is left (Shutdown's condition).
- An operation the container's backend lacks (runtime.base.Capability) is refused with Unimplemented before
  anything runs or changes state; a create from a checkpoint is refused before its rootfs is mounted.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import trio

from runtime.base import Capability
from runtime.errors import BackendError
from shim.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unimplemented, Unknown
from shim.linux.mount import Mount, mount_all
from shim.runc.cleanup import STATE_FILE, write_state
from shim.runc.task import checkpoint as ckpt
from shim.runc.task.container import Container
from shim.runc.task.errmap import backend_error
from shim.io import StdioConfig
from shim.runc.task.process import Process
from shim.runc.task.states import Op, State

log = logging.getLogger(__name__)

# Creates of one shim (a group) run in parallel, never under a lock; at most this many backend creates start at
# once. A create holds its place in that bound until it ends or for CREATE_SLOT_HOLD seconds, whichever comes
# first: the bound smooths bursts, and a create hung in the runtime never queues the daemon's other creates.
CREATE_LIMIT = max(4, 2 * (os.cpu_count() or 1))
CREATE_SLOT_HOLD = 5.0


@dataclass(frozen=True)
class CreateRequest:
    id: str
    bundle: str
    rootfs: tuple[Mount, ...]
    stdio: StdioConfig
    checkpoint: str = ""
    parent_checkpoint: str = ""
    options: object = None  # shim.runc.options.RuntimeOptions
    raw_rootfs: Sequence = field(default=(), compare=False)  # protobuf mounts, echoed in the create event


class Tasks:
    def __init__(self, *, namespace: str, reaper, events, backend_factory, io_factory,
                 create_limit: int = CREATE_LIMIT) -> None:
        self.namespace = namespace
        self.reaper = reaper
        self.events = events
        self._backend_factory = backend_factory  # (RuntimeOptions, bundle) -> (RuntimeBackend, pyshim.json runtime)
        self._io_factory = io_factory  # async (StdioConfig, Process, Container) -> ProcessIO
        self.containers: dict[str, Container] = {}
        self._pids: dict[int, tuple[Container, Process]] = {}
        self._nursery: trio.Nursery | None = None
        self.idle = trio.Event()
        self.idle.set()
        self._creates = trio.CapacityLimiter(create_limit)

    # -- the daemon's tasks -----------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Own the containers' nurseries and route exits; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            with self.reaper.subscribe() as sub:
                task_status.started()
                while True:
                    ex = await sub.next()
                    entry = self._pids.pop(ex.pid, None)
                    if entry is None:
                        continue
                    container, proc = entry
                    container.io_nursery.start_soon(
                        container.handle_exit, proc, ex.status, ex.timestamp, self.events)

    @staticmethod
    async def _container_scope(closed: trio.Event, container_id: str, *,
                               task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The container's nursery, until the container is gone. Whatever fails in it is logged here and ends
        only this container's background tasks; the daemon and the other containers go on."""
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(nursery)
                await closed.wait()
                nursery.cancel_scope.cancel()
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("container %s: a background task failed; its other background tasks were stopped",
                          container_id)

    # -- lookup ------------------------------------------------------------------------------
    def get(self, id: str) -> Container:
        try:
            return self.containers[id]
        except KeyError:
            raise NotFound("container not created: not found") from None

    # -- operations --------------------------------------------------------------------------
    async def create(self, req: CreateRequest) -> int:
        if req.id in self.containers:
            raise AlreadyExists(f"container {req.id}: already exists")
        if not os.path.isdir(req.bundle):
            raise InvalidArgument(f"bundle {req.bundle} does not exist")
        backend, runtime = self._backend_factory(req.options, req.bundle)
        restore = None
        if req.checkpoint:
            _need(backend, Capability.RESTORE, "restore from a checkpoint")
            restore = ckpt.restore_criu(req.checkpoint, req.parent_checkpoint, req.bundle,
                                        req.options.criu_work_path if req.options else "")
        try:
            write_state(req.bundle, runtime)
        except OSError as e:  # nothing written, nothing mounted: the Create simply fails (a full disk, say)
            raise Unknown(f"cannot write {STATE_FILE} into the bundle {req.bundle}: {e.strerror or e}") from None
        rootfs = None
        if req.rootfs:
            rootfs = os.path.join(req.bundle, "rootfs")
            os.makedirs(rootfs, mode=0o711, exist_ok=True)
            mount_all(req.rootfs, rootfs)
        container = Container(
            id=req.id, bundle=req.bundle, namespace=self.namespace, backend=backend, stdio=req.stdio,
            rootfs=rootfs, io_factory=lambda stdio, proc: self._io_factory(stdio, proc, container),
            register_pid=lambda pid, proc: self._pids.__setitem__(pid, (container, proc)),
            options=req.options, restore=restore,
        )
        self.containers[req.id] = container
        self.idle = trio.Event() if self.idle.is_set() else self.idle
        try:
            container.io_nursery = await self._nursery.start(self._container_scope, container.closed, container.id)
            done = await self._create_slot()
            try:
                with self.reaper.subscribe() as sub:
                    pid = await container.create(sub, dict(
                        no_pivot=req.options.no_pivot_root if req.options else False,
                        no_new_keyring=req.options.no_new_keyring if req.options else False,
                    ))
                    early = sub.reaped(pid)
            finally:
                done.set()
        except BaseException:
            with trio.move_on_after(10, shield=True):
                await self._forget(container)
            raise
        self.events.create(req.id, req.bundle, req.raw_rootfs, req.stdio.stdin, req.stdio.stdout,
                           req.stdio.stderr, req.stdio.terminal, req.checkpoint, pid)
        if early is not None:
            container.io_nursery.start_soon(
                container.handle_exit, container.init, early.status, early.timestamp, self.events)
        return pid

    async def _create_slot(self) -> trio.Event:
        """Wait for a place among the creates (CREATE_LIMIT); it is given back when the returned event is set or
        after CREATE_SLOT_HOLD seconds, whichever comes first."""
        token = object()
        await self._creates.acquire_on_behalf_of(token)
        done = trio.Event()

        async def hold() -> None:
            try:
                with trio.move_on_after(CREATE_SLOT_HOLD):
                    await done.wait()
            finally:
                self._creates.release_on_behalf_of(token)

        self._nursery.start_soon(hold)
        return done

    async def _forget(self, container: Container, *, runtime_deleted: bool = False) -> None:
        """Drop the container from the table, releasing its IO and mounts; a container whose runtime delete did not
        run (a failed create) is force-deleted in the runtime first."""
        if not runtime_deleted:
            try:
                await container.backend.delete(container.ref, force=True)
            except BackendError as e:
                log.debug("cleanup delete of %s: %s", container.id, e)
        await container.release()
        container.closed.set()
        for pid in [pid for pid, (c, _) in self._pids.items() if c is container]:
            del self._pids[pid]
        self.containers.pop(container.id, None)
        if not self.containers:
            self.idle.set()

    async def start(self, id: str, exec_id: str) -> int:
        c = self.get(id)
        with self.reaper.subscribe() as sub:
            return await c.start(exec_id, sub, self.events)

    async def delete(self, id: str, exec_id: str) -> Process:
        c = self.get(id)
        if exec_id:
            return await c.delete_exec(exec_id)
        p = await c.delete_init()
        await self._forget(c, runtime_deleted=True)
        self.events.delete(id, p.pid, p.exit_status, p.exited_at)
        return p

    async def exec(self, id: str, exec_id: str, stdio: StdioConfig, spec: bytes) -> None:
        c = self.get(id)
        if c.init.state is State.PAUSED:
            raise FailedPrecondition("cannot exec in a paused state")
        if not spec:
            raise InvalidArgument("exec spec is empty: an OCI Process JSON is required")
        try:
            process = json.loads(spec)
        except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the parser goes
            raise InvalidArgument(f"exec spec is not valid JSON: {e}") from None
        if not isinstance(process, dict):
            raise InvalidArgument("exec spec is not a JSON object (an OCI Process)")
        if bool(process.get("terminal")) != stdio.terminal:  # the request decides, as in the Go shim
            process["terminal"] = stdio.terminal
            spec = json.dumps(process).encode()
        c.add_exec(exec_id, stdio, spec)
        self.events.exec_added(id, exec_id)

    async def kill(self, id: str, exec_id: str, sig: int, all: bool) -> None:
        await self.get(id).kill(exec_id, sig, all)

    async def pause(self, id: str) -> None:
        c = self.get(id)
        _need(c.backend, Capability.PAUSE, "pause")
        p = c.init
        async with p.lock:
            p.begin_pause()
            try:
                await c.backend.pause(c.ref)
            except BackendError as e:
                p.end_pause(paused=False)
                raise backend_error(e) from None
            p.end_pause(paused=True)
        self.events.paused(id)

    async def resume(self, id: str) -> None:
        c = self.get(id)
        _need(c.backend, Capability.PAUSE, "resume")
        p = c.init
        async with p.lock:
            p.check(Op.RESUME)
            try:
                await c.backend.resume(c.ref)
            except BackendError as e:
                raise backend_error(e) from None
            p.end_resume()
        self.events.resumed(id)

    async def update(self, id: str, resources_json: bytes) -> None:
        c = self.get(id)
        _need(c.backend, Capability.UPDATE, "update")
        try:
            if not isinstance(json.loads(resources_json or b"null"), dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as e:
            raise InvalidArgument(f"update resources must be an OCI LinuxResources JSON object: {e}") from None
        c.init.check(Op.UPDATE)
        try:
            await c.backend.update(c.ref, resources_json)
        except BackendError as e:
            raise backend_error(e) from None

    async def checkpoint(self, id: str, req: ckpt.CheckpointRequest) -> None:
        c = self.get(id)
        _need(c.backend, Capability.CHECKPOINT, "checkpoint")
        await c.checkpoint(req)

    async def pids(self, id: str) -> list[tuple[int, str]]:
        c = self.get(id)
        _need(c.backend, Capability.PS, "listing pids (ps)")
        try:
            pids = await c.backend.ps(c.ref)
        except BackendError as e:
            raise backend_error(e) from None
        by_pid = {p.pid: p.exec_id for p in c.execs.values() if p.pid}
        return [(pid, by_pid.get(pid, "")) for pid in pids]

    async def wait(self, id: str, exec_id: str) -> Process:
        p = self.get(id).process(exec_id)
        await p.wait()
        return p


def _need(backend, cap: Capability, what: str) -> None:
    if cap not in backend.capabilities:
        raise Unimplemented(f"runtime {backend.name!r} does not support {what}")
