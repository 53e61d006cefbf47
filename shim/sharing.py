"""Sharing a daemon between unrelated containers: shards, and the reservation ``start`` makes in one.

Rules:
- A manager that shares (``Manager.sharing`` returns a ``Sharing``) has its containers served by shards: daemons
  named ``<key>-<n>`` (n = 0, 1, ...) in the socket address, each serving at most ``max_tasks`` tasks. The key
  covers everything that must be equal for two containers to share a daemon (the manager decides it).
- ``start`` walks the shards in order. A shard whose socket is free gets a new daemon, which counts the starting
  container as reserved. A live shard is asked to ``Reserve`` the container id: it answers accepted, or refuses
  when tasks + reservations reach ``max_tasks`` or when it is shutting down; then the next shard is tried. A
  connection that fails or closes unanswered counts as a refusal (a daemon on its way out).
- The reservation is the daemon's business from then on (shim/occupancy.py): it holds the place until the
  container's Create arrives, or RESERVATION_TTL passes.
- Wire: a ttrpc unary call of ``pyshim.shard.v1.Shard/Reserve``; request ``{1 id}``, response ``{1 accepted bool,
  2 reason}``. Both sides encode with ttrpc/wire.py, so ``start`` needs neither protobuf nor trio: this module is
  on the critical path, standard library only.
"""

from __future__ import annotations

from shim.record import Record
from shim.stdlib_lite import unix_socket
from ttrpc import wire

__all__ = ["RESERVE_TIMEOUT", "SERVICE", "ReserveRequest", "ReserveResponse", "Sharing", "reserve", "shard_group"]

SERVICE = "pyshim.shard.v1.Shard"
METHOD = "Reserve"
RESERVE_TIMEOUT = 5.0
RESERVATION_TTL = 60.0  # containerd calls Create right after start prints the address; this is slack for load
MAX_SHARDS = 4096
_HEADER = 10
_REQUEST, _RESPONSE = 1, 2
_MAX_RESPONSE = 4096


class Sharing(Record):
    """How a manager wants a container's daemon shared (``Manager.sharing``)."""

    key: str            # containers with equal keys may share a daemon (same containerd and namespace implied)
    max_tasks: int      # tasks one daemon serves at most
    idle_exit: float    # seconds a daemon with no task waits for new ones before it exits


def shard_group(key: str, index: int) -> str:
    """The grouping id of shard ``index`` of ``key`` (what the socket address hashes)."""
    return f"{key}-{index}"


class ReserveRequest(Record):
    """Reserve a place for container ``id``."""

    id: str = ""

    @classmethod
    def FromString(cls, data: bytes) -> ReserveRequest:  # noqa: N802 - the ttrpc server's message interface
        return cls(wire.get_string(wire.fields(data), 1))

    def SerializeToString(self) -> bytes:  # noqa: N802
        return wire.string_field(1, self.id)


class ReserveResponse(Record):
    """``accepted``, or the ``reason`` it was not."""

    accepted: bool = False
    reason: str = ""

    @classmethod
    def FromString(cls, data: bytes) -> ReserveResponse:  # noqa: N802
        decoded = wire.fields(data)
        return cls(bool(wire.get_uint(decoded, 1)), wire.get_string(decoded, 2))

    def SerializeToString(self) -> bytes:  # noqa: N802
        return wire.uint_field(1, int(self.accepted)) + wire.string_field(2, self.reason)


def _request_frame(container_id: str) -> bytes:
    payload = ReserveRequest(container_id).SerializeToString()
    envelope = (wire.string_field(1, SERVICE) + wire.string_field(2, METHOD) + wire.bytes_field(3, payload)
                + wire.uint_field(4, int(RESERVE_TIMEOUT * 1e9)))
    return len(envelope).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes((_REQUEST, 0)) + envelope


def _read(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed before the answer")
        data += chunk
    return data


def reserve(path: str, container_id: str, timeout: float = RESERVE_TIMEOUT) -> ReserveResponse:
    """Ask the daemon listening on ``path`` to reserve a place for ``container_id``."""
    sock = unix_socket()
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(_request_frame(container_id))
            header = _read(sock, _HEADER)
            length, stream, kind = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big"), header[8]
            if kind != _RESPONSE or stream != 1 or length > _MAX_RESPONSE:
                return ReserveResponse(False, f"unexpected ttrpc frame (type {kind}, stream {stream}, {length} bytes)")
            decoded = wire.fields(_read(sock, length))
        except (OSError, wire.WireError) as exc:
            return ReserveResponse(False, f"no answer: {exc}")
    finally:
        sock.close()
    try:
        status = wire.get_bytes(decoded, 1)
        if status:
            status_fields = wire.fields(status)
            return ReserveResponse(False, f"refused with code {wire.get_uint(status_fields, 1)}: "
                                          f"{wire.get_string(status_fields, 2)}")
        return ReserveResponse.FromString(wire.get_bytes(decoded, 2))
    except (wire.WireError, UnicodeDecodeError) as exc:
        return ReserveResponse(False, f"bad answer: {exc}")
