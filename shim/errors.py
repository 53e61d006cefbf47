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
    """No such container, process or thing (containerd's errdefs.ErrNotFound)."""

    code = Code.NOT_FOUND


class AlreadyExists(StatusError):
    """The id is taken (errdefs.ErrAlreadyExists)."""

    code = Code.ALREADY_EXISTS


class FailedPrecondition(StatusError):
    """Not in this state: the operation is refused with a sentence saying why (errdefs.ErrFailedPrecondition)."""

    code = Code.FAILED_PRECONDITION


class InvalidArgument(StatusError):
    """The request cannot be served as given (errdefs.ErrInvalidArgument)."""

    code = Code.INVALID_ARGUMENT


class Unimplemented(StatusError):
    """This shim, or this container's runtime, does not do that (errdefs.ErrNotImplemented)."""

    code = Code.UNIMPLEMENTED


class Unavailable(StatusError):
    """Not now: a resource the call needs is not there (errdefs.ErrUnavailable)."""

    code = Code.UNAVAILABLE


class DeadlineExceeded(StatusError):
    """The call ran out of time (a hung runtime, say)."""

    code = Code.DEADLINE_EXCEEDED


class Unknown(StatusError):
    """A failure with no better class; containerd sees errdefs.ErrUnknown."""

    code = Code.UNKNOWN
