"""Fuzzing the real ttrpc Server serving the real task service (RuncTaskService over the fake backend, taskfakes).

Each test (or hypothesis example) runs its own trio.run with an autojump clock: a fresh harness with two created
containers ("c1" for the garbage, "healthy" for the good connection), a ttrpc Server with the task service
registered as v2 and v3, connection A driven byte for byte (the garbage) and connection B a real Client that keeps
calling Connect and State while A is being fed.  What must hold:
- A gets exactly one Response per stream it opened: INTERNAL "ttrpc: error unmarshalling payload" for a payload
  that does not decode as that method's request, else the handler's own status (never UNKNOWN, never a handler
  traceback); frames the server answers itself get the sans-IO layer's exact rejection;
- B's calls all succeed, during and after, and A ending inside a frame closes A only;
- nothing hangs (every test is bounded by trio.fail_after on the mock clock).
Requests whose decoded fields would touch the host (a rootfs to mount, a bundle or checkpoint path outside the
example's temporary directory) are never sent: the service runs as root here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from trio.testing import memory_stream_pair

from protos import runc_options_pb2, task_types_pb2, ttrpc_pb2
from protos import task_v2_pb2 as pb
from shim.runc.typeurls import CHECKPOINT_OPTIONS, RUNC_OPTIONS
from shim.service import METHODS, SERVICES
from ttrpc.client import Client, open_client
from ttrpc.codec import NEED_DATA, FrameDecoder, encode_frame, oversize_message
from ttrpc.connection import MSG_DATA_ON_UNARY, Rejected, RequestReceived, ServerConnection
from ttrpc.frame import MAX_DATA_LENGTH, Frame, MessageType, encode_header
from ttrpc.server import Server
from ttrpc.status import Code, StatusError

from .taskfakes import Harness, harness

REQ, RESP, DATA = int(MessageType.REQUEST), int(MessageType.RESPONSE), int(MessageType.DATA)
NS = ttrpc_pb2.KeyValue(key="containerd-namespace-ttrpc", value="default")
TIMEOUT_NANO = 2_000_000_000  # every garbage call has a deadline, so a Wait on a live process ends too
# what a handler of the task service may answer on the fake backend; UNKNOWN would be an unexpected exception
HANDLER_CODES = {Code.OK, Code.NOT_FOUND, Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.ALREADY_EXISTS,
                 Code.DEADLINE_EXCEEDED, Code.UNIMPLEMENTED}
NOT_SET = {("Create", "rootfs")}  # a rootfs would be mounted for real


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None)


def full_requests(root: Path) -> dict[str, Message]:
    """One request per task method with every field set (but NOT_SET), naming container c1 and paths in root."""
    runc = runc_options_pb2.Options(binary_name="runc", root=str(root / "state"), systemd_cgroup=True)
    ckpt = runc_options_pb2.CheckpointOptions(exit=True, image_path=str(root / "img"), work_path=str(root / "work"))
    spec = json.dumps({"args": ["sh"], "cwd": "/", "terminal": False}).encode()
    update = pb.UpdateTaskRequest(id="c1", resources=any_pb2.Any(type_url="linux-resources", value=b'{"cpu": {}}'))
    update.annotations["a"] = "b"
    stdio = {"stdin": str(root / "in"), "stdout": str(root / "out"), "stderr": str(root / "err")}
    return {
        "State": pb.StateRequest(id="c1", exec_id="e1"),
        "Create": pb.CreateTaskRequest(id="c2", bundle=str(root / "c2"), terminal=True, **stdio,
                                       checkpoint=str(root / "ckpt"), parent_checkpoint=str(root / "parent"),
                                       options=any_pb2.Any(type_url=RUNC_OPTIONS, value=runc.SerializeToString())),
        "Start": pb.StartRequest(id="c1", exec_id="e1"),
        "Delete": pb.DeleteRequest(id="c1", exec_id="e1"),
        "Pids": pb.PidsRequest(id="c1"),
        "Pause": pb.PauseRequest(id="c1"),
        "Resume": pb.ResumeRequest(id="c1"),
        "Checkpoint": pb.CheckpointTaskRequest(id="c1", path=str(root / "ckpt-out"), options=any_pb2.Any(
            type_url=CHECKPOINT_OPTIONS, value=ckpt.SerializeToString())),
        "Kill": pb.KillRequest(id="c1", exec_id="e1", signal=9, all=True),
        "Exec": pb.ExecProcessRequest(id="c1", exec_id="e1", terminal=True, **stdio,
                                      spec=any_pb2.Any(type_url="process", value=spec)),
        "ResizePty": pb.ResizePtyRequest(id="c1", exec_id="e1", width=80, height=24),
        "CloseIO": pb.CloseIORequest(id="c1", exec_id="e1", stdin=True),
        "Update": update,
        "Wait": pb.WaitRequest(id="c1", exec_id="e1"),
        "Stats": pb.StatsRequest(id="c1"),
        "Connect": pb.ConnectRequest(id="c1"),
        "Shutdown": pb.ShutdownRequest(id="c1", now=True),
    }


def _inside(path: str, root: Path) -> bool:
    return not path or os.path.realpath(path).startswith(str(root) + os.sep)


def harmless(method: str, payload: bytes, root: Path) -> bool:
    """False for a request that would mount, or write or read paths outside ``root``, if it decoded."""
    try:
        req = METHODS[method][0].FromString(payload)
    except DecodeError:
        return True
    if method == "Create":
        return not req.rootfs and all(_inside(p, root) for p in (req.checkpoint, req.parent_checkpoint)) and (
            not os.path.exists(req.bundle) or _inside(req.bundle, root))
    if method == "Checkpoint":
        try:
            opts = runc_options_pb2.CheckpointOptions.FromString(req.options.value)
        except DecodeError:
            opts = runc_options_pb2.CheckpointOptions()
        return all(_inside(p, root) for p in (req.path, opts.image_path, opts.work_path))
    return True


def call_frame(sid: int, method: str, payload: bytes, service: str = SERVICES[0]) -> bytes:
    envelope = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=TIMEOUT_NANO,
                                 metadata=[NS])
    return encode_frame(sid, REQ, envelope.SerializeToString())


def check_handler_answer(method: str, payload: bytes, resp: ttrpc_pb2.Response) -> None:
    try:
        METHODS[method][0].FromString(payload)
    except DecodeError:
        assert resp.status.code == Code.INTERNAL, resp
        assert resp.status.message.startswith("ttrpc: error unmarshalling payload: ") and not resp.payload
    else:
        assert Code(resp.status.code) in HANDLER_CODES, (method, payload, resp)


# -- the site: a harness, a server, a garbage connection and a healthy one -------------------------------------------

class FailedHandlers(logging.Handler):
    """Records the server's "handler failed" errors (an exception that is not a StatusError)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Garbage:
    """Connection A: the test writes raw bytes and reads the server's frames."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.dec = FrameDecoder()

    async def send(self, data: bytes, cuts: list[int] = ()) -> None:
        start = 0
        for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
            if cut > start:
                await self.stream.send_all(data[start:cut])
                start = cut

    async def frame(self) -> Frame | None:
        """The next frame, or None when the server closed the connection."""
        while (item := self.dec.next_frame()) is NEED_DATA:
            self.dec.feed(await self.stream.receive_some())
        return item if isinstance(item, Frame) else None

    async def responses(self, count: int) -> list[tuple[int, ttrpc_pb2.Response]]:
        out = []
        for _ in range(count):
            frame = await self.frame()
            assert frame is not None and (frame.type, frame.flags) == (RESP, 0), frame
            out.append((frame.stream_id, ttrpc_pb2.Response.FromString(frame.data)))
        return out

    async def nothing_more(self) -> None:
        with trio.move_on_after(5):
            frame = await self.frame()
            raise AssertionError(f"unexpected frame {frame}")


@dataclasses.dataclass
class Site:
    h: Harness
    server: Server
    root: Path
    garbage: Garbage
    client: Client
    failed: FailedHandlers
    pids: dict[str, int]

    @property
    def healthy_pid(self) -> int:
        return self.pids["healthy"]

    async def healthy_calls(self, rounds: int = 3) -> None:
        """Connection B: Connect and State on the healthy container, all answered as usual."""
        for _ in range(rounds):
            got = await self.client.call(SERVICES[0], "Connect", pb.ConnectRequest(id="healthy"), pb.ConnectResponse)
            assert got.task_pid == self.healthy_pid
            state = await self.client.call(SERVICES[1], "State", pb.StateRequest(id="healthy"), pb.StateResponse)
            assert (state.id, state.status, state.pid) == ("healthy", task_types_pb2.CREATED, self.healthy_pid)

    async def alongside(self, garbage: Callable[[], Awaitable[None]]) -> None:
        """Run the garbage side and the healthy calls together, then the healthy calls once more."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.healthy_calls)
            await garbage()
        await self.healthy_calls(1)
        assert not self.failed.records, [r.getMessage() for r in self.failed.records]

    async def exchange(self, wire: bytes, cuts: list[int], count: int) -> list[tuple[int, ttrpc_pb2.Response]]:
        """Write ``wire`` on A (cut at ``cuts``) and read ``count`` answers, while B works."""
        answers: list[tuple[int, ttrpc_pb2.Response]] = []

        async def garbage() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.garbage.send, wire, cuts)
                answers.extend(await self.garbage.responses(count))

        await self.alongside(garbage)
        return answers

    async def garbage_still_serves(self, sid: int) -> None:
        """A good call on A is answered, and nothing else arrives on A."""
        await self.garbage.send(call_frame(sid, "Connect", pb.ConnectRequest(id="healthy").SerializeToString()))
        [(got, resp)] = await self.garbage.responses(1)
        assert got == sid and pb.ConnectResponse.FromString(resp.payload).task_pid == self.healthy_pid
        await self.garbage.nothing_more()

    async def garbage_cut_short(self) -> None:
        """A ends inside a frame: the server closes A and only A."""
        await self.garbage.stream.send_stream.aclose()
        assert await self.garbage.frame() is None
        await self.healthy_calls(1)
        assert self.server.connection_count == 1


