"""shim/occupancy.py: reservations and their TTL, the idle exit of a sharing daemon (on trio's autojump clock: exact
and instant), and ``wrap`` around the Task methods: live tasks, log FIFOs (real FIFOs, our reader), current_task."""
from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from protos import task_v2_pb2 as pb
from shim import sharing
from shim.daemon_log import LogfmtFormatter, TaskLogs, current_task
from shim.occupancy import Occupancy
from ttrpc.server import Method
from ttrpc.status import Code, StatusError

TTL = sharing.RESERVATION_TTL


class Idle:
    """The on_idle callback: when it was called."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self) -> None:
        self.calls.append(trio.current_time())


@asynccontextmanager
async def running(occ: Occupancy):
    """``occ.run`` in a nursery (as the daemon starts it); yields the time it started. Exits once run returns, which
    must be within a (virtual) day: a run that never returns fails instead of hanging."""
    with trio.fail_after(86400):
        async with trio.open_nursery() as nursery:
            await nursery.start(occ.run)
            yield trio.current_time()


def shared(max_tasks: int = 2, idle: float = 30.0, first: str = "", logs: TaskLogs | None = None):
    on_idle = Idle()
    return Occupancy(first, logs, sharing.Sharing("k", max_tasks, idle), on_idle), on_idle


# -- reservations ---------------------------------------------------------------------------------------------

async def test_a_reservation_holds_its_place_for_the_ttl_then_frees_it(autojump_clock) -> None:
    occ, _ = shared(max_tasks=1)
    t0 = trio.current_time()
    assert occ.reserve("a") == sharing.ReserveResponse(True)
    assert occ.reservations == {"a": t0 + TTL}
    assert occ.reserve("b") == sharing.ReserveResponse(False, "full: 1 of 1 tasks")
    await trio.sleep_until(t0 + TTL - 0.001)
    assert not occ.reserve("b").accepted
    await trio.sleep_until(t0 + TTL)
    assert occ.reserve("b").accepted
    assert occ.reservations == {"b": t0 + TTL + TTL}


async def test_live_tasks_and_reservations_count_together_against_max_tasks() -> None:
    occ, _ = shared(max_tasks=3)
    occ.created("t1", "/b/t1")
    assert occ.reserve("r1").accepted and occ.reserve("r2").accepted
    assert occ.reserve("r3") == sharing.ReserveResponse(False, "full: 3 of 3 tasks")
    occ.deleted("t1")
    assert occ.reserve("r3").accepted
    assert occ.reserve("r1").accepted and occ.reserve("r3").accepted  # held ids: accepted, no new place
    assert set(occ.reservations) == {"r1", "r2", "r3"}


async def test_a_create_uses_up_the_reservation_and_a_live_id_is_accepted_again() -> None:
    occ, _ = shared(max_tasks=1)
    assert occ.reserve("a").accepted
    occ.created("a", "/b/a")
    assert occ.reservations == {} and occ.tasks == {"a": "/b/a"}
    assert occ.reserve("a").accepted and occ.reservations == {}
    assert occ.reserve("b") == sharing.ReserveResponse(False, "full: 1 of 1 tasks")


async def test_closing_refuses_every_reservation() -> None:
    occ, _ = shared(max_tasks=5)
    assert occ.reserve("a").accepted
    occ.closing = True
    assert occ.reserve("a") == sharing.ReserveResponse(False, "shutting down")
    assert occ.reserve("b") == sharing.ReserveResponse(False, "shutting down")
    assert set(occ.reservations) == {"a"}


# -- run(): the idle exit -----------------------------------------------------------------------------------

async def failing_create(ctx, request):
    raise RuntimeError("the runtime failed")


async def test_without_sharing_run_reserves_nothing_and_a_create_keeps_the_daemon(autojump_clock) -> None:
    calls = []
    occ = Occupancy("c1", None, None, lambda: calls.append(1), unused_exit=30.0)
    create = occ.wrap({"Create": Method(pb.CreateTaskRequest, failing_create)})["Create"]
    async with trio.open_nursery() as nursery:
        await nursery.start(occ.run)
        assert occ.reservations == {} and not occ.closing
        await trio.sleep(29.0)
        with pytest.raises(RuntimeError):  # a failed Create counts: containerd follows it with Delete, Shutdown
            await create.handler(None, pb.CreateTaskRequest(id="c1", bundle="/b/c1"))
    assert trio.current_time() == pytest.approx(29.0) and occ.used
    await trio.sleep(3600)
    assert occ.reservations == {} and not occ.closing and calls == []


async def test_without_sharing_a_daemon_no_create_reaches_leaves(autojump_clock) -> None:
    """containerd started the shim, then failed on its own (a full bundle) and never shuts it down."""
    calls = []
    occ = Occupancy("c1", None, None, lambda: calls.append(trio.current_time()), unused_exit=30.0)
    t0 = trio.current_time()
    await occ.run()
    assert calls == [pytest.approx(t0 + 30.0)] and occ.closing and not occ.used


async def test_an_empty_daemon_exits_after_exactly_its_idle_time(autojump_clock) -> None:
    occ, on_idle = shared(idle=30.0)
    async with running(occ) as t0:
        await trio.sleep(29.999)
        assert on_idle.calls == [] and not occ.closing
    assert on_idle.calls == [pytest.approx(t0 + 30.0, abs=1e-9)]
    assert occ.closing
    assert occ.reserve("x") == sharing.ReserveResponse(False, "shutting down")


async def test_the_first_task_is_reserved_when_run_starts(autojump_clock) -> None:
    occ, on_idle = shared(max_tasks=1, idle=30.0, first="c1")
    assert occ.reservations == {}
    async with running(occ) as t0:
        assert occ.reservations == {"c1": t0 + TTL}
        assert occ.reserve("c2") == sharing.ReserveResponse(False, "full: 1 of 1 tasks")
    # c1's Create never came: its place expired at TTL, then the daemon waited its idle time
    assert on_idle.calls == [pytest.approx(t0 + TTL + 30.0, abs=1e-9)]


async def test_a_reservation_in_the_idle_window_postpones_the_exit(autojump_clock) -> None:
    occ, on_idle = shared(idle=30.0)
    async with running(occ) as t0:
        await trio.sleep(20)
        assert occ.reserve("a").accepted           # t0+20: no Create follows, it expires at t0+20+TTL
        await trio.sleep(TTL + 29.9)
        assert on_idle.calls == []
    assert on_idle.calls == [pytest.approx(t0 + 20 + TTL + 30.0, abs=1e-9)]


async def test_a_live_task_keeps_the_daemon_until_its_delete_plus_the_idle_time(autojump_clock) -> None:
    occ, on_idle = shared(idle=30.0)
    async with running(occ) as t0:
        await trio.sleep(10)
        occ.created("a", "/b/a")                   # an unreserved Create (containerd 2.3+ attaching)
        await trio.sleep(1000)                     # well past any TTL or idle time: a live task stays
        assert on_idle.calls == [] and not occ.closing
        occ.deleted("a")                           # t0+1010
        await trio.sleep(29.9)
        assert on_idle.calls == []
    assert on_idle.calls == [pytest.approx(t0 + 1010 + 30.0, abs=1e-9)]


async def test_idle_time_zero_exits_as_soon_as_the_last_task_is_gone(autojump_clock) -> None:
    occ, on_idle = shared(idle=0.0, first="c1")
    async with running(occ):
        occ.created("c1", "/b/c1")
        await trio.sleep(5)
        assert on_idle.calls == []
        t1 = trio.current_time()
        occ.deleted("c1")
    assert on_idle.calls == [t1] and occ.closing


# -- wrap(): the Task API's view ----------------------------------------------------------------------------

class FakeService:
    """Task handlers that record what they saw; ``fail`` names methods that raise."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object, object, str]] = []
        self.fail: set[str] = set()
        self.child_task: list[str] = []

    def methods(self) -> dict[str, Method]:
        return {"Create": Method(pb.CreateTaskRequest, self._handler("Create", pb.CreateTaskResponse(pid=7))),
                "Delete": Method(pb.DeleteRequest, self._handler("Delete", pb.DeleteResponse(pid=7))),
                "State": Method(pb.StateRequest, self._handler("State", pb.StateResponse(pid=7)))}

    def _handler(self, name: str, response):
        async def handle(ctx, request):
            self.seen.append((name, ctx, request, current_task.get()))
            async with trio.open_nursery() as nursery:  # a trio task it starts inherits the task id
                nursery.start_soon(self._child)
            if name in self.fail:
                raise StatusError(f"{name} failed", Code.FAILED_PRECONDITION)
            return response
        return handle

    async def _child(self) -> None:
        self.child_task.append(current_task.get())


