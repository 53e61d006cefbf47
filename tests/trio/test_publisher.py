"""The event publisher against a stand-in of containerd's Events service (a real ttrpc server on a unix socket, in
the same trio run), taken down and brought back: order, once, no loss however long it is down, the queue bound,
and what is dropped (shim/events.py rules). Virtual time (autojump_clock): a ten-minute outage takes no time.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from google.protobuf import empty_pb2

from protos import task_events_pb2 as ev
from protos import ttrpc_events_pb2 as tev
from shim import events
from shim.events import Publisher
from ttrpc.server import Method, Server
from ttrpc.status import Code, StatusError


class Containerd:
    """``containerd.services.events.ttrpc.v1.Events/Forward`` on ``path``, while ``up``; records what it got."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.got: list[tuple[str, str]] = []  # (topic, container id)
        self.reject: set[str] = set()         # container ids answered INVALID_ARGUMENT
        self._scope: trio.CancelScope | None = None

    async def forward(self, ctx, req: tev.ForwardRequest):
        env = req.envelope
        assert env.namespace == "ns" and env.timestamp.seconds > 0
        message = {"/tasks/exit": ev.TaskExit, "/tasks/start": ev.TaskStart,
                   "/tasks/oom": ev.TaskOOM}[env.topic].FromString(env.event.value)
        if message.container_id in self.reject:
            raise StatusError("invalid envelope", Code.INVALID_ARGUMENT)
        self.got.append((env.topic, message.container_id))
        return empty_pb2.Empty()

    async def up(self, nursery: trio.Nursery) -> None:
        server = Server()
        server.register(events.SERVICE, {"Forward": Method(tev.ForwardRequest, self.forward)})
        sock = trio.socket.socket(trio.socket.AF_UNIX)
        await sock.bind(self.path)
        sock.listen(16)
        self._scope = trio.CancelScope()

        async def serve() -> None:
            with self._scope:
                await server.serve(trio.SocketListener(sock))
        nursery.start_soon(serve)
        await trio.sleep(0)

    def down(self) -> None:
        """containerd is gone: no listener, no socket file (a refused connect)."""
        self._scope.cancel()
        os.unlink(self.path)


def exit_event(cid: str) -> ev.TaskExit:
    return ev.TaskExit(container_id=cid, id=cid, pid=1, exit_status=7)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "ttrpc.sock")


async def test_events_arrive_in_order_once(path, autojump_clock):
    c = Containerd(path)
    pub = Publisher(path, "ns")
    async with trio.open_nursery() as nursery:
        await c.up(nursery)
        await nursery.start(pub.run)
        pub.emit(ev.TaskStart(container_id="a", pid=1))
        for cid in ("a", "b", "c"):
            pub.emit(exit_event(cid))
        await pub.drain(5)
        assert c.got == [("/tasks/start", "a"), ("/tasks/exit", "a"), ("/tasks/exit", "b"), ("/tasks/exit", "c")]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("outage", [5, 60, 600])
async def test_no_event_is_lost_however_long_containerd_is_down(path, autojump_clock, outage):
    c = Containerd(path)
    pub = Publisher(path, "ns")
    async with trio.open_nursery() as nursery:
        await c.up(nursery)
        await nursery.start(pub.run)
        pub.emit(exit_event("before"))
        await pub.drain(5)
        c.down()
        for cid in ("x1", "x2"):
            pub.emit(ev.TaskOOM(container_id=cid))
            pub.emit(exit_event(cid))
        await trio.sleep(outage)  # the publisher retries meanwhile, with a back-off capped at 2 s
        assert c.got == [("/tasks/exit", "before")]
        await c.up(nursery)
        with trio.fail_after(5):  # the next retry (at most 2 s away) delivers everything, in order, once
            await pub.drain(10)
        assert c.got == [("/tasks/exit", "before"), ("/tasks/oom", "x1"), ("/tasks/exit", "x1"),
                         ("/tasks/oom", "x2"), ("/tasks/exit", "x2")]
        nursery.cancel_scope.cancel()


async def test_an_event_containerd_rejects_is_dropped_alone(path, autojump_clock):
    c = Containerd(path)
    c.reject.add("bad")
    pub = Publisher(path, "ns")
    async with trio.open_nursery() as nursery:
        await c.up(nursery)
        await nursery.start(pub.run)
        for cid in ("a", "bad", "b"):
            pub.emit(exit_event(cid))
        await pub.drain(5)
        assert c.got == [("/tasks/exit", "a"), ("/tasks/exit", "b")]
        nursery.cancel_scope.cancel()


async def test_a_full_queue_drops_new_events_and_says_so(path, autojump_clock, monkeypatch, caplog):
    monkeypatch.setattr(events, "QUEUE_DEPTH", 3)
    c = Containerd(path)
    pub = Publisher(path, "ns")
    async with trio.open_nursery() as nursery:
        await nursery.start(pub.run)  # containerd not up yet: nothing is delivered
        for cid in ("a", "b", "c", "d", "e"):
            pub.emit(exit_event(cid))
        await trio.sleep(1)
        await c.up(nursery)
        await pub.drain(10)
        delivered = [cid for _, cid in c.got]
        assert delivered[:3] == ["a", "b", "c"] and "e" not in delivered
        assert "event queue full, dropping /tasks/exit" in caplog.text
        nursery.cancel_scope.cancel()
