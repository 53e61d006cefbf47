"""pyshim's task service on the wire: protobuf requests to domain calls and domain results to protobuf.

Rules:
- No logic here: every method unpacks its request, calls `Tasks` (shim/runc/task/tasks.py) and packs the
  answer. Errors propagate as shim.errors; the ttrpc dispatcher maps them to codes.
- Registered as Task v2 and v3 by the library's base class (shim/service.py).
- "Not exited" is sent as Go's zero time (shim/service.py ``set_time``).
- Stats answers the container's cgroup metrics in the Any containerd expects (shim/runc/task/stats.py).
- Checkpoint options: containerd.runc.v1.CheckpointOptions (what ctr, the client library and CRI send for
  any runtime) or none; another type is InvalidArgument.
- ``failpoints_enabled``: on for every task of a daemon made for containerd's failpoint tests (the binary named
  containerd-shim-runc-fp-v1, shim/runc/manager.py), else as the task's configuration says.
"""
from __future__ import annotations

import logging
import os

import trio
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError

from protos import runc_options_pb2, task_types_pb2
from protos import task_v2_pb2 as pb
from shim.errors import InvalidArgument
from shim.linux.mount import Mount
from shim.runc import config, options
from shim.runc.task.checkpoint import CheckpointRequest
from shim.io import StdioConfig
from shim.runc.task.process import Process
from shim.runc.task.states import Op, State
from shim.runc.task.stats import StatsCollector
from shim.runc.task.tasks import CreateRequest, Tasks
from shim.runc.typeurls import CHECKPOINT_OPTIONS, PROCESS_DETAILS, type_name
from shim.service import EMPTY, TaskService, set_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from shim.daemon import Daemon

log = logging.getLogger(__name__)


_STATUS = {
    State.CREATED: task_types_pb2.CREATED,
    State.CREATED_CHECKPOINT: task_types_pb2.CREATED,
    State.RUNNING: task_types_pb2.RUNNING,
    State.PAUSING: task_types_pb2.PAUSING,
    State.PAUSED: task_types_pb2.PAUSED,
    State.STOPPED: task_types_pb2.STOPPED,
    State.DELETED: task_types_pb2.STOPPED,
}


