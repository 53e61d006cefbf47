"""trio ttrpc client: many concurrent unary calls over one connection.

Ownership and rules:
- ``open_client(stream)`` / ``open_unix_client(path)`` open a nursery and run the client's reader task in it.  The
  reader owns the stream: it closes it when it ends (peer EOF, broken connection, protocol error, ``aclose``), and
  then fails every pending call with ConnectionClosed.  Calls after that fail at once with ConnectionClosed.
- A call registers its stream id before its frame is written, so a fast response is never lost; the caller then
  parks until the reader delivers the outcome.  A caller that gives up (timeout, cancellation) forgets its id; a late
  response is logged and dropped by the sans-IO layer.
- Deadlines: ``timeout`` (seconds) becomes a local trio deadline that raises StatusError DEADLINE_EXCEEDED, and the
  effective deadline (``timeout`` or an enclosing cancel scope's, whichever is earlier) is sent as ``timeout_nano``,
  as Go derives it from the context.  An already expired deadline fails before anything is sent.
- Writes are serialized by one lock.  If a write fails or is interrupted part-way (e.g. cancelled while blocked on a
  full socket), the stream's state is unknown, so the whole connection is closed: the interrupted caller gets its
  cancellation, every other pending call ConnectionClosed.
- Only Request frames with flags 0 are sent; a request over 4 MiB fails locally with RESOURCE_EXHAUSTED.
- Non-OK responses raise StatusError(message, code); metadata keys are sent lowercased.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import outcome
import trio
from google.protobuf.message import DecodeError, Message

from ttrpc.connection import ClientConnection, ResponseReceived
from ttrpc.status import Code, ConnectionClosed, StatusError
from ttrpc.transport import receive_events, send_frame

__all__ = ["Client", "open_client", "open_unix_client"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


class _Waiter:
    """Hands one ResponseReceived (or an error) from the reader task to the calling task."""

    __slots__ = ("task", "result")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.result: outcome.Outcome[ResponseReceived] | None = None

    def deliver(self, result: outcome.Outcome[ResponseReceived]) -> None:
        task, self.task = self.task, None
        if task is None:
            self.result = result  # the caller has not parked yet; it picks this up in wait()
        else:
            trio.lowlevel.reschedule(task, result)

    async def wait(self) -> ResponseReceived:
        if self.result is not None:
            return self.result.unwrap()
        self.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)


class Client:
    """A ttrpc client on one stream; create it with open_client() or open_unix_client()."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._conn = ClientConnection()
        self._lock = trio.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._closed = False
        self._reader_scope = trio.CancelScope()
        self._reader_started = False
        self._reader_done = trio.Event()

    @property
    def closed(self) -> bool:
        """The connection is gone (closed by either side); every later call fails with ConnectionClosed."""
        return self._closed

    async def call(self, service: str, method: str, request: Message, response_type: type[M], *,
                   timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()) -> M:
        """One unary call; raises StatusError for a non-OK answer and ConnectionClosed if the connection ends."""
        payload = request.SerializeToString()
        if timeout is None:
            event = await self._roundtrip(service, method, payload, metadata)
        else:
            with trio.move_on_after(max(timeout, 0.0)):
                event = await self._roundtrip(service, method, payload, metadata)
                return _result(event, response_type)
            raise StatusError("context deadline exceeded", Code.DEADLINE_EXCEEDED)
        return _result(event, response_type)

    async def _roundtrip(self, service: str, method: str, payload: bytes,
                         metadata: Sequence[tuple[str, str]]) -> ResponseReceived:
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise ConnectionClosed()
        timeout_nano = 0
        deadline = trio.current_effective_deadline()
        if deadline != math.inf:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                await trio.lowlevel.checkpoint()  # delivers the expired deadline before anything is sent
            timeout_nano = max(1, int(remaining * 1e9))
        sid, frame = self._conn.send_request(service, method, payload, timeout_nano=timeout_nano,
                                             metadata=metadata)
        waiter = _Waiter()
        self._waiters[sid] = waiter
        try:
            await self._send(frame)
            return await waiter.wait()
        finally:
            if self._waiters.pop(sid, None) is not None:  # still registered: we gave up or failed
                self._conn.forget(sid)

    async def _send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionClosed()
        try:
            await send_frame(self._lock, self._stream, data, self._broken)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed() from exc

    def _broken(self) -> None:
        self._close("a write failed or was interrupted part-way")

    def _close(self, reason: str) -> None:
        if not self._closed:
            log.debug("ttrpc client: closing connection: %s", reason)
        self._closed = True
        self._reader_scope.cancel()

    async def _run_reader(self) -> None:
        """The reader task (see the module rules); started by open_client."""
        self._reader_started = True
        conn = self._conn
        waiters = self._waiters
        try:
            with self._reader_scope:
                while (events := await receive_events(self._stream, conn)) is not None:
                    for event in events:
                        waiter = waiters.pop(event.stream_id, None)
                        if waiter is not None:
                            waiter.deliver(outcome.Value(event))
        finally:
            self._closed = True
            conn.close()
            pending = list(waiters.values())
            waiters.clear()
            for waiter in pending:
                waiter.deliver(outcome.Error(ConnectionClosed()))
            try:
                await trio.aclose_forcefully(self._stream)
            finally:
                # set even when an outer cancellation interrupts the close: aclose() waits for this, shielded
                self._reader_done.set()

    async def aclose(self) -> None:
        """Close the connection; pending calls fail with ConnectionClosed.  Idempotent."""
        self._close("closed by the application")
        if self._reader_started:
            with trio.CancelScope(shield=True):
                await self._reader_done.wait()
        else:
            await trio.aclose_forcefully(self._stream)


def _result(event: ResponseReceived, response_type: type[M]) -> M:
    if event.code != Code.OK:
        raise StatusError(event.message, event.code)
    try:
        return response_type.FromString(event.payload)
    except DecodeError as exc:
        raise StatusError(f"ttrpc: error unmarshalling response payload: {exc}", Code.INTERNAL) from exc


@asynccontextmanager
async def open_client(stream: trio.abc.Stream) -> AsyncIterator[Client]:
    """A Client on ``stream`` with its reader running; closes the client (and stream) on exit."""
    client = Client(stream)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._run_reader)
            try:
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as group:
        # The reader reports through the calls and does not raise, so a lone exception is the caller's own
        # (e.g. ConnectionClosed from a call): re-raise it as is, so `except StatusError` works for callers.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


@asynccontextmanager
async def open_unix_client(path: str) -> AsyncIterator[Client]:
    """Connect to a ttrpc server's unix socket; ``path`` may carry a ``unix://`` prefix."""
    if path.startswith("unix://"):
        path = path[len("unix://"):]
    stream = await trio.open_unix_socket(path)
    async with open_client(stream) as client:
        yield client
