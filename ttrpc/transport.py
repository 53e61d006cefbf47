"""trio plumbing shared by the server and the client: read a batch of events, write one frame under a lock.

Rules:
- ``receive_events`` does one read, feeds it to a sans-IO connection (server or client side) and drains every event
  it completed.  It returns None when the connection is over: EOF (at a frame boundary or not), a broken or closed
  stream, or a RemoteProtocolError; the reason is logged at debug/info level.  Nothing else is caught.
- ``send_frame`` writes one whole frame while holding the connection's write lock, so frames never interleave.  The
  uncontended path takes the lock without a scheduler round trip.  Cancellation before the write starts is clean
  (nothing written).  Any exception from inside ``send_all`` (an error, or a cancellation part-way) leaves the stream
  in an unknown state: ``on_broken`` is called so the owner closes the connection, and the exception propagates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import trio

from ttrpc.codec import CLOSED, NEED_DATA
from ttrpc.status import RemoteProtocolError

__all__ = ["receive_events", "send_frame"]

log = logging.getLogger(__name__)

RECEIVE_SIZE = 65536


class _SansIO(Protocol):
    def receive_data(self, data: bytes | bytearray | memoryview) -> None: ...
    def next_event(self) -> Any: ...


async def receive_events(stream: trio.abc.ReceiveStream, proto: _SansIO) -> list[Any] | None:
    """Events completed by the next read (possibly none), or None once the connection is over."""
    try:
        data = await stream.receive_some(RECEIVE_SIZE)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.debug("ttrpc: connection ended: %r", exc)
        return None
    proto.receive_data(data)
    events = []
    while True:
        try:
            event = proto.next_event()
        except RemoteProtocolError as exc:
            log.info("ttrpc: closing connection: %s", exc)
            return None
        if event is NEED_DATA:
            return events
        if event is CLOSED:  # EOF is fed alone, so no event can be pending here
            log.debug("ttrpc: peer closed the connection")
            return None
        events.append(event)


async def send_frame(lock: trio.Lock, stream: trio.abc.SendStream, data: bytes,
                     on_broken: Callable[[], None]) -> None:
    """Write ``data`` (one encoded frame) under ``lock``; call ``on_broken`` (then re-raise) if send_all fails."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            await stream.send_all(data)
        except BaseException:
            on_broken()
            raise
    finally:
        lock.release()
