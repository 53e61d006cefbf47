"""Fuzz properties of the sans-IO ttrpc layer (codec.py, connection.py), and the atheris corpus run without atheris.

Rules: the rule checks live in the atheris harness (tests/fuzz/fuzz_ttrpc.py: ServerRun, run_client, one_input) so
that atheris and these tests assert the same things; here hypothesis builds "frame soups" (valid, truncated and
random envelopes, Data frames, unknown types and flags, even, reused and huge ids, frames over the limit, a tail
cut inside a frame) and an independent model of the module rules says which events they must give, whole and split
at hypothesis-chosen points.  Every test is derandomized and keeps no example database, so CI runs the same
examples each time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from protos import ttrpc_pb2
from tests.fuzz.fuzz_ttrpc import (
    LIMITS,
    ServerRun,
    check_response_bytes,
    one_input,
    pieces,
    run_client,
    run_server,
    seed_inputs,
)
from ttrpc import connection
from ttrpc.codec import NEED_DATA, FrameDecoder, encode_frame, oversize_message
from ttrpc.connection import (
    MSG_DATA_ON_UNARY,
    MSG_INACTIVE,
    MSG_ODD,
    MSG_REUSED,
    MIN_DATA_LENGTH,
    ClientConnection,
    Rejected,
    RequestReceived,
    ResponseReceived,
    ServerConnection,
    encode_response_data,
)
from ttrpc.frame import HEADER_LENGTH, MAX_DATA_LENGTH, Frame, MessageType, encode_header
from ttrpc.status import Code, RemoteProtocolError

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus" / "ttrpc"
LIMIT = 128  # small, so that frames over the limit are common in the soups
REQ, RESP, DATA = int(MessageType.REQUEST), int(MessageType.RESPONSE), int(MessageType.DATA)


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None)


# -- the committed corpus ------------------------------------------------------------------------------------------

def test_committed_corpus_passes_the_harness_and_stays_small() -> None:
    files = sorted(p for p in CORPUS.iterdir() if p.is_file())
    contents = {p.read_bytes() for p in files}
    assert set(seed_inputs().values()) <= contents, "a seed of fuzz_ttrpc.seed_inputs() is missing from the corpus"
    assert len(files) <= 64 and sum(p.stat().st_size for p in files) <= 32 * 1024, "keep the committed corpus small"
    for path in files:
        one_input(path.read_bytes())


@fuzz_settings(1500)
@given(st.binary(max_size=600))
def test_harness_rules_hold_for_any_bytes(data: bytes) -> None:
    one_input(data)


# -- server: frame soups against a model of the rules ---------------------------------------------------------------

# few ids, so that Data frames and repeated requests meet the calls they name; and the extremes
stream_ids = st.one_of(st.sampled_from([1, 3, 5, 9, 13, 0, 2, 4]), st.integers(0, 40),
                       st.sampled_from([2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]))
metadata = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=2)


def envelope(service: str, method: str, payload: bytes, timeout: int, md: list[tuple[str, str]]) -> bytes:
    req = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout)
    for key, value in md:
        req.metadata.add(key=key, value=value)
    return req.SerializeToString()


valid_envelopes = st.builds(envelope, st.sampled_from(["containerd.task.v2.Task", "containerd.task.v3.Task", ""]),
                            st.sampled_from(["State", "Create", "Kill", "", "Nope"]), st.binary(max_size=90),
                            st.integers(-(2**63), 2**63 - 1), metadata)
over_limit = st.integers(LIMIT + 1, LIMIT + 80).map(lambda n: b"\xab" * n)
envelopes = st.one_of(
    valid_envelopes,
    valid_envelopes.flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),  # truncated
    st.binary(max_size=40),
    over_limit,
)
frame_types = st.one_of(st.just(REQ), st.just(DATA), st.integers(0, 255))
soup_items = st.tuples(frame_types, st.one_of(st.none(), stream_ids), st.integers(0, 255),
                       st.one_of(st.binary(max_size=20), over_limit)).flatmap(
    lambda t: envelopes.map(lambda env: (t[0], t[1], t[2], env)) if t[0] == REQ else st.just(t))


def same_id_as_before(items: list[tuple[int, int | None, int, bytes]]) -> list[tuple[int, int, int, bytes]]:
    """An id None repeats the previous frame's id (a Data frame on the call just opened, a reused id, ...)."""
    out, sid = [], 1
    for typ, maybe, flags, data in items:
        sid = sid if maybe is None else maybe
        out.append((typ, sid, flags, data))
    return out


