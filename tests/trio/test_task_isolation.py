"""One container's failure stays with that container: the other containers of a daemon (a pod, or unrelated ones
sharing it) keep running, and no exit status is lost (shim/runc/task/tasks.py and container.py rules).

What is injected, per test: a stdio drain that raises an unexpected error at the exit; a background task of one
container that raises; a backend that raises something that is not a BackendError. Each time the other
container answers State, Wait and Delete as if nothing happened, and the failing one still reports its exit.
"""
from __future__ import annotations

import pytest
import trio

from protos import task_types_pb2
from protos import task_v2_pb2 as pb

from .taskfakes import FakeBackend, harness, settle


async def running(h, cid: str) -> int:
    pid = (await h.service.create(None, pb.CreateTaskRequest(id=cid, bundle=h.bundle(cid)))).pid
    await h.service.start(None, pb.StartRequest(id=cid))
    return pid


async def exits_cleanly(h, cid: str, pid: int, status: int) -> None:
    """``cid``'s init exits with ``status``: Wait answers it, State says stopped, Delete works."""
    h.exit(pid, status)
    with trio.fail_after(5):
        waited = await h.service.wait(None, pb.WaitRequest(id=cid))
    assert waited.exit_status == status
    state = await h.service.state(None, pb.StateRequest(id=cid))
    assert (state.status, state.exit_status) == (task_types_pb2.STOPPED, status)
    assert (await h.service.delete(None, pb.DeleteRequest(id=cid))).exit_status == status


class Boom(Exception):
    """Not an OSError, not a BackendError: a bug."""


async def test_a_failing_exit_drain_still_reports_the_exit_and_spares_the_neighbour(tmp_path):
    async with harness(tmp_path) as h:
        bad, good = await running(h, "bad"), await running(h, "good")
        bad_io = h.ios[0]

        async def drain(timeout):
            raise Boom("drain exploded")
        bad_io.drain = drain
        h.exit(bad, 137)
        with trio.fail_after(5):
            waited = await h.service.wait(None, pb.WaitRequest(id="bad"))
        assert waited.exit_status == 137  # the exit was not lost
        exits = [e for e in h.events.log if e[0] == "exit"]
        assert [e[:5] for e in exits] == [("exit", "bad", "bad", bad, 137)]  # published once
        await exits_cleanly(h, "good", good, 3)


async def test_a_raising_background_task_ends_only_its_container_tasks(tmp_path):
    async with harness(tmp_path) as h:
        await running(h, "bad")
        good = await running(h, "good")
        bad_container = h.tasks.get("bad")

        async def explode():
            raise Boom("a copy task's bug")
        bad_container.io_nursery.start_soon(explode)
        await settle()
        # The daemon's exit loop and the other container are untouched.
        await exits_cleanly(h, "good", good, 0)
        state = await h.service.state(None, pb.StateRequest(id="bad"))
        assert state.status == task_types_pb2.RUNNING


async def test_a_backend_that_raises_a_non_backend_error_fails_only_that_request(tmp_path):
    class Raising(FakeBackend):
        async def start(self, ref):
            if ref.id == "bad":
                raise Boom("plugin bug in start")
            await super().start(ref)

    async with harness(tmp_path, Raising()) as h:
        await h.service.create(None, pb.CreateTaskRequest(id="bad", bundle=h.bundle("bad")))
        with pytest.raises(Boom):
            await h.service.start(None, pb.StartRequest(id="bad"))  # the ttrpc server answers UNKNOWN
        good = await running(h, "good")
        await exits_cleanly(h, "good", good, 0)
        # the failing container can still be cleaned up
        await h.service.kill(None, pb.KillRequest(id="bad", signal=9))
        assert (await h.service.delete(None, pb.DeleteRequest(id="bad"))).exit_status == 0


async def test_a_normal_lifecycle_runs_the_runtime_once_per_step(tmp_path):
    """create, start, delete: no second (forced) runtime delete after a successful one."""
    async with harness(tmp_path) as h:
        pid = await running(h, "c1")
        await exits_cleanly(h, "c1", pid, 0)
        assert h.backend.ops() == ["create", "start", "delete"]