class RuncTaskService(TaskService):
    """All 17 Task methods over `Tasks`."""

    def __init__(self, tasks: Tasks, shutdown: Callable[[], None], *, failpoints: bool = False) -> None:
        self.tasks = tasks
        self._stats = StatsCollector()
        self._shutdown = shutdown  # Daemon.shutdown
        self._failpoints = failpoints  # on for every task (pyshim run as containerd-shim-runc-fp-v1)

    @classmethod
    def for_daemon(cls, daemon: Daemon, *, failpoints: bool = False) -> RuncTaskService:
        """The service of a new daemon: a task table whose backends and stdio are made per Create.
        ``failpoints``: containerd's failpoint annotations apply to every task, whatever the configuration."""
        from shim.io import ProcessIO
        from shim.runc.backend_factory import cleanup_info, make_backend

        launcher, namespace = daemon.launcher, daemon.namespace

        def backend_factory(opts: options.RuntimeOptions | None, bundle: str):
            backend = make_backend(opts or options.RuntimeOptions(), bundle, launcher, namespace)
            return backend, cleanup_info(backend, bundle)

        async def io_factory(stdio, proc, container):
            opts = container.options or options.RuntimeOptions()
            return await ProcessIO.prepare(stdio, container_id=container.id, namespace=namespace,
                                           io_uid=opts.io_uid, io_gid=opts.io_gid, spawner=launcher)

        tasks = Tasks(namespace=namespace, reaper=daemon.reaper, events=daemon.events,
                      backend_factory=backend_factory, io_factory=io_factory)
        return cls(tasks, daemon.shutdown, failpoints=failpoints)

    def failpoints_enabled(self, r: pb.CreateTaskRequest) -> bool:
        """Failpoint annotations apply when the daemon was made for them, or the task's configuration (the one
        its Create loads) says ``failpoints = true``; a configuration that does not load says no (the Create
        reports it)."""
        if self._failpoints:
            return True
        try:
            opts = options.parse(r.options.type_url, r.options.value) if r.HasField("options") else None
            cfg = config.load(opts.config_path, opts.config_body) if opts else config.load()
        except InvalidArgument:  # ConfigError too
            return False
        return cfg.failpoints

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The task table's exit loop and the containers' nurseries."""
        await self.tasks.run(task_status=task_status)

    # -- handlers ---------------------------------------------------------------------------
    async def state(self, ctx, r: pb.StateRequest) -> pb.StateResponse:
        c = self.tasks.get(r.id)
        p = c.process(r.exec_id)
        state = p.state
        if not p.is_init and state is State.RUNNING and c.init.state in (State.PAUSED, State.PAUSING):
            state = c.init.state
        resp = pb.StateResponse(
            id=p.id, bundle=c.bundle, pid=p.pid, status=_STATUS[state], stdin=p.stdio.stdin,
            stdout=p.stdio.stdout, stderr=p.stdio.stderr, terminal=p.stdio.terminal,
            exit_status=p.exit_status, exec_id=r.exec_id,
        )
        set_time(resp.exited_at, p.exited_at)
        return resp

    async def create(self, ctx, r: pb.CreateTaskRequest) -> pb.CreateTaskResponse:
        req = CreateRequest(
            id=r.id, bundle=r.bundle,
            rootfs=tuple(Mount(m.type, m.source, m.target, tuple(m.options)) for m in r.rootfs),
            stdio=StdioConfig(r.stdin, r.stdout, r.stderr, r.terminal),
            checkpoint=r.checkpoint, parent_checkpoint=r.parent_checkpoint,
            options=options.parse(r.options.type_url, r.options.value) if r.HasField("options") else None,
            raw_rootfs=list(r.rootfs),
        )
        return pb.CreateTaskResponse(pid=await self.tasks.create(req))

    async def start(self, ctx, r: pb.StartRequest) -> pb.StartResponse:
        return pb.StartResponse(pid=await self.tasks.start(r.id, r.exec_id))

    async def delete(self, ctx, r: pb.DeleteRequest) -> pb.DeleteResponse:
        return _exit_message(pb.DeleteResponse, await self.tasks.delete(r.id, r.exec_id), with_pid=True)

    async def pids(self, ctx, r: pb.PidsRequest) -> pb.PidsResponse:
        resp = pb.PidsResponse()
        for pid, exec_id in await self.tasks.pids(r.id):
            info = resp.processes.add(pid=pid)
            if exec_id:
                info.info.type_url = PROCESS_DETAILS
                info.info.value = runc_options_pb2.ProcessDetails(exec_id=exec_id).SerializeToString()
        return resp

    async def pause(self, ctx, r: pb.PauseRequest) -> empty_pb2.Empty:
        await self.tasks.pause(r.id)
        return EMPTY

    async def resume(self, ctx, r: pb.ResumeRequest) -> empty_pb2.Empty:
        await self.tasks.resume(r.id)
        return EMPTY

    async def checkpoint(self, ctx, r: pb.CheckpointTaskRequest) -> empty_pb2.Empty:
        self.tasks.get(r.id)
        await self.tasks.checkpoint(r.id, _checkpoint_request(r))
        return EMPTY

    async def kill(self, ctx, r: pb.KillRequest) -> empty_pb2.Empty:
        await self.tasks.kill(r.id, r.exec_id, r.signal, r.all)
        return EMPTY

    async def exec(self, ctx, r: pb.ExecProcessRequest) -> empty_pb2.Empty:
        await self.tasks.exec(r.id, r.exec_id, StdioConfig(r.stdin, r.stdout, r.stderr, r.terminal), r.spec.value)
        return EMPTY

    async def resize_pty(self, ctx, r: pb.ResizePtyRequest) -> empty_pb2.Empty:
        p = self.tasks.get(r.id).process(r.exec_id)
        p.check(Op.RESIZE)
        if p.io is not None:
            p.io.resize(r.width, r.height)
        return EMPTY

    async def close_io(self, ctx, r: pb.CloseIORequest) -> empty_pb2.Empty:
        p = self.tasks.get(r.id).process(r.exec_id)
        if p.io is not None:
            await p.io.close_stdin()
        return EMPTY

    async def update(self, ctx, r: pb.UpdateTaskRequest) -> empty_pb2.Empty:
        await self.tasks.update(r.id, r.resources.value)
        return EMPTY

    async def wait(self, ctx, r: pb.WaitRequest) -> pb.WaitResponse:
        return _exit_message(pb.WaitResponse, await self.tasks.wait(r.id, r.exec_id))

    async def stats(self, ctx, r: pb.StatsRequest) -> pb.StatsResponse:
        resp = pb.StatsResponse()
        resp.stats.type_url, resp.stats.value = await self._stats.collect(self.tasks.get(r.id))
        return resp

    async def connect(self, ctx, r: pb.ConnectRequest) -> pb.ConnectResponse:
        c = self.tasks.containers.get(r.id)
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=c.init.pid if c else 0)

    async def shutdown(self, ctx, r: pb.ShutdownRequest) -> empty_pb2.Empty:
        if not self.tasks.containers:
            self._shutdown()
        return EMPTY


def _checkpoint_request(r: pb.CheckpointTaskRequest) -> CheckpointRequest:
    if not r.HasField("options") or not r.options.type_url:
        return CheckpointRequest(path=r.path)
    if type_name(r.options.type_url) != CHECKPOINT_OPTIONS:
        raise InvalidArgument(f"unsupported checkpoint options type {r.options.type_url!r}: "
                              f"pyshim accepts {CHECKPOINT_OPTIONS} or none")
    try:
        o = runc_options_pb2.CheckpointOptions.FromString(r.options.value)
    except DecodeError as e:
        raise InvalidArgument(f"cannot decode checkpoint options: {e}") from None
    return CheckpointRequest(
        path=r.path, exit=o.exit, open_tcp=o.open_tcp, external_unix_sockets=o.external_unix_sockets,
        terminal=o.terminal, file_locks=o.file_locks, empty_namespaces=tuple(o.empty_namespaces),
        cgroups_mode=o.cgroups_mode, image_path=o.image_path, work_path=o.work_path,
    )


def _exit_message(cls, p: Process, with_pid: bool = False):
    m = cls(exit_status=p.exit_status)
    if with_pid:
        m.pid = p.pid
    set_time(m.exited_at, p.exited_at)
    return m
