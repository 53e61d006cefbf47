"""What a process's stdio request asks for: the request strings and the plan derived from them (pure, no I/O).

Rules (containerd ``pkg/process/io.go`` ``createIO`` and ``NewBinaryIO`` at v1.6.20):
- `terminal` wins: console mode, and the stdout string only chooses where the tty output goes.
- Otherwise all three strings empty means null IO (the runtime gets /dev/null for 0/1/2).
- Otherwise the scheme of `stdout` chooses: none or `fifo` -> pipes copied to FIFOs or files; `file` -> pipes
  appended to one file; `binary` -> a logger binary reads the pipes itself; anything else is refused with
  `UnsupportedStdioError`. The same rule picks the tty output's destination in console mode.
- A `binary:///path?k=v&k2=v2` URI becomes argv `[path, k, v, k2, v2]`, first value per key, keys in the order
  they first appear (upstream iterates a Go map, so no order is promised; ours is stable). A key without a value
  still contributes an empty argument, as Go's `url.Query` does.
- Plain paths are used as given (not URL-decoded); only `fifo://` and `file://` URIs are reduced to their path.
"""
from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from shim.io.errors import UnsupportedStdioError


@dataclass(frozen=True)
class StdioConfig:
    """The stdio strings of a CreateTaskRequest / ExecProcessRequest."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False

    @property
    def is_null(self) -> bool:
        """No stream was asked for: the process gets /dev/null."""
        return not (self.stdin or self.stdout or self.stderr)


class Mode(enum.Enum):
    NULL = "null"
    PIPES = "pipes"  # shim copies pipes to FIFOs or regular files
    BINARY = "binary"  # a logger binary reads the pipes
    TERMINAL = "terminal"


class Sink(enum.Enum):
    """Where one output stream (or the tty output) goes."""

    NONE = "none"  # stream not requested: /dev/null for the runtime, discard for the tty
    PATH = "path"  # FIFO or existing file, opened write-only (append for files)
    FILE = "file"  # file:// URI: parents and file created, then appended
    BINARY = "binary"  # the logger binary's pipe


@dataclass(frozen=True)
class Output:
    sink: Sink
    path: str = ""


@dataclass(frozen=True)
class Plan:
    mode: Mode
    stdin: str  # FIFO (or file) to copy into the process; "" for none
    stdout: Output
    stderr: Output  # always Sink.NONE in terminal and binary modes (the tty merges, the logger reads its pipe)
    logger_argv: tuple[str, ...] = ()  # binary mode, or terminal mode with a binary stdout


def plan(cfg: StdioConfig) -> Plan:  # or any object with stdin, stdout, stderr and terminal
    """Decide how to serve `cfg`; raises UnsupportedStdioError for what cannot be served."""
    if cfg.terminal:
        out, argv = _destination(cfg.stdout)
        return Plan(Mode.TERMINAL, _plain(cfg.stdin), out, Output(Sink.NONE), argv)
    if not (cfg.stdin or cfg.stdout or cfg.stderr):  # duck-typed: any object with the four fields will do
        return Plan(Mode.NULL, "", Output(Sink.NONE), Output(Sink.NONE))
    out, argv = _destination(cfg.stdout)
    if out.sink is Sink.BINARY:
        # binary IO has no stdin (upstream's binaryIO.Stdin is nil); stderr goes to the logger's fd 4
        return Plan(Mode.BINARY, "", out, Output(Sink.BINARY), argv)
    if out.sink is Sink.FILE:
        # upstream appends both streams to the stdout file, whatever stderr names; stderr only if requested
        err = Output(Sink.FILE, out.path) if cfg.stderr else Output(Sink.NONE)
        return Plan(Mode.PIPES, _plain(cfg.stdin), out, err)
    err = Output(Sink.PATH, _plain(cfg.stderr)) if cfg.stderr else Output(Sink.NONE)
    return Plan(Mode.PIPES, _plain(cfg.stdin), out, err)


def _destination(uri: str) -> tuple[Output, tuple[str, ...]]:
    if not uri:
        return Output(Sink.NONE), ()
    scheme = _scheme(uri)
    if scheme in ("", "fifo"):
        return Output(Sink.PATH, _plain(uri)), ()
    parts = urlsplit(uri)
    if scheme == "file":
        _require_abs(parts.path, uri)
        return Output(Sink.FILE, parts.path), ()
    if scheme == "binary":
        _require_abs(parts.path, uri)
        return Output(Sink.BINARY, parts.path), binary_argv(uri)
    raise UnsupportedStdioError(f"unknown STDIO scheme {scheme}")


def binary_argv(uri: str) -> tuple[str, ...]:
    """argv for a `binary://` logger URI: the path, then key, first value, for each query key."""
    parts = urlsplit(uri)
    seen: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        seen.setdefault(key, value)
    args = [parts.path]
    for key, value in seen.items():
        args += [key, value]
    return tuple(args)


def _scheme(s: str) -> str:
    # A plain absolute or relative path has no scheme; urlsplit agrees for anything containing "/" before ":".
    return urlsplit(s).scheme.lower() if ":" in s else ""


def _plain(s: str) -> str:
    """A stream string as a filesystem path: `fifo://` URIs lose their prefix, anything else is kept verbatim."""
    if _scheme(s) == "fifo":
        return urlsplit(s).path
    return s


def _require_abs(path: str, uri: str) -> None:
    if not path or not os.path.isabs(path):
        raise UnsupportedStdioError(f"STDIO URI {uri!r} must name an absolute path")
