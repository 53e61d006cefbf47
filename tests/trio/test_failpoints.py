"""shim/failpoint_wrap.py: containerd's shim failpoint annotations in front of the Task methods, per task, served by
the real ttrpc server (daemon.build's wiring, over memory streams) with a stand-in task service; trio's autojump
clock makes delays exact and instant. A panic really ends the process: that one runs in a child interpreter."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from google.protobuf import empty_pb2

from protos import task_v2_pb2 as pb
from shim import daemon
from shim.failpoint_wrap import PREFIX, RETIRED_MAX, Failpoints, parse_annotations
from shim.flags import ShimFlags
from shim.manager import Manager
from shim.service import SERVICES, TaskService
from tests.trio.test_ttrpc_server_client import connected
from ttrpc.client import Client
from ttrpc.status import Code, StatusError

TASK = SERVICES[0]
REPO = Path(__file__).resolve().parents[2]


class Crashed(Exception):
    """What the injected crash raises instead of ending the test process."""


def answering(method: str, response):
    """A handler that records (method, id, time) and answers ``response``."""
    async def handler(self, ctx, request):
        self.ran.append((method, request.id, trio.current_time()))
        return response
    return handler


class StandIn(TaskService):
    """Create, Start, Kill, Delete, Shutdown answered at once; each records (method, id, time)."""

    def __init__(self, enabled: bool = True) -> None:
        self.ran: list[tuple[str, str, float]] = []
        self.enabled = enabled

    def failpoints_enabled(self, request) -> bool:
        return self.enabled

    create = answering("Create", pb.CreateTaskResponse(pid=100))
    start = answering("Start", pb.StartResponse(pid=100))
    kill = answering("Kill", empty_pb2.Empty())
    delete = answering("Delete", pb.DeleteResponse(pid=100))
    shutdown = answering("Shutdown", empty_pb2.Empty())

    def methods_ran(self) -> list[tuple[str, str]]:
        return [(m, i) for m, i, _ in self.ran]


class StandInManager(Manager):
    name = "io.containerd.test.v1"

    def __init__(self, service: StandIn) -> None:
        self.service = service

    def task_service(self, d: daemon.Daemon) -> TaskService:
        return self.service


def bundle(tmp_path: Path, task: str, failpoints: dict[str, str], **other: str) -> str:
    path = tmp_path / task
    path.mkdir()
    annotations = {PREFIX + method: value for method, value in failpoints.items()} | other
    (path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "annotations": annotations}))
    return str(path)


@asynccontextmanager
async def served(service: StandIn, shared: str = "") -> AsyncIterator[tuple[daemon.Parts, Client]]:
    """daemon.build's parts for ``service`` and a client of its server; a minute (of trio's clock) at most."""
    parts = daemon.build(StandInManager(service), ShimFlags(namespace="ns", id="a", address="/x", shared=shared))
    with trio.fail_after(60):
        async with connected(parts.server) as client:
            yield parts, client


async def call(client, method: str, request, response_type=empty_pb2.Empty, **kw):
    return await client.call(TASK, method, request, response_type, **kw)


async def create(client, task: str, path: str):
    return await call(client, "Create", pb.CreateTaskRequest(id=task, bundle=path), pb.CreateTaskResponse)


async def start(client, task: str, **kw):
    return await call(client, "Start", pb.StartRequest(id=task), pb.StartResponse, **kw)


async def expect_status(code: Code, message: str, awaitable) -> None:
    with pytest.raises(StatusError) as info:
        await awaitable
    assert (info.value.code, str(info.value)) == (code, message)


# -- each type, end to end through the daemon's server ------------------------------------------------------------

async def test_error_answers_unknown_with_the_message_and_skips_the_handler_until_its_count_is_used(tmp_path) -> None:
    service = StandIn()
    async with served(service) as (parts, client):
        await create(client, "a", bundle(tmp_path, "a", {"Start": "2*error(no hard feelings)->1*off"}))
        for _ in range(2):
            await expect_status(Code.UNKNOWN, "no hard feelings", start(client, "a"))
        await start(client, "a")  # off
        await start(client, "a")  # used up: untouched from now on
    assert service.methods_ran() == [("Create", "a"), ("Start", "a"), ("Start", "a")]


async def test_delay_holds_the_call_then_lets_it_through(tmp_path, autojump_clock) -> None:
    service = StandIn()
    async with served(service) as (parts, client):
        t0 = trio.current_time()
        await create(client, "a", bundle(tmp_path, "a", {"Create": "1*delay(2000)", "Kill": "1*off->1*delay(500)"}))
        t1 = trio.current_time()
        await call(client, "Kill", pb.KillRequest(id="a", signal=9))
        t2 = trio.current_time()
        await call(client, "Kill", pb.KillRequest(id="a", signal=9))
        t3 = trio.current_time()
    assert (t1 - t0, t2 - t1, t3 - t2) == (pytest.approx(2.0), pytest.approx(0.0), pytest.approx(0.5))
    assert service.ran[0][2] == pytest.approx(t0 + 2.0)  # the handler ran after the delay


async def test_a_delay_ends_with_the_calls_deadline(tmp_path, autojump_clock) -> None:
    service = StandIn()
    async with served(service) as (parts, client):
        await create(client, "a", bundle(tmp_path, "a", {"Start": "1*delay(10000)"}))
        await expect_status(Code.DEADLINE_EXCEEDED, "context deadline exceeded", start(client, "a", timeout=1.0))
        await trio.sleep(20)
    assert service.methods_ran() == [("Create", "a")]


async def test_off_lets_every_call_through_and_only_counts(tmp_path) -> None:
    service = StandIn()
    async with served(service) as (_, client):
        await create(client, "a", bundle(tmp_path, "a", {"Start": "3*off->1*error(fourth)"}))
        for _ in range(3):
            await start(client, "a")
        await expect_status(Code.UNKNOWN, "fourth", start(client, "a"))
    assert service.methods_ran().count(("Start", "a")) == 3


async def test_panic_crashes_with_the_message(tmp_path) -> None:
    crashes: list[str] = []

    def crash(message: str) -> None:
        crashes.append(message)
        raise Crashed(message)

    service = StandIn()
    fps = Failpoints(service.failpoints_enabled, crash)
    request = pb.CreateTaskRequest(id="a", bundle=bundle(tmp_path, "a", {"Start": "1*panic(oh no)"}))
    fps.load(request)
    with trio.fail_after(10):
        with pytest.raises(Crashed):
            await fps.fire("Start", "a")
        await fps.fire("Start", "a")
    assert crashes == ["oh no"]


PANIC_CHILD = textwrap.dedent("""
    import sys, trio
    from protos import task_v2_pb2 as pb
    from shim.failpoint_wrap import Failpoints
    fps = Failpoints(lambda request: True)
    fps.load(pb.CreateTaskRequest(id="a", bundle=sys.argv[1]))
    async def main():
        await fps.fire("Start", "a")
        print("survived")
    trio.run(main)
    print("survived")
