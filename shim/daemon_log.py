"""The daemon's diagnostics: logrus-style lines into the ``log`` FIFOs containerd reads, one per task.

Rules:
- containerd creates ``<bundle>/log`` (a FIFO it also holds open for writing) before it runs ``start``, reads it
  and relays every line into its own log under that task's id (``openShimLog`` in containerd's
  ``runtime/v2/shim_unix.go`` at v1.6.20), until the task's connection closes.
- The daemon's first FIFO (of the task whose start made it) becomes fd 2 at set-up. Every later task's FIFO is
  opened by ``TaskLogs.open`` when its Create arrives and closed after its Delete (shim/occupancy.py does both).
- A record belongs to the task whose request (or whose tasks: exit handling, stdio copies) logged it: the
  ``current_task`` context variable, which trio hands on to every task started from there. It goes to that task's
  FIFO, tagged ``id=<task>``. A record of no task (start-up, shutdown) goes to fd 2; if nobody reads fd 2 any
  more (its task is gone), to every open task FIFO, so a shared daemon's own trouble still reaches containerd.
- Lines are logfmt as logrus writes them: ``time=... level=... msg=...`` plus the daemon's fields.
- Writing never blocks the event loop: with no reader, or a full FIFO, a line is dropped, not waited for. A line
  is at most PIPE_BUF bytes (a longer message is cut and marked), so it is written whole or not at all: a cut
  line would have containerd's line reader glue the next record to it.
- A record that could not be written to its task's FIFO is dropped; only a record of no task, or of a task
  without a FIFO, goes to fd 2 (never into another container's log).
"""

from __future__ import annotations

import contextvars
import logging
import os
import select
import time

from shim.flags import ShimFlags

__all__ = ["LogfmtFormatter", "TaskLogs", "current_task", "setup_logging"]

current_task: contextvars.ContextVar[str] = contextvars.ContextVar("pyshim_current_task", default="")


class LogfmtFormatter(logging.Formatter):
    """logrus-style text lines, as containerd relays them from the `log` FIFO."""

    def __init__(self, fields: dict[str, str], default_id: str = "") -> None:
        super().__init__()
        self._fields = "".join(f" {k}={_q(v)}" for k, v in fields.items() if v)
        self._default_id = default_id

    def format(self, record: logging.LogRecord) -> str:
        """One line: time, level, msg (with the traceback, if any), the daemon's fields and the task's id."""
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        t += ".%09dZ" % int((record.created % 1) * 1e9)
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        task = getattr(record, "task_id", "") or self._default_id
        return f'time="{t}" level={record.levelname.lower()} msg={_q(msg)}{self._fields} id={_q(task)}'


def _q(v: str) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _write(fd: int, data: bytes) -> bool:
    """Write without blocking; False when nobody reads (or the FIFO is full and the line is dropped)."""
    try:
        os.write(fd, data)
        return True
    except OSError:
        return False


class TaskLogs(logging.Handler):
    """Routes records to the log FIFO of their task (see the module rules)."""

    def __init__(self) -> None:
        super().__init__()
        self._fds: dict[str, int] = {}  # task id -> our write end of its log FIFO

    def open(self, task_id: str, bundle: str) -> None:
        """Start writing ``task_id``'s records to ``<bundle>/log`` (a no-op without the FIFO, or if open)."""
        if task_id in self._fds:
            return
        try:
            self._fds[task_id] = os.open(os.path.join(bundle, "log"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            pass  # no FIFO (started by hand, or containerd already gone): its records go to fd 2

    def close_task(self, task_id: str) -> None:
        """Stop writing to ``task_id``'s FIFO and close it."""
        fd = self._fds.pop(task_id, None)
        if fd is not None:
            os.close(fd)

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record to its task's FIFO, or fd 2, or (fd 2 unread) every open task FIFO."""
        task = current_task.get()
        if task:
            record.task_id = task
        try:
            data = self._line(record)
        except Exception:  # noqa: BLE001 - logging must never raise into the daemon
            self.handleError(record)
            return
        fd = self._fds.get(task)
        if fd is not None:
            _write(fd, data)
            return
        if not _write(2, data) and not task:
            for fd in tuple(self._fds.values()):
                _write(fd, data)

    def _line(self, record: logging.LogRecord) -> bytes:
        """The record as one line of at most PIPE_BUF bytes (the message cut, and marked, where needed)."""
        data = (self.format(record) + "\n").encode(errors="replace")
        if len(data) <= select.PIPE_BUF:
            return data
        message = _message(self, record)
        keep = len(message)
        while len(data) > select.PIPE_BUF and keep > 0:
            keep -= len(data) - select.PIPE_BUF + 32
            short = logging.makeLogRecord({**record.__dict__, "args": None, "exc_info": None, "exc_text": None,
                                           "msg": message[:max(keep, 0)] + " [cut]"})
            data = (self.format(short) + "\n").encode(errors="replace")
        return data


def _message(handler: logging.Handler, record: logging.LogRecord) -> str:
    """The record's message with its traceback, as the formatter would write it."""
    message = record.getMessage()
    if record.exc_info:
        message += "\n" + handler.formatter.formatException(record.exc_info)
    return message


def setup_logging(flags: ShimFlags, runtime: str) -> TaskLogs:
    """fd 2 becomes the bundle's `log` FIFO (containerd holds it open), and records go through ``TaskLogs``."""
    try:
        fd = os.open("log", os.O_WRONLY | os.O_CLOEXEC)
        os.dup2(fd, 2)
        os.close(fd)
    except OSError:
        pass  # no FIFO (started by hand): keep whatever fd 2 is
    try:
        os.set_blocking(2, False)
    except OSError:
        pass
    handler = TaskLogs()
    handler.setFormatter(LogfmtFormatter({"namespace": flags.namespace, "pid": str(os.getpid()),
                                          "runtime": runtime}, default_id="" if flags.shared else flags.id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if flags.debug else logging.INFO)
    return handler
