"""Errors of the IO package. The task service maps them; their messages are meant for the client.

Rules:
- `UnsupportedStdioError` (a ValueError): the request names something we do not serve (unknown scheme,
  relative path in a URI). Nothing was opened or started.
- `StdioOpenError` (an OSError, errno kept): a FIFO or file named by the request could not be opened or
  created; the message names the stream and the path, like upstream's "opening w/o fifo ... failed".
- `ConsoleSocketError` (in console.py) and `LoggerStartError` cover the terminal and logger hand-overs.
"""
from __future__ import annotations


class UnsupportedStdioError(ValueError):
    """The stdio request cannot be served (unknown scheme, malformed URI)."""


class StdioOpenError(OSError):
    """A path named by the stdio request could not be opened."""

    @classmethod
    def wrap(cls, what: str, path: str, exc: OSError) -> StdioOpenError:
        """The error for ``exc`` while opening ``what`` at ``path``, with errno and filename kept."""
        err = cls(exc.errno, f"failed to open {what} {path!r}: {exc.strerror or exc}")
        err.filename = path
        return err


class LoggerStartError(RuntimeError):
    """The binary logger could not be started."""
