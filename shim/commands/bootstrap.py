"""What ``start`` reads on stdin and prints, by containerd version.

Rules (containerd ``core/runtime/v2/binary.go`` ``Start`` at v2.4.2 and ``runtime/v2/binary.go`` at v1.6.20):
- 1.6-2.2 write the runtime options as a serialized google.protobuf.Any (or nothing) and read back the plain
  address. 2.3+ write a binary ``containerd.runtime.bootstrap.v1.BootstrapParams`` and prefer a binary
  BootstrapResult (they still accept the plain address).
- A BootstrapParams is recognised as upstream 2.4 does: it decodes and its instance_id and namespace equal
  ``-id`` and ``-namespace`` (a legacy Any never passes: its type_url would have to equal the id). Then its
  socket_dir (if set) replaces /run/containerd/s and its extensions (each an Any, field 1 of field 8) are the
  runtime options.
- The answer to a BootstrapParams is BootstrapResult {1 version 3 (task API v3, as upstream's runc shim answers:
  containerd may then attach a pod's other containers to this shim without a start of their own, which the
  daemon serves like grouped ones), 2 address, 3 "ttrpc"}, whose last bytes are the protocol string, never
  whitespace (2.3.0 trims before decoding).
- Standard library only (critical path).
"""

from __future__ import annotations

from shim.record import Record
from ttrpc import wire

__all__ = ["Bootstrap", "params", "result"]

TASK_API_VERSION = 3


class Bootstrap(Record):
    """What start uses from a containerd 2.3+ BootstrapParams."""

    options: tuple[bytes, ...] = ()  # the extensions: serialized Anys
    socket_dir: str = ""


def params(stdin_bytes: bytes, container_id: str, namespace: str) -> Bootstrap | None:
    """The BootstrapParams on stdin (containerd 2.3+), or None for the legacy options Any / nothing."""
    if not stdin_bytes:
        return None
    instance_id = ns = socket_dir = ""
    options: list[bytes] = []
    try:
        for number, wire_type, value in wire.iter_fields(stdin_bytes):
            if wire_type != wire.LEN:
                continue
            if number == 1:
                instance_id = value.decode("utf-8")
            elif number == 2:
                ns = value.decode("utf-8")
            elif number == 8:
                extension = wire.get_bytes(wire.fields(value), 1)
                if extension:
                    wire.decode_any(extension)  # an extension that is not an Any is not a BootstrapParams
                    options.append(extension)
            elif number == 9:
                socket_dir = value.decode("utf-8")
    except (wire.WireError, UnicodeDecodeError):
        return None
    if (instance_id, ns) != (container_id, namespace):
        return None
    return Bootstrap(options=tuple(options), socket_dir=socket_dir)


def result(address: str) -> bytes:
    """containerd.runtime.bootstrap.v1.BootstrapResult {1 version int32, 2 address, 3 protocol}."""
    return (wire.uint_field(1, TASK_API_VERSION) + wire.string_field(2, address)
            + wire.string_field(3, "ttrpc"))
