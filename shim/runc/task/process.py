"""One process of a container: the init (exec_id "") or an exec.

Rules:
- A Process holds its state, pid, exit status and stdio. `lock` serialises its operations;
  `lifecycle` is held from "runtime start/exec returned" until its start event is queued, so the exit
  handler (which takes it too) can never publish an exit before the start event.
- The state changes here only: `transition` (the tables of states.py), the pause bracket (`begin_pause`,
  `end_pause`, `end_resume`: a pause holds the intermediate PAUSING while the runtime works), and `set_exited`.
- Only the container's exit handler calls `set_exited`, and only once; `wait` returns after it.
- Times are float seconds since the epoch; None means "not exited" (sent as the zero Timestamp).
"""
from __future__ import annotations

import trio

from shim.io import StdioConfig
from shim.runc.task import states
from shim.runc.task.states import Op, State

__all__ = ["Process"]


class Process:
    def __init__(self, container_id: str, exec_id: str, stdio: StdioConfig, spec: bytes = b"",
                 state: State = State.CREATED) -> None:
        self.container_id = container_id
        self.exec_id = exec_id
        self.stdio = stdio
        self.spec = spec  # exec: the OCI Process JSON
        self.state = state  # CREATED, or CREATED_CHECKPOINT for an init created from a checkpoint
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

    def begin_pause(self) -> None:
        """A pause starts (refused as the table says): PAUSING until `end_pause`."""
        self.check(Op.PAUSE)
        self.state = State.PAUSING

    def end_pause(self, paused: bool) -> None:
        """The runtime's pause returned (``paused``) or failed; an init that exited meanwhile stays STOPPED."""
        if not self.exited:
            self.state = State.PAUSED if paused else State.RUNNING

    def end_resume(self) -> None:
        """The runtime's resume returned (after `check(Op.RESUME)`); an exited init stays STOPPED."""
        if not self.exited:
            self.state = self.check(Op.RESUME)

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
