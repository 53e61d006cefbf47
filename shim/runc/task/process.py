"""One process of a container: the init (exec_id "") or an exec.

Rules:
- A Process holds its state, pid, exit status and stdio. `lock` serialises its operations;
  `lifecycle` is held from "runtime start/exec returned" until its start event is queued, so the exit
  handler (which takes it too) can never publish an exit before the start event.
- Only the container's exit handler calls `set_exited`, and only once; `wait` returns after it.
- Times are float seconds since the epoch; None means "not exited" (sent as the zero Timestamp).
"""
from __future__ import annotations

import trio

from shim.io.config import StdioConfig as Stdio
from shim.runc.task import states
from shim.runc.task.states import Op, State

__all__ = ["Process", "Stdio"]


class Process:
    def __init__(self, container_id: str, exec_id: str, stdio: Stdio, spec: bytes = b"") -> None:
        self.container_id = container_id
        self.exec_id = exec_id
        self.stdio = stdio
        self.spec = spec  # exec: the OCI Process JSON
        self.state = State.CREATED
        self.pid = 0
        self.exit_status = 0
        self.exited_at: float | None = None
        self.io = None  # shim.io ProcessIO once prepared
        self.lock = trio.Lock()
        self.lifecycle = trio.Lock()
        self._exited = trio.Event()

    @property
    def id(self) -> str:
        """The id containerd uses for this process in events and State: exec id, or the container id."""
        return self.exec_id or self.container_id

    @property
    def is_init(self) -> bool:
        return not self.exec_id

    @property
    def table(self) -> dict:
        return states.INIT if self.is_init else states.EXEC

    def check(self, op: Op) -> State:
        return states.check(self.table, self.state, op)

    def transition(self, op: Op) -> None:
        self.state = self.check(op)

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def set_exited(self, status: int, at: float | None) -> None:
        if self._exited.is_set():
            return
        self.exit_status = status
        self.exited_at = at
        if self.state is not State.DELETED:
            self.state = State.STOPPED
        self._exited.set()

    def release_waiters(self) -> None:
        """A start that failed: waiters return (status 0, no exit time) and the state stays as it is, as
        upstream closes an exec's waitBlock and leaves it created (pkg/process/exec.go start)."""
        self._exited.set()

    async def wait(self) -> None:
        await self._exited.wait()