call_then_data = st.tuples(stream_ids, valid_envelopes, st.integers(0, 255), st.binary(max_size=8)).map(
    lambda t: [(REQ, t[0], 0, t[1]), (DATA, None, t[2], t[3])])
soups = st.lists(st.one_of(soup_items.map(lambda item: [item]), call_then_data), max_size=12).map(
    lambda groups: same_id_as_before([item for group in groups for item in group]))
tails = st.one_of(st.just(b""), st.tuples(frame_types, stream_ids, st.binary(max_size=200)).flatmap(
    lambda t: (lambda f: st.integers(1, len(f) - 1).map(lambda n: f[:n]))(
        encode_header(len(t[2]), t[1], t[0]) + t[2])))


def soup_bytes(items: list[tuple[int, int, int, bytes]], tail: bytes) -> bytes:
    return b"".join(encode_header(len(data), sid, typ, flags) + data for typ, sid, flags, data in items) + tail


def server_model(items: list[tuple[int, int, int, bytes]], tail: bytes, limit: int) -> list[object]:
    """The events the module rules promise, with ServerRun's answering policy (answer ids with bit 1 at once)."""
    out: list[object] = []
    last, open_, deferred = 0, set(), []

    def reject(sid: int, code: Code, message: str) -> None:
        out.append(("rejected", sid, code, message))

    for typ, sid, flags, data in items:
        if len(data) > limit:
            reject(sid, Code.RESOURCE_EXHAUSTED, oversize_message(len(data), limit))
            open_.discard(sid)
        elif typ == REQ:
            if sid % 2 == 0:
                reject(sid, Code.INVALID_ARGUMENT, MSG_ODD)
                continue
            try:
                req = ttrpc_pb2.Request.FromString(data)
            except DecodeError as exc:
                reject(sid, Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}")
                continue
            if sid <= last:
                reject(sid, Code.INVALID_ARGUMENT, MSG_REUSED)
                continue
            last = sid
            out.append(("request", sid, req.SerializeToString(deterministic=True), flags))
            if sid & 2:
                out.append(("answered", sid))
            else:
                open_.add(sid)
                deferred.append(sid)
        elif typ == DATA:
            if sid % 2 == 0:
                reject(sid, Code.INVALID_ARGUMENT, MSG_ODD)
            elif sid in open_:
                reject(sid, Code.INVALID_ARGUMENT, MSG_DATA_ON_UNARY)
                open_.discard(sid)
            else:
                reject(sid, Code.INVALID_ARGUMENT, MSG_INACTIVE)
        # any other type: ignored, whatever its flags
    out.append("error" if tail else "closed")
    out += [("answered" if sid in open_ else "dropped", sid) for sid in deferred]
    return out


def kinds(events: list[object]) -> list[object]:
    return ["error" if isinstance(e, tuple) and e[0] == "error" else e for e in events]


@fuzz_settings(600)
@given(soups, tails, st.lists(st.integers(0, 4000), max_size=12))
def test_server_soup_gives_the_modelled_events_however_split(items: list[tuple[int, int, int, bytes]], tail: bytes,
                                                              cuts: list[int]) -> None:
    wire = soup_bytes(items, tail)
    expected = server_model(items, tail, LIMIT)
    whole = run_server([wire], LIMIT)
    assert kinds(whole) == expected
    assert run_server(pieces(wire, sorted(c % (len(wire) + 1) for c in cuts)), LIMIT) == whole


@fuzz_settings(150)
@given(soups.map(lambda items: items[:6]), tails)
def test_server_soup_fed_byte_by_byte(items: list[tuple[int, int, int, bytes]], tail: bytes) -> None:
    wire = soup_bytes(items, tail)
    assert kinds(run_server([wire[i:i + 1] for i in range(len(wire))], LIMIT)) == server_model(items, tail, LIMIT)


# -- server: lengths over the real 4 MiB limit ---------------------------------------------------------------------

@fuzz_settings(200)
@given(st.integers(MAX_DATA_LENGTH + 1, 2**32 - 1), stream_ids, st.integers(0, 255), st.integers(0, 255),
       st.integers(0, 200_000), st.lists(st.integers(0, 200_010), max_size=8))