class Fifo:
    """``<bundle>/log`` as containerd makes it: a FIFO we hold the read end of."""

    def __init__(self, bundle: Path) -> None:
        bundle.mkdir()
        os.mkfifo(bundle / "log")
        self.bundle = str(bundle)
        self.reader = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)

    def read(self) -> bytes | None:
        """What was written; None while a writer holds it open with nothing written, b"" once no writer does."""
        try:
            return os.read(self.reader, 65536)
        except BlockingIOError:
            return None

    def close(self) -> None:
        os.close(self.reader)


@pytest.fixture
def logs():
    """A TaskLogs on a private logger (nothing reaches the root logger)."""
    handler = TaskLogs()
    handler.setFormatter(LogfmtFormatter({}, default_id="nobody"))
    logger = logging.getLogger("tests.occupancy")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield handler, logger
    logger.handlers[:] = []
    for task in list(handler._fds):
        handler.close_task(task)


@pytest.fixture
def served(logs):
    """(occupancy with max_tasks 2 and the TaskLogs, the stand-in service, its wrapped methods, the logger)."""
    handler, logger = logs
    occ, _ = shared(max_tasks=2, logs=handler)
    service = FakeService()
    return occ, service, occ.wrap(service.methods()), logger


@pytest.fixture
def fifos(tmp_path: Path):
    made: list[Fifo] = []

    def make(name: str) -> Fifo:
        made.append(Fifo(tmp_path / name))
        return made[-1]
    yield make
    for f in made:
        f.close()