def run_site(test: Callable[[Site], Awaitable[None]], root: Path | None = None) -> None:
    """Run ``test`` on a fresh site whose files live in ``root`` (a new temporary directory by default)."""
    if root is None:
        with tempfile.TemporaryDirectory() as tmp:
            run_site(test, Path(tmp).resolve())
        return

    async def main() -> None:
        failed = FailedHandlers()
        logging.getLogger("ttrpc.server").addHandler(failed)
        try:
            async with harness(root) as h:
                # pids above Linux's highest pid_max (2**22): Stats finds no real process's cgroup to sample in a
                # thread, whose time the autojump clock would not wait for
                h.backend.next_pid = 1 << 22
                pids = {}
                for cid in ("healthy", "c1"):
                    req = pb.CreateTaskRequest(id=cid, bundle=h.bundle(cid))
                    pids[cid] = (await h.service.create(None, req)).pid
                h.bundle("c2")
                server = Server(require_same_user=False)
                h.service.register(server)
                a_left, a_right = memory_stream_pair()
                b_left, b_right = memory_stream_pair()
                with trio.fail_after(60):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(server.handle_stream, a_right)
                        nursery.start_soon(server.handle_stream, b_right)
                        async with open_client(b_left) as client:
                            await test(Site(h, server, root, Garbage(a_left), client, failed, pids))
                        await a_left.aclose()
                assert server.connection_count == 0
        finally:
            logging.getLogger("ttrpc.server").removeHandler(failed)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.02))


