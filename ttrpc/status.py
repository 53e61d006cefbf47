"""ttrpc status codes and the exceptions that carry them.

Rules:
- No I/O and no trio here: every layer (frame, codec, connection, server, client) may import this module.
- Every exception the library raises on purpose is a StatusError, so it carries the ttrpc code a peer should see
  (or that a caller received).  A handler raises StatusError (or a subclass that sets ``code``) to answer with that
  code; the server maps everything else in one place (server.py).
- Protocol errors are split h11-style: LocalProtocolError means *we* tried to do something the protocol forbids
  (e.g. send a frame over 4 MiB); RemoteProtocolError means the *peer* sent something we cannot parse.  Both carry
  the status code to answer with.
"""

from __future__ import annotations

import enum

__all__ = ["Code", "ConnectionClosed", "LocalProtocolError", "ProtocolError", "RemoteProtocolError", "StatusError"]


class Code(enum.IntEnum):
    """gRPC status codes, as ttrpc carries them in google.rpc.Status.code."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def from_wire(cls, value: int) -> Code:
        """Map a received code to the enum; codes outside gRPC's range become UNKNOWN."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


class StatusError(Exception):
    """An error with a ttrpc status code.

    Subclasses set the class attribute ``code``; an explicit ``code`` argument overrides it.
    """

    code: Code = Code.UNKNOWN

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = Code(code)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code=Code.{self.code.name})"


class ConnectionClosed(StatusError):
    """The connection went away before the call completed (Go's ``ttrpc: closed``)."""

    code = Code.UNAVAILABLE

    def __init__(self, message: str = "ttrpc: closed", code: Code | None = None) -> None:
        super().__init__(message, code)


class ProtocolError(StatusError):
    """A violation of the ttrpc wire protocol; ``code`` is the status to answer with."""

    code = Code.INVALID_ARGUMENT


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes we cannot accept; the connection cannot continue."""
