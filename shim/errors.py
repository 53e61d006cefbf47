"""Domain errors of the shim, each carrying the ttrpc code containerd's errdefs expect.

Rules:
- Task code raises these (or runtime.errors.BackendError, mapped by `from_backend`); it never builds
  ttrpc statuses itself.
- Only the ttrpc dispatcher turns them into status codes (StatusError.code); anything else a handler
  raises becomes UNKNOWN there and is logged with its traceback.
"""
from __future__ import annotations

from ttrpc.status import Code, StatusError


class NotFound(StatusError):
    code = Code.NOT_FOUND


class AlreadyExists(StatusError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(StatusError):
    code = Code.FAILED_PRECONDITION


class InvalidArgument(StatusError):
    code = Code.INVALID_ARGUMENT


class Unimplemented(StatusError):
    code = Code.UNIMPLEMENTED


class Unavailable(StatusError):
    code = Code.UNAVAILABLE


class DeadlineExceeded(StatusError):
    code = Code.DEADLINE_EXCEEDED


class Unknown(StatusError):
    code = Code.UNKNOWN