async def test_a_successful_create_makes_the_task_live_and_opens_its_log_fifo(served, fifos) -> None:
    occ, service, methods, logger = served
    fifo = fifos("c1")
    assert occ.reserve("c1").accepted
    assert fifo.read() == b""                          # no writer yet
    ctx = object()
    request = pb.CreateTaskRequest(id="c1", bundle=fifo.bundle)
    response = await methods["Create"].handler(ctx, request)
    assert response == pb.CreateTaskResponse(pid=7)
    assert service.seen == [("Create", ctx, request, "c1")]  # passed through untouched, under the task's id
    assert occ.tasks == {"c1": fifo.bundle} and occ.reservations == {}
    assert fifo.read() is None                         # our write end is open now
    token = current_task.set("c1")
    try:
        logger.info("hello c1")
    finally:
        current_task.reset(token)
    line = fifo.read()
    assert line is not None and line.endswith(b"\n") and b'msg="hello c1"' in line and b'id="c1"' in line


async def test_a_failed_create_frees_its_place(served, fifos) -> None:
    occ, service, methods, _ = served
    service.fail.add("Create")
    fifo = fifos("c1")
    assert occ.reserve("c1").accepted
    with pytest.raises(StatusError, match="Create failed"):
        await methods["Create"].handler(None, pb.CreateTaskRequest(id="c1", bundle=fifo.bundle))
    assert occ.tasks == {} and occ.reservations == {}  # containerd never retries it: no place is kept
    assert occ.idle
    assert fifo.read() == b""                          # never opened
    assert current_task.get() == ""


