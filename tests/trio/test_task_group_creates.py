"""Creates in one shim (a group) run in parallel, bounded by the task table's create limit.

A backend whose create waits on the test shows how many creates are inside the runtime at once: with no lock
across the runtime's create, as many as the limit are; never more. (The Go runc shim holds a lock across
`runc create` in a group, so its creates run one at a time.)
"""
from __future__ import annotations

import trio

from protos import task_v2_pb2 as pb

from .taskfakes import FakeBackend, harness


class GatedBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.inside = 0
        self.most = 0
        self.gate = trio.Event()

    async def create(self, spec):
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await self.gate.wait()
            return await super().create(spec)
        finally:
            self.inside -= 1


async def create_many(tmp_path, count: int, limit: int) -> GatedBackend:
    backend = GatedBackend()
    async with harness(tmp_path, backend) as h:
        h.tasks._creates.total_tokens = limit
        pids = []

        async def one(cid: str) -> None:
            pids.append((await h.service.create(None, pb.CreateTaskRequest(id=cid, bundle=h.bundle(cid)))).pid)

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, f"c{i}")
            await trio.testing.wait_all_tasks_blocked()
            assert backend.inside == min(count, limit)  # all the limit allows are in the runtime together
            backend.gate.set()
        assert len(set(pids)) == count
        assert sorted(h.tasks.containers) == sorted(f"c{i}" for i in range(count))
    return backend


async def test_group_creates_run_in_parallel_up_to_the_limit(tmp_path):
    backend = await create_many(tmp_path, 12, 5)
    assert backend.most == 5


async def test_fewer_creates_than_the_limit_all_run_at_once(tmp_path):
    backend = await create_many(tmp_path, 3, 5)
    assert backend.most == 3



class HungBackend(FakeBackend):
    """A backend whose creates of ids starting with "hung" never return (a runtime stuck in create)."""

    async def create(self, spec):
        if spec.id.startswith("hung"):
            await trio.sleep_forever()
        return await super().create(spec)


async def test_creates_hung_in_the_runtime_hold_their_places_only_for_a_while(tmp_path, autojump_clock):
    from shim.runc.task.tasks import CREATE_SLOT_HOLD
    async with harness(tmp_path, HungBackend()) as h:
        h.tasks._creates.total_tokens = 2
        async with trio.open_nursery() as nursery:
            for cid in ("hung1", "hung2"):
                nursery.start_soon(h.service.create, None, pb.CreateTaskRequest(id=cid, bundle=h.bundle(cid)))
            await trio.testing.wait_all_tasks_blocked()
            assert h.tasks._creates.borrowed_tokens == 2
            started = trio.current_time()
            with trio.fail_after(CREATE_SLOT_HOLD + 1):
                await h.service.create(None, pb.CreateTaskRequest(id="ok", bundle=h.bundle("ok")))
            assert trio.current_time() - started >= CREATE_SLOT_HOLD - 0.01  # the bound still held for a while
            assert "ok" in h.tasks.containers
            nursery.cancel_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert h.tasks._creates.borrowed_tokens == 0  # every place given back
