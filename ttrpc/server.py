"""trio ttrpc server: accept loop, one task per connection, one task per request, graceful shutdown.

Ownership and rules:
- ``serve`` owns its listener: it accepts until shutdown()/close() (or cancellation), then closes the listener.
  Accepted connections run in serve's nursery; at accept the peer credentials are checked (same effective uid AND
  gid by default, like Go's UnixSocketRequireSameUser) and a refused peer is closed without a byte being sent.
  Accept errors from resource exhaustion (EMFILE, ...) are retried with exponential backoff capped at 1 s.
- ``handle_stream`` owns its stream and closes it in ``finally``.  Each connection has its own nursery: a reader
  (the connection's task itself) and one task per request, so a long handler never blocks the others.  When the
  peer closes (or breaks) the connection, its in-flight handlers are cancelled (Go cancels their contexts).
- Writes are serialized by one lock per connection; a failing write ends that connection only.  Nothing that goes
  wrong on one connection (bad bytes, a write error, a bug in a handler) reaches another connection or the server.
- Errors are mapped to status codes here and only here (``status_for``): StatusError -> its code; TooSlowError ->
  DEADLINE_EXCEEDED; anything else -> UNKNOWN with its text, logged with its traceback.  A single-leaf exception
  group is unwrapped first.  Dispatch errors use Go's exact texts (containerd 2.x matches them).
- A request with ``timeout_nano`` runs its handler under ``trio.fail_at(receive time + timeout)``.
- ``shutdown`` stops accepting, lets in-flight calls finish, closes each connection once it is idle and returns when
  all are gone.  It waits for every in-flight call, so never await it from inside a handler; bound it with
  ``trio.move_on_after`` and follow with ``close()`` if needed.  ``close`` cancels everything at once.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio
from google.protobuf.message import DecodeError, Message

from ttrpc.connection import RequestReceived, ServerConnection
from ttrpc.status import Code, StatusError
from ttrpc.transport import receive_events, send_frame
from ttrpc.unixcreds import CredentialsCheck, peer_credentials, same_user

__all__ = ["CallContext", "Method", "Server", "status_for"]

log = logging.getLogger(__name__)

_ACCEPT_RETRY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


@dataclasses.dataclass(frozen=True, slots=True)
class CallContext:
    service: str
    method: str
    metadata: tuple[tuple[str, str], ...]  # keys lowercased, in received order
    deadline: float | None  # trio.current_time() clock; None = no deadline

    def get(self, key: str) -> list[str]:
        """All values of ``key`` (case-insensitive), in received order."""
        key = key.lower()
        return [v for k, v in self.metadata if k == key]


Handler = Callable[[CallContext, Any], Awaitable[Message]]


@dataclasses.dataclass(frozen=True, slots=True)
class Method:
    request_type: type[Message]
    handler: Handler


def status_for(exc: BaseException) -> tuple[Code, str]:
    """The one place that maps a handler's exception to the status sent to the client."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, StatusError):
        return exc.code, exc.message
    if isinstance(exc, trio.TooSlowError):
        return Code.DEADLINE_EXCEEDED, "context deadline exceeded"
    log.error("ttrpc: handler failed", exc_info=exc)
    return Code.UNKNOWN, str(exc) or type(exc).__name__


class _Conn:
    """One served connection; owned by the handle_stream call that created it."""

    __slots__ = ("stream", "proto", "lock", "active", "read_scope", "nursery")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.proto = ServerConnection()
        self.lock = trio.Lock()
        self.active = 0  # requests being handled
        self.read_scope = trio.CancelScope()
        self.nursery: trio.Nursery | None = None

    def cancel(self) -> None:
        self.read_scope.cancel()
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()


