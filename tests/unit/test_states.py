"""The process state tables: every transition the runc shim allows, and its refusals."""
import pytest

from shim.errors import FailedPrecondition, NotFound
from shim.runc.task.states import EXEC, INIT, Op, State, check

S, O = State, Op


@pytest.mark.parametrize("state,op,nxt", [
    (S.CREATED, O.START, S.RUNNING),
    (S.CREATED, O.DELETE, S.DELETED),
    (S.CREATED, O.KILL, S.CREATED),
    (S.RUNNING, O.PAUSE, S.PAUSED),
    (S.PAUSED, O.RESUME, S.RUNNING),
    (S.STOPPED, O.DELETE, S.DELETED),
    (S.RUNNING, O.EXEC, S.RUNNING),
    (S.PAUSED, O.KILL, S.PAUSED),
])
def test_init_allowed(state, op, nxt):
    assert check(INIT, state, op) is nxt


@pytest.mark.parametrize("state,op,sentence", [
    (S.CREATED, O.PAUSE, "cannot pause task in created state"),
    (S.RUNNING, O.START, "cannot start a running process"),
    (S.RUNNING, O.DELETE, "cannot delete a running process"),
    (S.PAUSED, O.DELETE, "cannot delete a paused process"),
    (S.PAUSED, O.EXEC, "cannot exec in a paused state"),
    (S.STOPPED, O.START, "cannot start a stopped process"),
    (S.STOPPED, O.UPDATE, "cannot update a stopped container"),
    (S.STOPPED, O.RESIZE, "cannot resize a stopped container"),
])
def test_init_refused(state, op, sentence):
    with pytest.raises(FailedPrecondition, match=sentence):
        check(INIT, state, op)


def test_deleted_is_not_found():
    for op in Op:
        with pytest.raises(NotFound, match=f"cannot {op.value} a deleted process"):
            check(INIT, S.DELETED, op)
        with pytest.raises(NotFound):
            check(EXEC, S.DELETED, op)


def test_exec_kill_codes():
    with pytest.raises(FailedPrecondition, match="process not created"):
        check(EXEC, S.CREATED, O.KILL)
    with pytest.raises(NotFound, match="process already finished"):
        check(EXEC, S.STOPPED, O.KILL)
    with pytest.raises(NotFound, match="process already finished"):  # fresh exception each time
        check(EXEC, S.STOPPED, O.KILL)
    assert check(EXEC, S.RUNNING, O.KILL) is S.RUNNING


def test_exec_has_no_pause():
    with pytest.raises(FailedPrecondition):
        check(EXEC, S.RUNNING, O.PAUSE)


def test_every_init_pair_is_decided():
    live = [s for s in State if s is not S.DELETED]
    missing = [(s, o) for s in live for o in Op if (s, o) not in INIT]
    assert missing == []