""")


def test_panic_ends_the_process_as_a_go_panic_does(tmp_path) -> None:
    path = bundle(tmp_path, "a", {"Start": "1*panic(shim is gone)"})
    res = subprocess.run([sys.executable, "-c", PANIC_CHILD, path], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert (res.returncode, res.stdout) == (2, "")
    assert "panic: shim is gone" in res.stderr


# -- per task -----------------------------------------------------------------------------------------------------

async def test_a_failpoint_touches_only_the_task_whose_annotation_it_is(tmp_path) -> None:
    service = StandIn()
    async with served(service, shared="8:30") as (parts, client):
        await create(client, "a", bundle(tmp_path, "a", {"Start": "1*error(a only)", "Delete": "1*error(a too)"}))
        await create(client, "b", bundle(tmp_path, "b", {}))
        await start(client, "b")
        await expect_status(Code.UNKNOWN, "a only", start(client, "a"))
        await start(client, "b")
        await call(client, "Delete", pb.DeleteRequest(id="b"), pb.DeleteResponse)
        await expect_status(Code.UNKNOWN, "a too", call(client, "Delete", pb.DeleteRequest(id="a"), pb.DeleteResponse))
        await call(client, "Delete", pb.DeleteRequest(id="a"), pb.DeleteResponse)
    assert service.methods_ran() == [("Create", "a"), ("Create", "b"), ("Start", "b"), ("Start", "b"),
                                     ("Delete", "b"), ("Delete", "a")]


async def test_shutdown_after_delete_still_fires_and_a_new_create_starts_afresh(tmp_path) -> None:
    service = StandIn()
    async with served(service) as (parts, client):
        await create(client, "a", bundle(tmp_path, "a", {"Shutdown": "1*error(please retry)", "Start": "9*off"}))
        await call(client, "Delete", pb.DeleteRequest(id="a"), pb.DeleteResponse)
        await expect_status(Code.UNKNOWN, "please retry", call(client, "Shutdown", pb.ShutdownRequest(id="a")))
        await call(client, "Shutdown", pb.ShutdownRequest(id="a"))
        again = tmp_path / "again"
        again.mkdir()
        (again / "config.json").write_text(json.dumps({"annotations": {PREFIX + "Start": "1*error(second life)"}}))
        await create(client, "a", str(again))
        await expect_status(Code.UNKNOWN, "second life", start(client, "a"))


async def test_a_task_table_is_forgotten_once_enough_tasks_were_deleted_after_it(tmp_path) -> None:
    service = StandIn()
    fps = Failpoints(service.failpoints_enabled)
    wrapped = fps.wrap(service.methods())
    with trio.fail_after(30):
        for i in range(RETIRED_MAX + 1):
            task = f"t{i}"
            path = bundle(tmp_path, task, {"Shutdown": "1*off"})
            await wrapped["Create"].handler(None, pb.CreateTaskRequest(id=task, bundle=path))
            await wrapped["Delete"].handler(None, pb.DeleteRequest(id=task))
    assert fps.table("t0") == {}
    assert fps.table("t1") != {} and fps.table(f"t{RETIRED_MAX}") != {}


# -- configuration and bad input ----------------------------------------------------------------------------------

async def test_annotations_are_ignored_unless_the_shim_enables_failpoints(tmp_path) -> None:
    service = StandIn(enabled=False)
    async with served(service) as (parts, client):
        await create(client, "a", bundle(tmp_path, "a", {"Create": "1*error(x)", "Start": "1*panic(y)"}))
        await start(client, "a")
    assert service.methods_ran() == [("Create", "a"), ("Start", "a")]


async def test_a_malformed_annotation_fails_its_create_before_the_handler(tmp_path) -> None:
    service = StandIn()
    async with served(service, shared="8:30") as (parts, client):
        await expect_status(
            Code.INVALID_ARGUMENT,
            f"failed to parse failpoint annotation {PREFIX}Start='1*error()': invalid argument for error type",
            create(client, "a", bundle(tmp_path, "a", {"Start": "1*error()"})))
        assert parts.occupancy.reservations == {} and parts.occupancy.tasks == {}  # its place is free again
        await create(client, "b", bundle(tmp_path, "b", {"NoSuchMethod": "1*error(never)"}))
        await start(client, "b")
    assert service.methods_ran() == [("Create", "b"), ("Start", "b")]


async def test_an_invalid_id_is_refused_before_any_failpoint(tmp_path) -> None:
    service = StandIn()
    async with served(service) as (parts, client):
        with pytest.raises(StatusError) as info:
            await create(client, "../a", bundle(tmp_path, "a", {"Create": "1*panic(must not fire)"}))
    assert info.value.code == Code.INVALID_ARGUMENT and service.ran == []


async def test_an_unreadable_bundle_gives_no_failpoints_and_the_handler_decides(tmp_path) -> None:
    service = StandIn()
    async with served(service) as (parts, client):
        await create(client, "a", str(tmp_path / "missing"))
        await start(client, "a")
    assert service.methods_ran() == [("Create", "a"), ("Start", "a")]


def test_parse_annotations_takes_only_the_prefix_and_needs_strings() -> None:
    table = parse_annotations({PREFIX + "Start": "1*off", "io.other": "1*error(", PREFIX[:-1]: "x"})
    assert list(table) == ["Start"] and table["Start"].marshal() == "1*off"
    with pytest.raises(StatusError) as info:
        parse_annotations({PREFIX + "Kill": 3})
    assert info.value.code == Code.INVALID_ARGUMENT
