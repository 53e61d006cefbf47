"""The trio server and client over in-memory streams (trio.testing), fast and trickled one byte at a time.

Rules for these tests: every test runs under trio.fail_after; time-dependent tests use autojump_clock so they are
deterministic and instant; raw peers (RawPeer) speak bytes through the sans-IO codec so tests can misbehave on the
wire exactly; assertions check codes AND Go's exact messages.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from trio.testing import memory_stream_pair, memory_stream_pump

from protos import ttrpc_pb2
from ttrpc.client import Client, open_client
from ttrpc.codec import CLOSED, NEED_DATA, FrameDecoder, encode_frame
from ttrpc.frame import MAX_DATA_LENGTH, Frame, MessageType, encode_header
from ttrpc.server import CallContext, Method, Server
from ttrpc.status import Code, ConnectionClosed, StatusError

KV = ttrpc_pb2.KeyValue
SVC = "test.v1.Svc"


class NotFound(StatusError):
    code = Code.NOT_FOUND


class Recorder:
    def __init__(self) -> None:
        self.started = trio.Event()
        self.release = trio.Event()
        self.cancelled = 0
        self.contexts: list[CallContext] = []


def make_server(rec: Recorder) -> Server:
    async def echo(ctx: CallContext, req: KV) -> KV:
        return KV(key=req.key, value=req.value)

    async def meta(ctx: CallContext, req: KV) -> ttrpc_pb2.StringList:
        rec.contexts.append(ctx)
        return ttrpc_pb2.StringList(list=[f"{k}={v}" for k, v in ctx.metadata])

    async def sleep(ctx: CallContext, req: KV) -> KV:
        await trio.sleep(float(req.value))
        return KV(key=req.key, value="slept")

    async def block(ctx: CallContext, req: KV) -> KV:
        rec.started.set()
        try:
            await rec.release.wait()
        except trio.Cancelled:
            rec.cancelled += 1
            raise
        return KV(value="released")

    async def big(ctx: CallContext, req: KV) -> KV:
        return KV(value="x" * int(req.value))

    async def fail(ctx: CallContext, req: KV) -> object:
        kind = req.key
        if kind == "notfound":
            raise NotFound("no such thing")
        if kind == "explicit":
            raise StatusError("exists", Code.ALREADY_EXISTS)
        if kind == "random":
            raise RuntimeError("boom")
        if kind == "bare":
            raise ValueError()
        if kind == "group":
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_raise_not_found)
        if kind == "none":
            return None
        if kind == "wrongtype":
            return "a string"
        if kind == "tooslow":
            with trio.fail_after(0.5):
                await trio.sleep(1)
        raise AssertionError(kind)

    server = Server(require_same_user=False)
    server.register(SVC, {
        "Echo": Method(KV, echo), "Meta": Method(KV, meta), "Sleep": Method(KV, sleep), "Block": Method(KV, block),
        "Big": Method(KV, big), "Fail": Method(KV, fail),
    })
    return server


async def _raise_not_found() -> None:
    raise NotFound("inner")


def trickle_pair() -> tuple[trio.StapledStream, trio.StapledStream]:  # type: ignore[type-arg]
    """A memory stream pair whose bytes travel one at a time, each read before the next is sent."""
    left, right = memory_stream_pair()
    for src, dst in ((left, right), (right, left)):
        async def hook(src: trio.StapledStream = src, dst: trio.StapledStream = dst) -> None:  # type: ignore[type-arg]
            while memory_stream_pump(src.send_stream, dst.receive_stream, max_bytes=1):
                await trio.testing.wait_all_tasks_blocked()
        src.send_stream.send_all_hook = hook
    return left, right


PAIRS = {"fast": memory_stream_pair, "trickle": trickle_pair}


@asynccontextmanager
async def connected(server: Server, kind: str = "fast") -> AsyncIterator[Client]:
    left, right = PAIRS[kind]()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, right)
        async with open_client(left) as client:
            yield client


class RawPeer:
    """One end of a connection driven frame by frame."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.dec = FrameDecoder()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next(self) -> object:
        while (item := self.dec.next_frame()) is NEED_DATA:
            self.dec.feed(await self.stream.receive_some())
        return item

    async def response(self) -> tuple[int, ttrpc_pb2.Response]:
        frame = await self.next()
        assert isinstance(frame, Frame) and frame.type == MessageType.RESPONSE and frame.flags == 0
        return frame.stream_id, ttrpc_pb2.Response.FromString(frame.data)


