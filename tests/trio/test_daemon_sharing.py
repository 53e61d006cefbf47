"""shim/daemon.py for a shared daemon: the ``-shared MAX:IDLE`` flag, ``shutdown`` versus ``stop``, and what ``build``
wires: the Task methods behind the occupancy and the Shard service, served by the real ttrpc server over memory
streams, with a stand-in task service."""
from __future__ import annotations

import pytest
import trio
from google.protobuf import empty_pb2

from protos import task_v2_pb2 as pb
from shim import daemon, sharing
from shim.daemon_log import current_task
from shim.flags import ShimFlags
from shim.manager import Manager
from shim.service import SERVICES, TaskService
from tests.trio.test_ttrpc_server_client import connected
from ttrpc.status import Code, StatusError


@pytest.mark.parametrize("value, expected", [
    ("", None),
    ("8:30", sharing.Sharing("", 8, 30.0)),
    ("1:0.5", sharing.Sharing("", 1, 0.5)),
    ("3", sharing.Sharing("", 3, 0.0)),
    ("3:", sharing.Sharing("", 3, 0.0)),
])
def test_shared_flag(value: str, expected) -> None:
    assert daemon.shared_settings(value) == expected


@pytest.mark.parametrize("value", ["0:30", "-1:30", "4:-1", "x:30", "4:soon", ":30", "4.5:30"])
def test_malformed_shared_flag_is_a_value_error(value: str) -> None:
    with pytest.raises(ValueError):
        daemon.shared_settings(value)


class StandInService(TaskService):
    """Create/Delete/Shutdown as a shim answers them, recording the task id each ran under."""

    def __init__(self, d: daemon.Daemon) -> None:
        self.daemon = d
        self.ran_under: list[tuple[str, str]] = []

    async def create(self, ctx, request):
        self.ran_under.append(("Create", current_task.get()))
        return pb.CreateTaskResponse(pid=100)

    async def delete(self, ctx, request):
        self.ran_under.append(("Delete", current_task.get()))
        return pb.DeleteResponse(pid=100)

    async def shutdown(self, ctx, request):
        self.daemon.shutdown()  # containerd sends Shutdown after every Delete
        return empty_pb2.Empty()


class StandInManager(Manager):
    name = "io.containerd.test.v1"

    def task_service(self, d: daemon.Daemon) -> TaskService:
        return StandInService(d)


def flags(shared: str = "") -> ShimFlags:
    return ShimFlags(namespace="ns", id="c1", address="/run/ctrd.sock", shared=shared)


async def test_shutdown_is_ignored_by_a_shared_daemon_stop_is_not() -> None:
    shared = daemon.build(StandInManager(), flags("4:30")).daemon
    assert shared.shared == sharing.Sharing("", 4, 30.0)
    shared.shutdown()
    assert not shared.shutting_down
    shared.stop()
    assert shared.shutting_down
    plain = daemon.build(StandInManager(), flags()).daemon
    assert plain.shared is None
    plain.shutdown()
    assert plain.shutting_down
    with trio.fail_after(1):
        await plain.wait_shutdown()


async def call_reserve(client, cid: str) -> sharing.ReserveResponse:
    return await client.call(sharing.SERVICE, sharing.METHOD, sharing.ReserveRequest(cid), sharing.ReserveResponse)


async def test_a_shared_daemon_serves_reserve_and_its_task_methods_behind_the_occupancy(autojump_clock) -> None:
    parts = daemon.build(StandInManager(), flags("2:30"))
    async with trio.open_nursery() as nursery:
        await nursery.start(parts.occupancy.run)
        async with connected(parts.server) as client:
            assert await call_reserve(client, "c2") == sharing.ReserveResponse(True)
            assert await call_reserve(client, "c3") == sharing.ReserveResponse(False, "full: 2 of 2 tasks")
            for cid, service in (("c1", SERVICES[0]), ("c2", SERVICES[1])):  # v2 and v3 alike
                await client.call(service, "Create", pb.CreateTaskRequest(id=cid, bundle=f"/b/{cid}"),
                                  pb.CreateTaskResponse)
            assert parts.occupancy.tasks == {"c1": "/b/c1", "c2": "/b/c2"} and parts.occupancy.reservations == {}
            for cid in ("c1", "c2"):
                await client.call(SERVICES[0], "Delete", pb.DeleteRequest(id=cid), pb.DeleteResponse)
                await client.call(SERVICES[0], "Shutdown", pb.ShutdownRequest(id=cid), empty_pb2.Empty)
            assert parts.occupancy.tasks == {}
            assert not parts.daemon.shutting_down            # Shutdown does not end a shared daemon ...
            t0 = trio.current_time()
            with trio.fail_after(31):
                await parts.daemon.wait_shutdown()           # ... its idle time does
            assert trio.current_time() - t0 == pytest.approx(30.0, abs=1e-9)
            assert await call_reserve(client, "c4") == sharing.ReserveResponse(False, "shutting down")
    assert parts.service.ran_under == [("Create", "c1"), ("Create", "c2"), ("Delete", "c1"), ("Delete", "c2")]


async def test_a_daemon_that_does_not_share_has_no_shard_service_and_never_idles_out(autojump_clock) -> None:
    parts = daemon.build(StandInManager(), flags())
    async with trio.open_nursery() as nursery:
        await nursery.start(parts.occupancy.run)
        async with connected(parts.server) as client:
            with pytest.raises(StatusError) as err:
                await call_reserve(client, "c2")
            assert err.value.code == Code.UNIMPLEMENTED
            await client.call(SERVICES[0], "Create", pb.CreateTaskRequest(id="c1", bundle="/b/c1"),
                              pb.CreateTaskResponse)
            await client.call(SERVICES[0], "Delete", pb.DeleteRequest(id="c1"), pb.DeleteResponse)
            await trio.sleep(3600)
            assert not parts.daemon.shutting_down and not parts.occupancy.closing
            await client.call(SERVICES[0], "Shutdown", pb.ShutdownRequest(id="c1"), empty_pb2.Empty)
            assert parts.daemon.shutting_down
    assert parts.service.ran_under == [("Create", "c1"), ("Delete", "c1")]