def test_oversize_length_header_buffers_nothing(length: int, sid: int, typ: int, flags: int, body: int,
                                                cuts: list[int]) -> None:
    """Any announced length over 4 MiB: no event, nothing buffered past the header while its data streams in,
    and a stream that ends inside it is a RemoteProtocolError."""
    conn = ServerConnection()
    wire = encode_header(length, sid, typ, flags) + bytes(body)
    for piece in pieces(wire, sorted(c % (len(wire) + 1) for c in cuts)):
        conn.receive_data(piece)
        assert conn.next_event() is NEED_DATA
        assert conn._decoder.buffered < HEADER_LENGTH
    conn.receive_data(b"")
    try:
        conn.next_event()
    except RemoteProtocolError as exc:
        assert f"{length - body} bytes of an oversized frame not received" in str(exc)
    else:
        raise AssertionError("end of stream inside an oversized frame must be a RemoteProtocolError")


@fuzz_settings(16)
@given(st.integers(1, 64), st.sampled_from([REQ, RESP, DATA, 0, 200]), st.integers(0, 255), st.booleans(),
       st.lists(st.integers(1, MAX_DATA_LENGTH), min_size=1, max_size=3))
def test_oversize_frame_is_answered_and_the_connection_continues(extra: int, typ: int, flags: int, on_open: bool,
                                                                  cuts: list[int]) -> None:
    """A whole frame just over 4 MiB, of any type, on an open call or not: RESOURCE_EXHAUSTED on its id (closing
    that call), then the next request is served."""
    conn = ServerConnection()
    length = MAX_DATA_LENGTH + extra
    request = envelope("containerd.task.v2.Task", "State", b"", 0, [])
    wire = encode_frame(1, REQ, request) if on_open else b""
    wire += encode_header(length, 1, typ, flags) + bytes(length) + encode_frame(3, REQ, request)
    events = []
    for piece in pieces(wire, sorted(cuts)):
        conn.receive_data(piece)
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
        assert conn._decoder.buffered < HEADER_LENGTH + MAX_DATA_LENGTH
    opened = [RequestReceived(1, ttrpc_pb2.Request.FromString(request))] if on_open else []
    assert events == [*opened, Rejected(1, Code.RESOURCE_EXHAUSTED, oversize_message(length)),
                      RequestReceived(3, ttrpc_pb2.Request.FromString(request))]
    assert conn.open_streams == {3}
    assert conn.send_response(1, b"late") is None


# -- client: arbitrary answers --------------------------------------------------------------------------------------

def response_bytes(payload: bytes, code: int, message: str) -> bytes:
    resp = ttrpc_pb2.Response(payload=payload)
    if code >= 0:
        resp.status.code, resp.status.message = code, message
    return resp.SerializeToString()


valid_responses = st.builds(response_bytes, st.binary(max_size=60), st.integers(-2, 20), st.text(max_size=20))
answers = st.one_of(valid_responses, valid_responses.flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
                    st.binary(max_size=40), over_limit)
client_items = st.tuples(st.one_of(st.just(RESP), st.integers(0, 255)), st.integers(0, 12), st.integers(0, 255),
                         answers)


def client_model(items: list[tuple[int, int, int, bytes]], calls: int, tail: bytes, limit: int) -> list[object]:
    pending = set(range(1, 2 * calls, 2))
    out: list[object] = []
    for typ, sid, _flags, data in items:
        if sid not in pending:
            continue  # an answer nobody waits for is dropped, whatever it is
        pending.discard(sid)
        if len(data) > limit:
            out.append(ResponseReceived(sid, b"", Code.RESOURCE_EXHAUSTED, oversize_message(len(data), limit)))
        elif typ != RESP:
            message = f"ttrpc: unexpected message type {typ} on a unary call"
            out.append(ResponseReceived(sid, b"", Code.INTERNAL, message))
        else:
            try:
                resp = ttrpc_pb2.Response.FromString(data)
            except DecodeError as exc:
                out.append(ResponseReceived(sid, b"", Code.INTERNAL, f"ttrpc: error unmarshalling response: {exc}"))
                continue
            if resp.status.code != 0:
                out.append(ResponseReceived(sid, b"", Code.from_wire(resp.status.code), resp.status.message))
            else:
                out.append(ResponseReceived(sid, resp.payload))
    out.append("error" if tail else "closed")
    return out


@fuzz_settings(600)
@given(st.lists(client_items, max_size=12), st.integers(0, 6), st.sampled_from([b"", b"\x00\x00\x00\x01\x00"]),
       st.lists(st.integers(0, 3000), max_size=10))