async def call_each(site: Site, method: str, payloads: list[bytes], cuts: list[int] = ()) -> None:
    """Send one call per payload (ids 1, 3, ...; v2 and v3 in turn) on A while B works; check every answer."""
    wire = b"".join(call_frame(2 * i + 1, method, p, SERVICES[i % 2]) for i, p in enumerate(payloads))
    answers = await site.exchange(wire, cuts, len(payloads))
    assert sorted(sid for sid, _ in answers) == list(range(1, 2 * len(payloads), 2)), "one answer per stream"
    for sid, resp in answers:
        check_handler_answer(method, payloads[sid // 2], resp)
    await site.garbage_still_serves(2 * len(payloads) + 1)


# -- every method, every truncation ---------------------------------------------------------------------------------

def test_full_requests_set_every_field() -> None:
    for method, req in full_requests(Path("/nonexistent")).items():
        assert type(req) is METHODS[method][0]
        unset = {f.name for f in req.DESCRIPTOR.fields} - {f.name for f, _ in req.ListFields()}
        assert unset == {name for m, name in NOT_SET if m == method}, (method, unset)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_truncation_of_a_task_request_is_answered_once(method: str) -> None:
    """The method's request cut at every offset (the whole one too), pipelined on one connection."""

    async def test(site: Site) -> None:
        payload = full_requests(site.root)[method].SerializeToString()
        assert harmless(method, payload, site.root)
        await call_each(site, method, [payload[:n] for n in range(len(payload) + 1)], cuts=[7, 500, 3000])

    run_site(test)


# -- every method, corrupted ----------------------------------------------------------------------------------------

mutations = st.one_of(
    st.tuples(st.just("cut"), st.integers(0, 2**16)),
    st.tuples(st.just("set"), st.integers(0, 2**16), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 2**16), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=12)),
)


