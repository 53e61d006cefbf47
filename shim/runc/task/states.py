"""Process state machines of the init and exec processes, as tables.

Rules:
- All transition logic lives here. `check(kind, state, op)` either returns the state the operation
  leads to (the same state when it does not change it) or raises: FailedPrecondition with a sentence
  for a forbidden operation, NotFound for any operation on a deleted process.
- The sentences are the runc shim's (pkg/process/*_state.go), so containerd users see familiar text;
  the codes are the ones containerd's errdefs expect (the runc shim sends most of these as Unknown).
- Exits are not operations: the exit handler moves a process to STOPPED with `exited()`.
- A signal for a process that is gone is NotFound with PROCESS_FINISHED, runc.v2's wire text byte for byte
  (``fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)``): containerd 2.x prints a NOT_FOUND
  message as sent, 1.6/1.7 strip a ``: not found`` suffix and add it back, so every version shows
  ``process already finished: not found`` as it does for runc.v2.
"""
from __future__ import annotations

import enum

from shim.errors import FailedPrecondition, NotFound


class State(enum.Enum):
    CREATED = "created"
    CREATED_CHECKPOINT = "created-checkpoint"  # init created from a checkpoint: Start runs the restore
    RUNNING = "running"
    PAUSING = "pausing"  # init while a pause call is in flight
    PAUSED = "paused"
    STOPPED = "stopped"
    DELETED = "deleted"


class Op(enum.Enum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    DELETE = "delete"
    KILL = "kill"
    EXEC = "exec"
    UPDATE = "update"
    CHECKPOINT = "checkpoint"
    RESIZE = "resize"


S, O = State, Op
PROCESS_FINISHED = "process already finished: not found"
OK = None  # the operation keeps the state

# (state, op) -> next state, OK, or the refusal sentence.
INIT: dict[tuple[State, Op], State | str | None] = {
    (S.CREATED, O.START): S.RUNNING,
    (S.CREATED, O.PAUSE): "cannot pause task in created state",
    (S.CREATED, O.RESUME): "cannot resume task in created state",
    (S.CREATED, O.DELETE): S.DELETED,
    (S.CREATED, O.KILL): OK,
    (S.CREATED, O.EXEC): OK,
    (S.CREATED, O.UPDATE): OK,
    (S.CREATED, O.CHECKPOINT): "cannot checkpoint a task in created state",
    (S.CREATED, O.RESIZE): OK,
    (S.CREATED_CHECKPOINT, O.START): S.RUNNING,
    (S.CREATED_CHECKPOINT, O.PAUSE): "cannot pause task in created state",
    (S.CREATED_CHECKPOINT, O.RESUME): "cannot resume task in created state",
    (S.CREATED_CHECKPOINT, O.DELETE): S.DELETED,
    (S.CREATED_CHECKPOINT, O.KILL): OK,  # nothing runs yet: the runtime answers "does not exist" (NotFound)
    (S.CREATED_CHECKPOINT, O.EXEC): "cannot exec in a created state",
    (S.CREATED_CHECKPOINT, O.UPDATE): OK,
    (S.CREATED_CHECKPOINT, O.CHECKPOINT): "cannot checkpoint a task in created state",
    (S.CREATED_CHECKPOINT, O.RESIZE): OK,
    (S.RUNNING, O.START): "cannot start a running process",
    (S.RUNNING, O.PAUSE): S.PAUSED,
    (S.RUNNING, O.RESUME): "cannot resume a running process",
    (S.RUNNING, O.DELETE): "cannot delete a running process",
    (S.RUNNING, O.KILL): OK,
    (S.RUNNING, O.EXEC): OK,
    (S.RUNNING, O.UPDATE): OK,
    (S.RUNNING, O.CHECKPOINT): OK,
    (S.RUNNING, O.RESIZE): OK,
    (S.PAUSING, O.START): "cannot start a pausing process",
    (S.PAUSING, O.PAUSE): "cannot pause a pausing container",
    (S.PAUSING, O.RESUME): "cannot resume a pausing container",
    (S.PAUSING, O.DELETE): "cannot delete a pausing process",
    (S.PAUSING, O.KILL): OK,
    (S.PAUSING, O.EXEC): "cannot exec in a pausing state",
    (S.PAUSING, O.UPDATE): OK,
    (S.PAUSING, O.CHECKPOINT): "cannot checkpoint a pausing container",
    (S.PAUSING, O.RESIZE): OK,
    (S.PAUSED, O.START): "cannot start a paused process",
    (S.PAUSED, O.PAUSE): "cannot pause a paused container",
    (S.PAUSED, O.RESUME): S.RUNNING,
    (S.PAUSED, O.DELETE): "cannot delete a paused process",
    (S.PAUSED, O.KILL): OK,
    (S.PAUSED, O.EXEC): "cannot exec in a paused state",
    (S.PAUSED, O.UPDATE): OK,
    (S.PAUSED, O.CHECKPOINT): OK,
    (S.PAUSED, O.RESIZE): OK,
    (S.STOPPED, O.START): "cannot start a stopped process",
    (S.STOPPED, O.PAUSE): "cannot pause a stopped container",
    (S.STOPPED, O.RESUME): "cannot resume a stopped container",
    (S.STOPPED, O.DELETE): S.DELETED,
    (S.STOPPED, O.KILL): OK,  # the runtime answers "not running": NotFound upstream
    (S.STOPPED, O.EXEC): "cannot exec in a stopped state",
    (S.STOPPED, O.UPDATE): "cannot update a stopped container",
    (S.STOPPED, O.CHECKPOINT): "cannot checkpoint a stopped container",
    (S.STOPPED, O.RESIZE): "cannot resize a stopped container",
}

EXEC: dict[tuple[State, Op], State | str | NotFound | None] = {
    (S.CREATED, O.START): S.RUNNING,
    (S.CREATED, O.DELETE): S.DELETED,
    (S.CREATED, O.KILL): "process not created",
    (S.CREATED, O.RESIZE): OK,
    (S.RUNNING, O.START): "cannot start a running process",
    (S.RUNNING, O.DELETE): "cannot delete a running process",
    (S.RUNNING, O.KILL): OK,
    (S.RUNNING, O.RESIZE): OK,
    (S.STOPPED, O.START): "cannot start a stopped process",
    (S.STOPPED, O.DELETE): S.DELETED,
    (S.STOPPED, O.KILL): NotFound(PROCESS_FINISHED),
    (S.STOPPED, O.RESIZE): "cannot resize a stopped container",
}


def check(table: dict, state: State, op: Op) -> State:
    """The state `op` leads to from `state`, or the error that refuses it."""
    if state is S.DELETED:
        raise NotFound(f"cannot {op.value} a deleted process")
    if (state, op) not in table:
        raise FailedPrecondition(f"cannot {op.value} a process in {state.value} state")
    nxt = table[(state, op)]
    if isinstance(nxt, str):
        raise FailedPrecondition(nxt)
    if isinstance(nxt, Exception):
        raise type(nxt)(nxt.message)
    return state if nxt is None else nxt