async def test_delete_of_the_init_ends_the_task_and_closes_its_fifo_an_exec_delete_does_not(served, fifos) -> None:
    occ, service, methods, _ = served
    fifo = fifos("c1")
    await methods["Create"].handler(None, pb.CreateTaskRequest(id="c1", bundle=fifo.bundle))
    await methods["Delete"].handler(None, pb.DeleteRequest(id="c1", exec_id="e1"))
    assert occ.tasks == {"c1": fifo.bundle} and fifo.read() is None
    service.fail.add("Delete")
    with pytest.raises(StatusError):
        await methods["Delete"].handler(None, pb.DeleteRequest(id="c1"))
    assert occ.tasks == {"c1": fifo.bundle} and fifo.read() is None
    service.fail.clear()
    assert await methods["Delete"].handler(None, pb.DeleteRequest(id="c1")) == pb.DeleteResponse(pid=7)
    assert occ.tasks == {} and fifo.read() == b""      # our write end is closed: the reader sees EOF


async def test_each_task_has_its_own_fifo(served, fifos) -> None:
    _, _, methods, logger = served
    a, b = fifos("a"), fifos("b")
    for cid, fifo in (("a", a), ("b", b)):
        await methods["Create"].handler(None, pb.CreateTaskRequest(id=cid, bundle=fifo.bundle))
    for cid in ("b", "a", "b"):
        token = current_task.set(cid)
        logger.info("for %s", cid)
        current_task.reset(token)
    assert a.read().count(b"\n") == 1 and b.read().count(b"\n") == 2
    await methods["Delete"].handler(None, pb.DeleteRequest(id="a"))
    assert a.read() == b"" and b.read() is None


async def test_the_request_id_is_current_task_inside_the_handler_and_its_tasks_and_reset_after() -> None:
    occ, _ = shared()
    service = FakeService()
    methods = occ.wrap(service.methods())
    outer = current_task.set("outer")
    try:
        await methods["State"].handler(None, pb.StateRequest(id="s1", exec_id="e"))
        assert current_task.get() == "outer"
        service.fail.add("State")
        with pytest.raises(StatusError):
            await methods["State"].handler(None, pb.StateRequest(id="s2"))
        assert current_task.get() == "outer"
    finally:
        current_task.reset(outer)
    assert [s[3] for s in service.seen] == ["s1", "s2"]
    assert service.child_task == ["s1", "s2"]
    assert occ.tasks == {} and occ.reservations == {}  # State changes nothing


async def test_an_unreserved_create_is_served_even_when_the_shard_is_full() -> None:
    occ, _ = shared(max_tasks=1)
    assert occ.reserve("a").accepted and not occ.reserve("b").accepted
    service = FakeService()
    response = await occ.wrap(service.methods())["Create"].handler(None, pb.CreateTaskRequest(id="b", bundle="/x"))
    assert response == pb.CreateTaskResponse(pid=7) and [s[0] for s in service.seen] == ["Create"]
    assert occ.tasks == {"b": "/x"} and set(occ.reservations) == {"a"}
    assert occ.reserve("c") == sharing.ReserveResponse(False, "full: 2 of 1 tasks")


async def test_a_create_in_flight_keeps_an_idle_daemon_from_leaving(autojump_clock) -> None:
    """An unreserved Create is served (module rules), so the idle exit must not close the daemon under it: here
    the Create (runc create, say) takes 5 s and the idle time is 2 s; once it succeeds the task is live."""
    occ, on_idle = shared(idle=2.0)

    async def slow_create(ctx, request):
        await trio.sleep(5)
        return pb.CreateTaskResponse(pid=7)
    create = occ.wrap({"Create": Method(pb.CreateTaskRequest, slow_create)})["Create"]
    async with running(occ) as t0:
        await create.handler(None, pb.CreateTaskRequest(id="late", bundle="/b/late"))
        assert occ.tasks == {"late": "/b/late"}
        assert on_idle.calls == [] and not occ.closing, "the daemon left while it was creating a task"
        occ.deleted("late")
    assert on_idle.calls == [pytest.approx(t0 + 5 + 2.0, abs=1e-9)]


def test_wrap_keeps_every_method_and_its_request_type() -> None:
    occ = Occupancy("", None, None, lambda: None)
    methods = FakeService().methods()
    wrapped = occ.wrap(methods)
    assert set(wrapped) == set(methods)
    assert all(wrapped[n].request_type is methods[n].request_type for n in methods)
    assert all(wrapped[n].handler is not methods[n].handler for n in methods)
