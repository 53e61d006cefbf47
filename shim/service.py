"""The base of a shim's task service: containerd's Task API on ttrpc, every method UNIMPLEMENTED until overridden.

Rules:
- ``register`` puts every method under both ``containerd.task.v2.Task`` and ``containerd.task.v3.Task``: their
  messages are byte-identical (only the proto package differs), so the v2 classes decode both. containerd 2.3+
  calls v3 when ``start`` answered a BootstrapResult (shim/commands/bootstrap.py).
- A handler is ``async def name(self, ctx, request) -> response``: it gets the decoded request message and returns
  the response message; errors are raised as shim.errors (each carries its ttrpc code), anything else becomes
  UNKNOWN in the ttrpc server and is logged. ``ctx`` is the ttrpc call context (metadata, deadline).
- ``run`` is started in the daemon's root nursery before the server accepts calls: background work of the
  service (an exit loop, say) lives there. The default has none.
- ``failpoints_enabled`` is asked at every Create whether containerd's shim failpoint annotations apply to that
  task (shim/failpoint_wrap.py, wired by the daemon); the default says no.
- Only the method table, the defaults and two helpers every shim needs live here (``EMPTY``, the reply of the
  methods that answer nothing; ``set_time``, which writes "not exited" as Go's zero time, as the Go shim does:
  containerd 2.x turns an absent Timestamp into the Unix epoch, not into the zero time); what a method does is
  the subclass's business.
"""
from __future__ import annotations

import trio
from google.protobuf import empty_pb2

from protos import task_v2_pb2 as pb
from shim.errors import Unimplemented
from ttrpc.server import Method, Server

__all__ = ["EMPTY", "GO_ZERO_TIME", "SERVICES", "TaskService", "set_time"]

SERVICES = ("containerd.task.v2.Task", "containerd.task.v3.Task")
GO_ZERO_TIME = -62135596800  # time.Time{} as a protobuf Timestamp's seconds
EMPTY = empty_pb2.Empty()


def set_time(timestamp, when: float | None) -> None:
    """Fill a protobuf Timestamp from seconds since the epoch; None ("not exited") is Go's zero time."""
    if when is None:
        timestamp.seconds = GO_ZERO_TIME
    else:
        timestamp.FromNanoseconds(int(when * 1e9))

# method name -> (request class, handler attribute)
METHODS = {
    "State": (pb.StateRequest, "state"),
    "Create": (pb.CreateTaskRequest, "create"),
    "Start": (pb.StartRequest, "start"),
    "Delete": (pb.DeleteRequest, "delete"),
    "Pids": (pb.PidsRequest, "pids"),
    "Pause": (pb.PauseRequest, "pause"),
    "Resume": (pb.ResumeRequest, "resume"),
    "Checkpoint": (pb.CheckpointTaskRequest, "checkpoint"),
    "Kill": (pb.KillRequest, "kill"),
    "Exec": (pb.ExecProcessRequest, "exec"),
    "ResizePty": (pb.ResizePtyRequest, "resize_pty"),
    "CloseIO": (pb.CloseIORequest, "close_io"),
    "Update": (pb.UpdateTaskRequest, "update"),
    "Wait": (pb.WaitRequest, "wait"),
    "Stats": (pb.StatsRequest, "stats"),
    "Connect": (pb.ConnectRequest, "connect"),
    "Shutdown": (pb.ShutdownRequest, "shutdown"),
}


def _unimplemented(method: str):
    raise Unimplemented(f"{method} is not implemented by this shim")


class TaskService:
    """containerd's Task service. Subclass it and override the methods the shim supports."""

    def methods(self) -> dict[str, Method]:
        """The ttrpc method table: every Task method bound to this object's handler."""
        return {name: Method(request, getattr(self, attribute)) for name, (request, attribute) in METHODS.items()}

    def register(self, server: Server) -> None:
        """Serve this object's methods as Task v2 and v3 on ``server``."""
        methods = self.methods()
        for service in SERVICES:
            server.register(service, methods)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Background work of the service, run in the daemon's root nursery until shutdown. Default: none."""
        task_status.started()

    def failpoints_enabled(self, request: pb.CreateTaskRequest) -> bool:
        """Whether containerd's shim failpoint annotations apply to the task this Create makes
        (shim/failpoint_wrap.py; a test facility, so a shim turns it on from its configuration). Default: no."""
        return False

    async def state(self, ctx, request: pb.StateRequest) -> pb.StateResponse:
        """A process's status, pid, stdio and exit."""
        _unimplemented("State")

    async def create(self, ctx, request: pb.CreateTaskRequest) -> pb.CreateTaskResponse:
        """Create the container and its init process (not started yet); answer its pid."""
        _unimplemented("Create")

    async def start(self, ctx, request: pb.StartRequest) -> pb.StartResponse:
        """Start the init (empty exec_id) or an exec; answer its pid."""
        _unimplemented("Start")

    async def delete(self, ctx, request: pb.DeleteRequest) -> pb.DeleteResponse:
        """Delete an exited process (the init: the whole container); answer its exit."""
        _unimplemented("Delete")

    async def pids(self, ctx, request: pb.PidsRequest) -> pb.PidsResponse:
        """The processes of the container (containerd 2.1+ treats an empty list as a leaked shim at restart)."""
        _unimplemented("Pids")

    async def pause(self, ctx, request: pb.PauseRequest):
        """Freeze the container."""
        _unimplemented("Pause")

    async def resume(self, ctx, request: pb.ResumeRequest):
        """Thaw the container."""
        _unimplemented("Resume")

    async def checkpoint(self, ctx, request: pb.CheckpointTaskRequest):
        """Write a checkpoint of the container."""
        _unimplemented("Checkpoint")

    async def kill(self, ctx, request: pb.KillRequest):
        """Send a signal to a process (or, with ``all``, to every process of the container)."""
        _unimplemented("Kill")

    async def exec(self, ctx, request: pb.ExecProcessRequest):
        """Add an exec process (started by a later Start)."""
        _unimplemented("Exec")

    async def resize_pty(self, ctx, request: pb.ResizePtyRequest):
        """Resize a process's terminal."""
        _unimplemented("ResizePty")

    async def close_io(self, ctx, request: pb.CloseIORequest):
        """Close a process's stdin."""
        _unimplemented("CloseIO")

    async def update(self, ctx, request: pb.UpdateTaskRequest):
        """Change the container's resources."""
        _unimplemented("Update")

    async def wait(self, ctx, request: pb.WaitRequest) -> pb.WaitResponse:
        """Wait for a process to exit; answer its exit."""
        _unimplemented("Wait")

    async def stats(self, ctx, request: pb.StatsRequest) -> pb.StatsResponse:
        """The container's resource usage."""
        _unimplemented("Stats")

    async def connect(self, ctx, request: pb.ConnectRequest) -> pb.ConnectResponse:
        """The shim's pid and the task's init pid (0 for an unknown task, as the Go shim answers)."""
        _unimplemented("Connect")

    async def shutdown(self, ctx, request: pb.ShutdownRequest):
        """containerd is done with a task: exit when no task is left (``Daemon.shutdown``)."""
        _unimplemented("Shutdown")