@asynccontextmanager
async def raw_connection(server: Server) -> AsyncIterator[RawPeer]:
    """A server connection whose client side the test drives byte for byte."""
    left, right = memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, right)
        yield RawPeer(left)
        await left.aclose()


def raw_request(sid: int, method: str, req: KV, timeout_nano: int = 0, service: str = SVC) -> bytes:
    envelope = ttrpc_pb2.Request(service=service, method=method, payload=req.SerializeToString(),
                                 timeout_nano=timeout_nano)
    return encode_frame(sid, MessageType.REQUEST, envelope.SerializeToString())


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def server(rec: Recorder) -> Server:
    return make_server(rec)


@pytest.mark.parametrize("kind", PAIRS)
async def test_echo_and_metadata(server: Server, rec: Recorder, kind: str) -> None:
    with trio.fail_after(10):
        async with connected(server, kind) as client:
            assert await client.call(SVC, "Echo", KV(key="a", value="b"), KV) == KV(key="a", value="b")
            got = await client.call(SVC, "Meta", KV(), ttrpc_pb2.StringList,
                                    metadata=[("Containerd-Namespace-TTRPC", "default"), ("x", "1"), ("X", "2")])
            assert list(got.list) == ["containerd-namespace-ttrpc=default", "x=1", "x=2"]
            ctx = rec.contexts[-1]
            assert (ctx.service, ctx.method) == (SVC, "Meta")
            assert ctx.deadline == pytest.approx(trio.current_effective_deadline(), abs=0.5)  # from fail_after
            assert ctx.get("X") == ["1", "2"] and ctx.get("containerd-namespace-ttrpc") == ["default"]
            assert ctx.get("missing") == []