class Server:
    """A ttrpc server: services registered by name, one handler task per call, one nursery per connection."""

    def __init__(self, *, require_same_user: bool = True, credentials_check: CredentialsCheck | None = None) -> None:
        """``credentials_check`` replaces the same-user check (tests); with ``require_same_user=False`` none runs."""
        self._services: dict[str, dict[str, Method]] = {}
        self._check: CredentialsCheck | None = None
        if require_same_user:
            self._check = credentials_check or same_user
        self._connections: set[_Conn] = set()
        self._accept_scopes: set[trio.CancelScope] = set()
        self._closing = False
        self._changed = trio.lowlevel.ParkingLot()

    def register(self, service: str, methods: Mapping[str, Method]) -> None:
        """Serve ``methods`` (name -> Method) under ``service``; a name registered twice is a ValueError."""
        if service in self._services:
            raise ValueError(f"duplicate service {service} registered")
        self._services[service] = dict(methods)

    # -- accepting -------------------------------------------------------------------------------------------------

    async def serve(self, listener: trio.abc.Listener[Any], *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and serve connections until shutdown()/close() or cancellation; closes ``listener``."""
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()
            self._accept_scopes.add(scope)
            try:
                with scope:
                    if self._closing:
                        scope.cancel()
                    task_status.started()
                    await self._accept_loop(listener, nursery)
            finally:
                self._accept_scopes.discard(scope)
                await trio.aclose_forcefully(listener)
                self._changed.unpark_all()

    async def _accept_loop(self, listener: trio.abc.Listener[Any], nursery: trio.Nursery) -> None:
        backoff = 0.0
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                backoff = min(max(backoff * 2, 0.001), 1.0)
                log.error("ttrpc: failed accept (%s); backoff %.3fs", exc, backoff)
                await trio.sleep(backoff)
                continue
            backoff = 0.0
            nursery.start_soon(self._serve_accepted, stream)

    async def _serve_accepted(self, stream: trio.abc.Stream) -> None:
        try:
            if self._check is None or self._peer_allowed(stream):
                await self.handle_stream(stream)
        except* Exception:  # a bug on one connection must not take down the server (Cancelled still propagates)
            log.exception("ttrpc: connection handler failed")
        finally:
            await trio.aclose_forcefully(stream)  # refused, or already closed by handle_stream (idempotent)

    def _peer_allowed(self, stream: trio.abc.Stream) -> bool:
        try:
            creds = peer_credentials(stream.socket)  # type: ignore[attr-defined]
        except (AttributeError, OSError) as exc:
            log.error("ttrpc: refusing connection: cannot read peer credentials: %s", exc)
            return False
        assert self._check is not None
        try:
            allowed = self._check(creds)
        except Exception:
            log.exception("ttrpc: refusing connection: credential check raised")
            return False
        if not allowed:
            log.error("ttrpc: refusing connection: credential check failed for pid %d uid %d gid %d",
                      creds.pid, creds.uid, creds.gid)
            return False
        return True

    # -- one connection --------------------------------------------------------------------------------------------

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until the peer closes it, it breaks, or the server shuts down; closes ``stream``."""
        conn = _Conn(stream)
        self._connections.add(conn)
        try:
            async with trio.open_nursery() as nursery:
                conn.nursery = nursery
                with conn.read_scope:
                    if self._closing:
                        conn.read_scope.cancel()
                    await self._read_loop(conn)
                # The peer is gone (or we are closing an idle connection): cancel what is still running.
                nursery.cancel_scope.cancel()
        finally:
            self._connections.discard(conn)
            self._changed.unpark_all()
            await trio.aclose_forcefully(stream)

    async def _read_loop(self, conn: _Conn) -> None:
        proto = conn.proto
        while (events := await receive_events(conn.stream, proto)) is not None:
            for event in events:
                if type(event) is RequestReceived:
                    timeout_nano = event.request.timeout_nano
                    deadline = trio.current_time() + timeout_nano / 1e9 if timeout_nano else None
                    conn.active += 1
                    conn.nursery.start_soon(self._run_call, conn, event, deadline)  # type: ignore[union-attr]
                else:  # Rejected
                    log.info("ttrpc: rejecting frame on stream %d: %s %s", event.stream_id, event.code.name,
                             event.message)
                    if not await self._write(conn, proto.encode_rejection(event)):
                        return

    async def _run_call(self, conn: _Conn, event: RequestReceived, deadline: float | None) -> None:
        try:
            try:
                payload = await self._dispatch(event, deadline)
            except Exception as exc:
                code, message = status_for(exc)
                data = conn.proto.send_response(event.stream_id, b"", code, message)
            else:
                data = conn.proto.send_response(event.stream_id, payload)
            if data is not None:
                await self._write(conn, data)
        finally:
            conn.active -= 1
            if conn.active == 0 and self._closing:
                conn.read_scope.cancel()

    async def _dispatch(self, event: RequestReceived, deadline: float | None) -> bytes:
        req = event.request
        methods = self._services.get(req.service)
        if methods is None:
            raise StatusError(f"service {req.service}", Code.UNIMPLEMENTED)
        method = methods.get(req.method)
        if method is None:
            raise StatusError(f"method {req.method}", Code.UNIMPLEMENTED)
        try:
            message = method.request_type.FromString(req.payload)
        except DecodeError as exc:
            raise StatusError(f"ttrpc: error unmarshalling payload: {exc}", Code.INTERNAL) from exc
        ctx = CallContext(req.service, req.method, tuple((kv.key.lower(), kv.value) for kv in req.metadata),
                          deadline)
        if deadline is None:
            result = await method.handler(ctx, message)
        else:
            with trio.fail_at(deadline):
                result = await method.handler(ctx, message)
        if result is None:
            raise StatusError("ttrpc: marshal called with nil", Code.UNKNOWN)
        if not callable(getattr(result, "SerializeToString", None)):  # a protobuf Message, or any codec alike
            raise StatusError(f"ttrpc: error unsupported response type: {type(result).__name__}", Code.INTERNAL)
        return result.SerializeToString()

    async def _write(self, conn: _Conn, data: bytes) -> bool:
        """Send one frame; on failure end this connection (only) and return False."""
        try:
            await send_frame(conn.lock, conn.stream, data, conn.cancel)
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.warning("ttrpc: failed sending message on channel: %r", exc)
            return False

    # -- stopping --------------------------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop accepting, finish in-flight calls, close connections as they go idle; return when all are closed."""
        self._closing = True
        for scope in self._accept_scopes:
            scope.cancel()
        for conn in self._connections:
            if conn.active == 0:
                conn.read_scope.cancel()
        while self._connections or self._accept_scopes:
            await self._changed.park()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Stop accepting and cancel every connection and in-flight call now."""
        self._closing = True
        for scope in self._accept_scopes:
            scope.cancel()
        for conn in self._connections:
            conn.cancel()

    @property
    def connection_count(self) -> int:
        """How many connections are open now."""
        return len(self._connections)