def mutate(payload: bytes, mutation: tuple) -> bytes:
    op, *args = mutation
    if op == "append":
        return payload + args[0]
    at = args[0] % (len(payload) + 1)
    if op == "cut":
        return payload[:at]
    if op == "insert":
        return payload[:at] + args[1] + payload[at:]
    at %= max(len(payload), 1)
    return payload[:at] + bytes([args[1]]) + payload[at + 1:]


@fuzz_settings(120)
@given(st.sampled_from(sorted(METHODS)), st.lists(st.lists(mutations, min_size=1, max_size=3), min_size=1,
                                                  max_size=6), st.lists(st.integers(0, 2000), max_size=6))
def test_corrupted_task_requests_are_answered_once(method: str, mutation_lists: list[list[tuple]],
                                                   cuts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        payloads = []
        for mutation_list in mutation_lists:
            payload = full_requests(root)[method].SerializeToString()
            for mutation in mutation_list:
                payload = mutate(payload, mutation)
            assume(harmless(method, payload, root))
            payloads.append(payload)
        run_site(lambda site: call_each(site, method, payloads, cuts), root)


# -- frame soups: the server answers what the sans-IO layer decides ---------------------------------------------------

def task_soups(root: Path) -> st.SearchStrategy[list[tuple[int, int, int, bytes]]]:
    """Frames of any type and flags on few ids; requests are task calls (maybe corrupted) or garbage envelopes."""
    full = {method: req.SerializeToString() for method, req in full_requests(root).items()}

    def envelope(call: tuple[str, str, tuple | None]) -> bytes:
        service, method, mutation = call
        payload = full.get(method, b"")
        return ttrpc_pb2.Request(service=service, method=method, timeout_nano=TIMEOUT_NANO, metadata=[NS],
                                 payload=mutate(payload, mutation) if mutation else payload).SerializeToString()

    calls = st.tuples(st.sampled_from([*SERVICES, "containerd.task.v4.Task"]),
                      st.sampled_from([*sorted(METHODS), "Nope"]), st.one_of(st.none(), mutations)).map(envelope)
    frames = st.one_of(
        st.tuples(st.just(REQ), calls),
        st.tuples(st.one_of(st.just(REQ), st.just(DATA), st.integers(0, 255)), st.binary(max_size=30)))
    return st.lists(st.tuples(frames, st.one_of(st.integers(0, 12), st.just(2**32 - 1)), st.integers(0, 255)).map(
        lambda t: (t[0][0], t[1], t[2], t[0][1])), max_size=10)


def oracle(wire: bytes) -> list[object]:
    """What the sans-IO layer makes of ``wire`` (the stream still open)."""
    conn = ServerConnection()
    events = []
    if wire:  # b"" would be end of stream
        conn.receive_data(wire)
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
    return events


@fuzz_settings(100)
@given(st.data(), st.sampled_from([b"", b"\x00\x00\x00\x09\x00"]), st.lists(st.integers(0, 3000), max_size=6))
def test_frame_soup_is_answered_as_the_rules_say(data: st.DataObject, tail: bytes, cuts: list[int]) -> None:
    """Any mix of frames on A: each rejection exactly as the sans-IO layer decides it, each accepted call answered
    once by dispatch; a stream that ends inside a frame closes A alone."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        items = data.draw(task_soups(root))
        wire = b"".join(encode_header(len(d), sid, typ, flags) + d for typ, sid, flags, d in items)
        events = oracle(wire)
        # a Data frame on a call still open answers it instead of its handler: which one comes first is timing
        assume(not any(isinstance(e, Rejected) and e.message == MSG_DATA_ON_UNARY for e in events))
        assume(all(harmless(e.request.method, e.request.payload, root) for e in events
                   if isinstance(e, RequestReceived) and e.request.method in METHODS))
        run_site(lambda site: soup_test(site, wire + tail, events, cuts, bool(tail)), root)


async def soup_test(site: Site, wire: bytes, events: list[object], cuts: list[int], cut_short: bool) -> None:
    answers = await site.exchange(wire, cuts, len(events))
    by_id: dict[int, list[ttrpc_pb2.Response]] = {}
    for sid, resp in answers:
        by_id.setdefault(sid, []).append(resp)
    for event in events:  # first the rejections, exactly
        if isinstance(event, Rejected):
            got = [(r.status.code, r.status.message) for r in by_id.get(event.stream_id, [])]
            assert (event.code, event.message) in got, (event, got)
            by_id[event.stream_id].pop(got.index((event.code, event.message)))
    for event in events:  # then one answer per accepted call, by dispatch
        if isinstance(event, RequestReceived):
            [resp] = by_id.pop(event.stream_id)
            req = event.request
            if req.service not in SERVICES or req.method not in METHODS:
                assert resp.status.code == Code.UNIMPLEMENTED, resp
            else:
                check_handler_answer(req.method, req.payload, resp)
    assert not any(by_id.values()), by_id
    if cut_short:
        await site.garbage_cut_short()
    else:
        await site.garbage.nothing_more()


# -- Data frames and oversized frames ---------------------------------------------------------------------------------

def test_data_frame_on_an_open_task_call_answers_it_once() -> None:
    """A Data frame on a Wait still waiting: INVALID_ARGUMENT on that stream, the Wait's own answer (once the
    process exits) is dropped, and the connection goes on."""

    async def test(site: Site) -> None:
        wait = ttrpc_pb2.Request(service=SERVICES[0], method="Wait", metadata=[NS],
                                 payload=pb.WaitRequest(id="c1").SerializeToString())

        async def garbage() -> None:
            await site.garbage.send(encode_frame(1, REQ, wait.SerializeToString()))
            await trio.testing.wait_all_tasks_blocked()
            await site.garbage.send(encode_frame(1, DATA, b"more", 0x01))
            [(sid, resp)] = await site.garbage.responses(1)
            assert (sid, resp.status.code, resp.status.message) == (1, Code.INVALID_ARGUMENT, MSG_DATA_ON_UNARY)
            site.h.exit(site.pids["c1"], 0)  # the Wait returns now; its answer has nowhere to go
            await trio.testing.wait_all_tasks_blocked()

        await site.alongside(garbage)
        await site.garbage_still_serves(3)

    run_site(test)


@pytest.mark.parametrize("typ", [REQ, DATA, 9])
def test_oversize_frame_is_rejected_and_only_its_connection_closes(typ: int) -> None:
    """A frame over 4 MiB (any type) gets RESOURCE_EXHAUSTED and A goes on; then a header announcing 4 GiB and a
    stream that ends inside it: nothing of it is buffered, and A alone is closed."""

    async def test(site: Site) -> None:
        length = MAX_DATA_LENGTH + 1

        async def garbage() -> None:
            await site.garbage.send(encode_header(length, 1, typ))
            for offset in range(0, length, 1 << 20):
                await site.garbage.send(bytes(min(1 << 20, length - offset)))
            [(sid, resp)] = await site.garbage.responses(1)
            assert (sid, resp.status.code, resp.status.message) == (1, Code.RESOURCE_EXHAUSTED,
                                                                    oversize_message(length))

        await site.alongside(garbage)
        await site.garbage_still_serves(3)
        await site.garbage.send(encode_header(2**32 - 1, 5, typ) + bytes(1 << 20))
        await trio.testing.wait_all_tasks_blocked()
        assert [conn.proto._decoder.buffered for conn in site.server._connections] == [0, 0]
        await site.garbage_cut_short()

    run_site(test)


# -- the trio client against any answer bytes -------------------------------------------------------------------------

answer_frames = st.tuples(st.one_of(st.just(RESP), st.integers(0, 255)), st.sampled_from([1, 3, 5, 0, 7]),
                          st.integers(0, 255), st.one_of(st.binary(max_size=24), st.builds(
                              lambda payload, code, message: ttrpc_pb2.Response(
                                  payload=payload, status={"code": code, "message": message}).SerializeToString(),
                              st.binary(max_size=12), st.one_of(st.just(0), st.integers(0, 20)),
                              st.text(max_size=8))))


@fuzz_settings(100)
@given(st.lists(answer_frames, max_size=8), st.sampled_from([b"", b"\x00\x00"]), st.lists(st.integers(0, 400),
                                                                                       max_size=5))
def test_client_calls_end_with_a_result_or_a_status_error(frames: list[tuple[int, int, int, bytes]], tail: bytes,
                                                          cuts: list[int]) -> None:
    """Three calls in flight, then any frames (and maybe half a frame) and the end of the connection: each call
    returns a decoded response or raises StatusError (ConnectionClosed for those left unanswered), exactly once."""
    wire = b"".join(encode_header(len(d), sid, typ, flags) + d for typ, sid, flags, d in frames) + tail

    async def main() -> None:
        left, right = memory_stream_pair()
        outcomes: dict[int, object] = {}

        async def call(i: int) -> None:
            try:
                outcomes[i] = await client.call(SERVICES[0], "Connect", pb.ConnectRequest(id=str(i)),
                                                pb.ConnectResponse)
            except StatusError as exc:
                outcomes[i] = exc.code

        with trio.fail_after(10):
            async with open_client(left) as client, trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(call, i)
                peer = Garbage(right)
                assert [(await peer.frame()).stream_id for _ in range(3)] == [1, 3, 5]  # type: ignore[union-attr]
                await peer.send(wire, cuts)
                await right.aclose()
        assert sorted(outcomes) == [0, 1, 2]
        assert all(isinstance(o, (pb.ConnectResponse, Code)) for o in outcomes.values()), outcomes

    trio.run(main)


# -- found by review: deeply nested JSON ----------------------------------------------------------------------------

def test_deeply_nested_json_in_exec_and_update_is_an_invalid_argument() -> None:
    """An Exec spec or Update resources of 10,000 nested arrays is as invalid as any other bad JSON."""

    async def test(site: Site) -> None:
        nested = b"[" * 10_000 + b"]" * 10_000
        exec_ = pb.ExecProcessRequest(id="c1", exec_id="e9", spec=any_pb2.Any(type_url="process", value=nested))
        update = pb.UpdateTaskRequest(id="c1", resources=any_pb2.Any(type_url="linux-resources", value=nested))
        wire = call_frame(1, "Exec", exec_.SerializeToString()) + call_frame(3, "Update", update.SerializeToString())
        answers = sorted(await site.exchange(wire, [], 2), key=lambda answer: answer[0])
        assert [(sid, resp.status.code) for sid, resp in answers] == [(1, Code.INVALID_ARGUMENT),
                                                                      (3, Code.INVALID_ARGUMENT)], answers

    run_site(test)