@pytest.mark.parametrize("kind", PAIRS)
async def test_concurrent_calls_complete_out_of_order(server: Server, kind: str,
                                                      autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        async with connected(server, kind) as client:
            finished: list[int] = []

            async def one(i: int) -> None:
                got = await client.call(SVC, "Sleep", KV(key=str(i), value=str(10 - i)), KV)
                assert got == KV(key=str(i), value="slept")
                finished.append(i)

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(one, i)
            assert finished == list(reversed(range(10)))
            assert trio.current_time() - start < 11  # concurrent, not 55 s in sequence


async def test_long_handler_does_not_block_other_calls(server: Server, rec: Recorder) -> None:
    with trio.fail_after(10):
        async with connected(server) as client, trio.open_nursery() as nursery:
            results: list[KV] = []

            async def blocked() -> None:
                results.append(await client.call(SVC, "Block", KV(), KV))

            nursery.start_soon(blocked)
            await rec.started.wait()
            for i in range(5):
                assert await client.call(SVC, "Echo", KV(key=str(i)), KV) == KV(key=str(i))
            assert results == []
            rec.release.set()
        assert results == [KV(value="released")]


async def test_client_timeout_raises_deadline_exceeded_and_connection_survives(
        server: Server, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        async with connected(server) as client:
            start = trio.current_time()
            with pytest.raises(StatusError) as info:
                await client.call(SVC, "Sleep", KV(value="50"), KV, timeout=1)
            assert (info.value.code, info.value.message) == (Code.DEADLINE_EXCEEDED, "context deadline exceeded")
            assert 1 <= trio.current_time() - start < 1.1
            await trio.sleep(5)  # the server's own deadline fires too; its late answer is dropped
            assert await client.call(SVC, "Echo", KV(key="after"), KV) == KV(key="after")


async def test_server_honours_timeout_nano(server: Server, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        async with raw_connection(server) as peer:
            start = trio.current_time()
            await peer.send(raw_request(1, "Sleep", KV(value="50"), timeout_nano=2_000_000_000))
            sid, resp = await peer.response()
            assert (sid, resp.status.code, resp.status.message) == (1, Code.DEADLINE_EXCEEDED,
                                                                    "context deadline exceeded")
            assert 2 <= trio.current_time() - start < 2.1


async def test_deadline_is_sent_from_timeout_or_enclosing_scope(server: Server, rec: Recorder,
                                                                autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        async with connected(server) as client:
            now = trio.current_time()
            await client.call(SVC, "Meta", KV(), ttrpc_pb2.StringList, timeout=7)
            assert rec.contexts[-1].deadline == pytest.approx(now + 7, abs=0.01)
            with trio.move_on_after(30):
                await client.call(SVC, "Meta", KV(), ttrpc_pb2.StringList, timeout=60)
            assert rec.contexts[-1].deadline == pytest.approx(now + 30, abs=0.01)
            with trio.move_on_at(trio.current_time() - 1):  # already expired: nothing is sent
                await client.call(SVC, "Meta", KV(), ttrpc_pb2.StringList)
            with pytest.raises(StatusError, match="context deadline exceeded"):
                await client.call(SVC, "Meta", KV(), ttrpc_pb2.StringList, timeout=0)
            assert len(rec.contexts) == 2
            assert await client.call(SVC, "Echo", KV(key="ok"), KV) == KV(key="ok")


async def test_unknown_service_and_method_answer_exactly_like_go(server: Server) -> None:
    with trio.fail_after(10):
        async with connected(server) as client:
            with pytest.raises(StatusError) as info:
                await client.call("containerd.task.v3.Task", "Connect", KV(), KV)
            assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "service containerd.task.v3.Task")
            with pytest.raises(StatusError) as info:
                await client.call(SVC, "Nope", KV(), KV)
            assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "method Nope")
        async with raw_connection(server) as peer:  # an unknown service, byte for byte
            await peer.send(raw_request(1, "Connect", KV(), service="containerd.task.v3.Task"))
            expected = bytes.fromhex("00000025 00000001 0200 0a23080c121f") + b"service containerd.task.v3.Task"
            got = b""
            while len(got) < len(expected):
                got += await peer.stream.receive_some()
            assert got == expected


async def test_undecodable_payload_is_internal(server: Server) -> None:
    with trio.fail_after(10):
        async with raw_connection(server) as peer:
            envelope = ttrpc_pb2.Request(service=SVC, method="Echo", payload=b"\x0a\x09short")
            await peer.send(encode_frame(1, MessageType.REQUEST, envelope.SerializeToString()))
            sid, resp = await peer.response()
            assert resp.status.code == Code.INTERNAL
            assert resp.status.message == ("ttrpc: error unmarshalling payload: Error parsing message with type "
                                           "'ttrpc.KeyValue': Wire format was corrupt")
            assert resp.payload == b""


HANDLER_ERRORS = [
    ("notfound", Code.NOT_FOUND, "no such thing"),
    ("explicit", Code.ALREADY_EXISTS, "exists"),
    ("random", Code.UNKNOWN, "boom"),
    ("bare", Code.UNKNOWN, "ValueError"),
    ("group", Code.NOT_FOUND, "inner"),
    ("none", Code.UNKNOWN, "ttrpc: marshal called with nil"),
    ("wrongtype", Code.INTERNAL, "ttrpc: error unsupported response type: str"),
    ("tooslow", Code.DEADLINE_EXCEEDED, "context deadline exceeded"),
]


@pytest.mark.parametrize(("kind", "code", "message"), HANDLER_ERRORS, ids=[r[0] for r in HANDLER_ERRORS])
async def test_handler_errors_map_to_status(server: Server, kind: str, code: Code, message: str,
                                            caplog: pytest.LogCaptureFixture,
                                            autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        async with connected(server) as client:
            with caplog.at_level(logging.ERROR, logger="ttrpc.server"):
                with pytest.raises(StatusError) as info:
                    await client.call(SVC, "Fail", KV(key=kind), KV)
            assert (info.value.code, info.value.message) == (code, message)
            logged_traceback = any(r.exc_info for r in caplog.records if r.name == "ttrpc.server")
            assert logged_traceback == (kind in ("random", "bare"))
            assert await client.call(SVC, "Echo", KV(key="still"), KV) == KV(key="still")


async def test_oversized_request_answered_and_next_call_works(server: Server) -> None:
    with trio.fail_after(30):
        async with raw_connection(server) as peer:
            length = MAX_DATA_LENGTH + 1
            await peer.send(encode_header(length, 1, MessageType.REQUEST))
            for offset in range(0, length, 300_000):  # the body arrives in pieces
                await peer.send(b"\x07" * min(300_000, length - offset))
            sid, resp = await peer.response()
            assert (sid, resp.status.code, resp.status.message) == (
                1, Code.RESOURCE_EXHAUSTED, "message length 4194305 exceed maximum message size of 4194304")
            await peer.send(raw_request(3, "Echo", KV(key="next")))
            sid, resp = await peer.response()
            assert (sid, resp.HasField("status"), KV.FromString(resp.payload)) == (3, False, KV(key="next"))


async def test_client_refuses_to_send_oversized_request(server: Server) -> None:
    with trio.fail_after(30):
        async with connected(server) as client:
            with pytest.raises(StatusError) as info:
                await client.call(SVC, "Echo", KV(value="x" * MAX_DATA_LENGTH), KV)
            assert info.value.code == Code.RESOURCE_EXHAUSTED
            assert info.value.message.startswith("message length 419")
            assert await client.call(SVC, "Echo", KV(key="fine"), KV) == KV(key="fine")


async def test_oversized_response_is_replaced_by_resource_exhausted(server: Server) -> None:
    with trio.fail_after(30):
        async with connected(server) as client:
            with pytest.raises(StatusError) as info:
                await client.call(SVC, "Big", KV(value=str(MAX_DATA_LENGTH)), KV)
            assert (info.value.code, info.value.message) == (
                Code.RESOURCE_EXHAUSTED, "message length 4194314 exceed maximum message size of 4194304")
            got = await client.call(SVC, "Big", KV(value=str(MAX_DATA_LENGTH - 100)), KV)
            assert len(got.value) == MAX_DATA_LENGTH - 100


async def test_client_fails_only_the_call_whose_response_is_oversized() -> None:
    with trio.fail_after(30):
        left, right = memory_stream_pair()
        async with open_client(left) as client, trio.open_nursery() as nursery:
            outcomes: dict[str, object] = {}

            async def call(name: str) -> None:
                try:
                    outcomes[name] = await client.call(SVC, "Echo", KV(key=name), KV)
                except StatusError as exc:
                    outcomes[name] = (exc.code, exc.message)

            nursery.start_soon(call, "first")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(call, "second")
            peer = RawPeer(right)
            assert [(await peer.next()).stream_id for _ in range(2)] == [1, 3]  # type: ignore[attr-defined]
            length = MAX_DATA_LENGTH + 10
            await peer.send(encode_header(length, 1, MessageType.RESPONSE) + b"\x00" * length)
            ok = ttrpc_pb2.Response(payload=KV(key="second").SerializeToString()).SerializeToString()
            await peer.send(encode_frame(3, MessageType.RESPONSE, ok))
        assert outcomes == {"first": (Code.RESOURCE_EXHAUSTED,
                                      "message length 4194314 exceed maximum message size of 4194304"),
                            "second": KV(key="second")}


async def test_peer_closing_mid_call_fails_every_pending_call() -> None:
    with trio.fail_after(10):
        left, right = memory_stream_pair()
        async with open_client(left) as client:
            errors: list[BaseException] = []

            async def call(i: int) -> None:
                with pytest.raises(ConnectionClosed) as info:
                    await client.call(SVC, "Echo", KV(key=str(i)), KV)
                errors.append(info.value)

            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(call, i)
                peer = RawPeer(right)
                for _ in range(3):
                    assert isinstance(await peer.next(), Frame)
                await right.aclose()
            assert [(e.code, str(e)) for e in errors] == [(Code.UNAVAILABLE, "ttrpc: closed")] * 3
            assert client.closed
            with pytest.raises(ConnectionClosed):
                await client.call(SVC, "Echo", KV(), KV)


async def test_client_disconnect_cancels_in_flight_handlers(server: Server, rec: Recorder) -> None:
    with trio.fail_after(10):
        left, right = memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, right)
            async with open_client(left) as client:
                nursery.start_soon(_expect_closed, client)
                await rec.started.wait()
                assert server.connection_count == 1
        assert rec.cancelled == 1
        assert server.connection_count == 0


async def _expect_closed(client: Client) -> None:
    with pytest.raises(ConnectionClosed):
        await client.call(SVC, "Block", KV(), KV)


async def test_cancelled_call_drops_its_late_response(server: Server, rec: Recorder,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(10):
        async with connected(server) as client:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.call, SVC, "Block", KV(), KV)
                    await rec.started.wait()
                    scope.cancel()
            with caplog.at_level(logging.WARNING, logger="ttrpc.connection"):
                rec.release.set()
                await trio.testing.wait_all_tasks_blocked()
            assert "received message on inactive stream 1" in caplog.text
            assert await client.call(SVC, "Echo", KV(key="next"), KV) == KV(key="next")


async def test_graceful_shutdown_waits_for_in_flight_call(server: Server, rec: Recorder) -> None:
    with trio.fail_after(10):
        async with connected(server) as client, trio.open_nursery() as nursery:
            results: list[object] = []
            done = trio.Event()

            async def blocked() -> None:
                results.append(await client.call(SVC, "Block", KV(), KV))

            async def shutdown() -> None:
                await server.shutdown()
                done.set()

            nursery.start_soon(blocked)
            await rec.started.wait()
            nursery.start_soon(shutdown)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set() and results == []
            # the connection is still active, so it keeps serving (as Go's Shutdown does)
            assert await client.call(SVC, "Echo", KV(key="during"), KV) == KV(key="during")
            rec.release.set()
            await done.wait()
            assert results == [KV(value="released")]
            assert server.connection_count == 0 and rec.cancelled == 0
            with pytest.raises(ConnectionClosed):
                await client.call(SVC, "Echo", KV(), KV)


async def test_shutdown_closes_idle_connections_at_once(server: Server) -> None:
    with trio.fail_after(10):
        async with connected(server) as client:
            assert await client.call(SVC, "Echo", KV(key="a"), KV) == KV(key="a")
            await server.shutdown()
            assert server.connection_count == 0
            with pytest.raises(ConnectionClosed):
                await client.call(SVC, "Echo", KV(), KV)


async def test_close_cancels_everything(server: Server, rec: Recorder) -> None:
    with trio.fail_after(10):
        async with connected(server) as client, trio.open_nursery() as nursery:
            nursery.start_soon(_expect_closed, client)
            await rec.started.wait()
            server.close()
        assert rec.cancelled == 1


async def test_protocol_junk_is_answered_and_never_kills_the_connection(server: Server) -> None:
    with trio.fail_after(10):
        async with raw_connection(server) as peer:
            await peer.send(raw_request(2, "Echo", KV()))  # even id
            assert (await peer.response())[1].status.message == "StreamID must be odd for client initiated streams"
            await peer.send(encode_frame(1, MessageType.REQUEST, b"\xff\xff"))
            sid, resp = await peer.response()
            assert (sid, resp.status.code) == (1, Code.INVALID_ARGUMENT)
            assert resp.status.message.startswith("unmarshal request error: ")
            await peer.send(encode_frame(5, MessageType.DATA, b"x", 1))
            assert (await peer.response())[1].status.message == "StreamID is no longer active"
            await peer.send(encode_frame(7, 9, b"unknown type") + raw_request(9, "Echo", KV(key="ok")))
            sid, resp = await peer.response()
            assert (sid, KV.FromString(resp.payload)) == (9, KV(key="ok"))
            await peer.send(raw_request(9, "Echo", KV()))
            assert (await peer.response())[1].status.message == "StreamID cannot be re-used and must increment"
            await peer.send(b"\x00\x00\x00")  # then EOF inside a frame: only this connection ends
            await peer.stream.send_stream.aclose()  # type: ignore[attr-defined]
            assert await peer.next() is CLOSED
        assert server.connection_count == 0


class _BrokenWrites(trio.abc.Stream):
    """A server-side stream whose writes fail, as when the peer vanished."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("peer gone")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_failing_write_ends_only_that_connection(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(10):
        bad_left, bad_right = memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, _BrokenWrites(bad_right))
            async with connected(server) as good, open_client(bad_left) as bad:
                with caplog.at_level(logging.WARNING, logger="ttrpc.server"):
                    with pytest.raises(ConnectionClosed):
                        await bad.call(SVC, "Echo", KV(key="lost"), KV)
                assert "failed sending message on channel" in caplog.text
                assert await good.call(SVC, "Echo", KV(key="good"), KV) == KV(key="good")
                assert server.connection_count == 1


async def test_register_refuses_duplicate_service(server: Server) -> None:
    with trio.fail_after(1):
        with pytest.raises(ValueError, match="duplicate service test.v1.Svc registered"):
            server.register(SVC, {})
        await trio.lowlevel.checkpoint()


async def test_client_drops_oversized_frame_for_an_unknown_id() -> None:
    with trio.fail_after(10):
        left, right = memory_stream_pair()
        async with open_client(left) as client, trio.open_nursery() as nursery:
            nursery.start_soon(_expect_echo, client)
            peer = RawPeer(right)
            frame = await peer.next()
            assert isinstance(frame, Frame) and frame.stream_id == 1
            await peer.send(encode_header(MAX_DATA_LENGTH + 1, 99, 2) + b"\x00" * (MAX_DATA_LENGTH + 1))
            ok = ttrpc_pb2.Response(payload=KV(key="x").SerializeToString()).SerializeToString()
            await peer.send(encode_frame(1, MessageType.RESPONSE, ok))


async def _expect_echo(client: Client) -> None:
    assert await client.call(SVC, "Echo", KV(key="x"), KV) == KV(key="x")