def test_client_answers_settle_each_pending_call_at_most_once(items: list[tuple[int, int, int, bytes]], calls: int,
                                                               tail: bytes, cuts: list[int]) -> None:
    wire = soup_bytes(items, tail)
    whole = run_client([wire], LIMIT, calls)
    assert kinds(whole) == client_model(items, calls, tail, LIMIT)
    assert run_client(pieces(wire, sorted(c % (len(wire) + 1) for c in cuts)), LIMIT, calls) == whole


# -- the harness's checks bite ----------------------------------------------------------------------------------------

SEEDS = seed_inputs()


def test_harness_limits_include_the_real_one_and_small_ones() -> None:
    assert LIMITS[0] == MAX_DATA_LENGTH and min(LIMITS) == LIMIT
    run = ServerRun(LIMIT)
    big = envelope("s", "m", b"x" * 200, 0, [])
    assert not run.feed(encode_frame(1, REQ, big))  # over the limit: rejected
    assert run.out == [("rejected", 1, Code.RESOURCE_EXHAUSTED, oversize_message(len(big), LIMIT))]


def _answer_twice(self: ServerConnection, stream_id: int, payload: bytes = b"", code: Code = Code.OK,
                  message: str = "") -> bytes:
    return encode_frame(stream_id, RESP, encode_response_data(payload, code, message))


@pytest.mark.parametrize(("broken", "seed", "complaint"), [
    # a connection that answers a stream twice
    (lambda mp: mp.setattr(ServerConnection, "send_response", _answer_twice), "task-calls-whole", "answered twice"),
    # one that buffers the data of an oversized frame instead of skipping it
    (lambda mp: mp.setattr(connection, "FrameDecoder", lambda limit: FrameDecoder(limit * 4)),
     "oversize-frame-then-call", "bytes buffered, limit 128"),
    # one that accepts even stream ids
    (lambda mp: mp.setattr(ServerConnection, "_on_frame", _accept_even), "even-reused-unknown",
     "accepted stream id 2 after 0"),
    # a client that settles a call twice
    (lambda mp: mp.setattr(ClientConnection, "_settle", _settle_always), "client-answers", "settled twice"),
], ids=["answered-twice", "oversize-buffered", "even-id-accepted", "settled-twice"])
def test_harness_detects_a_broken_connection(monkeypatch: pytest.MonkeyPatch, broken, seed: str,
                                             complaint: str) -> None:
    one_input(SEEDS[seed])  # passes as the library is
    broken(monkeypatch)
    with pytest.raises(AssertionError, match=complaint):
        one_input(SEEDS[seed])


_on_frame = ServerConnection._on_frame


def _accept_even(self: ServerConnection, frame: Frame) -> object:
    if frame.type == REQ and frame.stream_id % 2 == 0:
        return RequestReceived(frame.stream_id, ttrpc_pb2.Request.FromString(frame.data), frame.flags)
    return _on_frame(self, frame)


def _settle_always(self: ClientConnection, sid: int, code: Code, message: str, payload: bytes = b"") -> object:
    self._pending.discard(sid)
    return ResponseReceived(sid, payload, code, message)


# -- a limit too small for the server's own answers -----------------------------------------------------------------

@pytest.mark.parametrize("limit", [0, 16, 73, MIN_DATA_LENGTH - 1])
def test_server_connection_refuses_a_limit_its_own_answers_do_not_fit(limit: int) -> None:
    """Below MIN_DATA_LENGTH even the RESOURCE_EXHAUSTED answer that replaces an oversized one would be over the
    limit, and encode_rejection / send_response raised LocalProtocolError instead of answering."""
    with pytest.raises(ValueError, match="max_data_length"):
        ServerConnection(limit)


@fuzz_settings(100)
@given(st.integers(0, 2**32 - 1), st.sampled_from(list(Code)), st.text(max_size=300), st.binary(max_size=300))
def test_at_the_smallest_limit_every_answer_is_one_well_formed_frame(sid: int, code: Code, message: str,
                                                                     payload: bytes) -> None:
    conn = ServerConnection(MIN_DATA_LENGTH)
    rejection = Rejected(sid, code, message)
    check_response_bytes(conn.encode_rejection(rejection), sid, code, message, b"", MIN_DATA_LENGTH)
    conn._open.add(sid)  # as if a call were open on that id (any id: the bytes must fit whatever it is)
    data = conn.send_response(sid, payload, code, message)
    check_response_bytes(data, sid, code, message, payload, MIN_DATA_LENGTH)
