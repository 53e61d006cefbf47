"""The pychroot shim's Task service: containerd's requests to Container calls, and the answers back.

Rules:
- A subclass of the library's ``TaskService``, which serves it as Task v2 and v3. Pause, Resume, Checkpoint,
  Update, Stats and ResizePty are left to the base class: UNIMPLEMENTED.
- The container table lives here. ``run`` (started by the library in the daemon's root nursery) owns the
  nursery of every stdio copy and exit watcher. Shutdown lets the daemon exit once the table is empty.
- Create mounts ``request.rootfs`` at ``<bundle>/rootfs`` (shim.linux.mount), reads config.json, prepares the
  init's stdio and starts nothing. It answers pid 0, as the runc shim does for a task created from a
  checkpoint: containerd takes the pid from Start (``/tasks/create`` carries 0 too).
- "Not exited" is sent as Go's zero time (seconds -62135596800), as the Go shim sends it: containerd 2.x would
  read an absent Timestamp as the Unix epoch.
- Exec pids in Pids carry containerd.runc.v1.ProcessDetails, the one info type ``ctr task ps`` decodes.
"""

from __future__ import annotations

import os

import trio

from chrootshim import bundle
from chrootshim.container import Container, Process, prepare_io
from chrootshim.spec import Tools, parse_exec, parse_process
from protos import runc_options_pb2, task_types_pb2
from protos import task_v2_pb2 as pb
from shim import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, TaskService, Unimplemented, Unknown
from shim.io import StdioConfig
from shim.service import EMPTY, set_time
from shim.linux.mount import Mount, mount_all

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shim import Daemon

__all__ = ["ChrootTaskService"]

PROCESS_DETAILS = "containerd.runc.v1.ProcessDetails"
STATUS = {"created": task_types_pb2.CREATED, "running": task_types_pb2.RUNNING,
          "stopped": task_types_pb2.STOPPED, "deleted": task_types_pb2.STOPPED}


def _exited_at(message, p: Process):
    set_time(message.exited_at, p.exited_at)
    return message


class ChrootTaskService(TaskService):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.containers: dict[str, Container] = {}
        self._nursery: trio.Nursery | None = None
        self._tools: Tools | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def _get(self, id: str) -> Container:
        try:
            return self.containers[id]
        except KeyError:
            raise NotFound("container not created: not found") from None

    # -- create and start ------------------------------------------------------------------------------------
    async def create(self, ctx, r: pb.CreateTaskRequest) -> pb.CreateTaskResponse:
        if r.id in self.containers:
            raise AlreadyExists(f"container {r.id}: already exists")
        if r.checkpoint:
            raise Unimplemented("the pychroot shim cannot restore checkpoints")
        if self._tools is None:
            try:
                self._tools = Tools.find()
            except FileNotFoundError as exc:
                raise FailedPrecondition(str(exc)) from None
        try:
            config = bundle.load_config(r.bundle)
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"bundle {r.bundle}: {exc}") from None
        init = Process(r.id, "", StdioConfig(r.stdin, r.stdout, r.stderr, r.terminal),
                       parse_process(config.get("process"), terminal=r.terminal))
        container = Container(daemon=self.daemon, tools=self._tools, nursery=self._nursery, id=r.id,
                              bundle_dir=r.bundle, root="", mounted=False, init=init)
        try:
            if r.rootfs:
                target = os.path.join(r.bundle, "rootfs")
                os.makedirs(target, mode=0o711, exist_ok=True)
                mount_all([Mount(m.type, m.source, m.target, tuple(m.options)) for m in r.rootfs], target)
                container.mounted = True
            container.root = bundle.root_dir(r.bundle, config)
            if not os.path.isdir(container.root):
                raise InvalidArgument(f"the container's root {container.root} is not a directory")
            init.io = await prepare_io(self.daemon, r.id, init.stdio)
        except BaseException as exc:
            container.release()
            if isinstance(exc, ValueError):
                raise InvalidArgument(str(exc)) from None
            if isinstance(exc, OSError):
                raise Unknown(f"failed to mount rootfs component: {exc}") from None
            raise
        self.containers[r.id] = container
        self.daemon.events.create(r.id, r.bundle, r.rootfs, r.stdin, r.stdout, r.stderr, r.terminal,
                                  r.checkpoint, 0)
        return pb.CreateTaskResponse(pid=0)

    async def start(self, ctx, r: pb.StartRequest) -> pb.StartResponse:
        return pb.StartResponse(pid=await self._get(r.id).start(r.exec_id))

    async def exec(self, ctx, r: pb.ExecProcessRequest) -> None:
        c = self._get(r.id)
        c.add_exec(r.exec_id, StdioConfig(r.stdin, r.stdout, r.stderr, r.terminal),
                   parse_exec(r.spec.value, terminal=r.terminal))
        self.daemon.events.exec_added(r.id, r.exec_id)
        return EMPTY

    # -- inspect ---------------------------------------------------------------------------------------------
    async def state(self, ctx, r: pb.StateRequest) -> pb.StateResponse:
        c = self._get(r.id)
        p = c.process(r.exec_id)
        return _exited_at(pb.StateResponse(
            id=p.id, bundle=c.bundle, pid=p.pid, status=STATUS[p.state], stdin=p.stdio.stdin,
            stdout=p.stdio.stdout, stderr=p.stdio.stderr, terminal=p.stdio.terminal, exit_status=p.exit_status,
            exec_id=r.exec_id), p)

    async def pids(self, ctx, r: pb.PidsRequest) -> pb.PidsResponse:
        resp = pb.PidsResponse()
        for pid, exec_id in self._get(r.id).pids():
            info = resp.processes.add(pid=pid)
            if exec_id:
                info.info.type_url = PROCESS_DETAILS
                info.info.value = runc_options_pb2.ProcessDetails(exec_id=exec_id).SerializeToString()
        return resp

    async def wait(self, ctx, r: pb.WaitRequest) -> pb.WaitResponse:
        p = self._get(r.id).process(r.exec_id)
        await p.wait()
        return _exited_at(pb.WaitResponse(exit_status=p.exit_status), p)

    async def connect(self, ctx, r: pb.ConnectRequest) -> pb.ConnectResponse:
        c = self.containers.get(r.id)
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=c.init.pid if c else 0)

    # -- control ---------------------------------------------------------------------------------------------
    async def kill(self, ctx, r: pb.KillRequest) -> None:
        await self._get(r.id).kill(r.exec_id, r.signal, r.all)
        return EMPTY

    async def close_io(self, ctx, r: pb.CloseIORequest) -> None:
        p = self._get(r.id).process(r.exec_id)
        if p.io is not None:
            await p.io.close_stdin()
        return EMPTY

    async def delete(self, ctx, r: pb.DeleteRequest) -> pb.DeleteResponse:
        c = self._get(r.id)
        if r.exec_id:
            p = await c.delete_exec(r.exec_id)
        else:
            p = await c.delete_init()
            del self.containers[r.id]
            self.daemon.events.delete(r.id, p.pid, p.exit_status, p.exited_at)
        return _exited_at(pb.DeleteResponse(pid=p.pid, exit_status=p.exit_status), p)

    async def shutdown(self, ctx, r: pb.ShutdownRequest) -> None:
        if not self.containers:
            self.daemon.shutdown()
        return EMPTY
