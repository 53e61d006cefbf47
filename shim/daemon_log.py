"""The daemon's diagnostics: logrus-style lines on fd 2, which is the bundle's ``log`` FIFO that containerd reads.

Rules:
- containerd creates ``<bundle>/log`` (a FIFO it also holds open for writing) before it runs ``start``, reads
  it and relays every line into its own log with the task's id (``openShimLog`` in containerd's
  ``runtime/v2/shim_unix.go`` at v1.6.20). The daemon opens it by its path relative to the cwd (the bundle).
- Lines are logfmt as logrus writes them: ``time=... level=... msg=...`` plus the daemon's fields.
- Writing never blocks the event loop: with no reader a line is dropped, not waited for.
"""

from __future__ import annotations

import logging
import os
import time

from shim.flags import ShimFlags

__all__ = ["LogfmtFormatter", "setup_logging"]


class LogfmtFormatter(logging.Formatter):
    """logrus-style text lines, as containerd relays them from the `log` FIFO."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self._fields = "".join(f" {k}={_q(v)}" for k, v in fields.items() if v)

    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        t += ".%09dZ" % int((record.created % 1) * 1e9)
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return f'time="{t}" level={record.levelname.lower()} msg={_q(msg)}{self._fields}'


def _q(v: str) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def setup_logging(flags: ShimFlags, runtime: str) -> None:
    """Diagnostics go to fd 2; the bundle's `log` FIFO (containerd holds it open) becomes fd 2."""
    try:
        fd = os.open("log", os.O_WRONLY | os.O_CLOEXEC)
        os.dup2(fd, 2)
        os.close(fd)
    except OSError:
        pass  # no FIFO (started by hand): keep whatever fd 2 is
    handler = logging.StreamHandler(_NonBlockingStderr())
    handler.setFormatter(LogfmtFormatter({
        "namespace": flags.namespace, "id": flags.id, "pid": str(os.getpid()),
        "runtime": runtime,
    }))
    root = logging.getLogger()
    root.handlers[:] = [handler]

    root.setLevel(logging.DEBUG if flags.debug else logging.INFO)


class _NonBlockingStderr:
    """Writes to fd 2 that never block the event loop: with no reader a line is dropped, not waited for."""

    def write(self, s: str) -> None:
        data = s.encode(errors="replace")
        try:
            os.set_blocking(2, False)
            os.write(2, data)
        except (BlockingIOError, BrokenPipeError, OSError):
            pass

    def flush(self) -> None:
        pass
