"""ttrpc/status.py: gRPC code numbering and the exception classes' codes and messages."""

from __future__ import annotations

import pytest

from ttrpc.status import (
    Code,
    ConnectionClosed,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    StatusError,
)

GRPC_NUMBERING = [
    ("OK", 0), ("CANCELLED", 1), ("UNKNOWN", 2), ("INVALID_ARGUMENT", 3), ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5), ("ALREADY_EXISTS", 6), ("PERMISSION_DENIED", 7), ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9), ("ABORTED", 10), ("OUT_OF_RANGE", 11), ("UNIMPLEMENTED", 12), ("INTERNAL", 13),
    ("UNAVAILABLE", 14), ("DATA_LOSS", 15), ("UNAUTHENTICATED", 16),
]


def test_codes_follow_grpc_numbering() -> None:
    assert [(c.name, c.value) for c in Code] == GRPC_NUMBERING


@pytest.mark.parametrize(("wire", "code"), [(5, Code.NOT_FOUND), (16, Code.UNAUTHENTICATED), (17, Code.UNKNOWN),
                                            (-1, Code.UNKNOWN)])
def test_from_wire(wire: int, code: Code) -> None:
    assert Code.from_wire(wire) is code


class NotFound(StatusError):
    code = Code.NOT_FOUND


def test_status_error_codes() -> None:
    assert StatusError("x").code is Code.UNKNOWN
    assert StatusError("x", Code.ABORTED).code is Code.ABORTED
    err = NotFound("container redis")
    assert (err.code, err.message, str(err)) == (Code.NOT_FOUND, "container redis", "container redis")
    assert NotFound("y", Code.INTERNAL).code is Code.INTERNAL
    assert NotFound.code is Code.NOT_FOUND  # an instance override does not leak into the class
    assert repr(err) == "NotFound('container redis', code=Code.NOT_FOUND)"


def test_connection_closed_matches_go() -> None:
    err = ConnectionClosed()
    assert isinstance(err, StatusError)
    assert (err.code, err.message) == (Code.UNAVAILABLE, "ttrpc: closed")


def test_protocol_errors_are_status_errors() -> None:
    assert issubclass(LocalProtocolError, ProtocolError) and issubclass(RemoteProtocolError, ProtocolError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    assert RemoteProtocolError("bad").code is Code.INVALID_ARGUMENT
    assert LocalProtocolError("big", Code.RESOURCE_EXHAUSTED).code is Code.RESOURCE_EXHAUSTED
