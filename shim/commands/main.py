"""Entry point of ``containerd-shim-pyshim-v1``: choose ``-v``, ``-info``, ``start``, ``delete`` or the daemon.

Rules (shim-v2.md §2, §13; containerd ``pkg/shim/shim.go`` ``run``):
- Order: parse flags; ``-v``; ``-info``; then the namespace check (containerd 2.x runs ``-info`` without
  ``-namespace``); then the action. An action word other than ``start``/``delete`` is refused (exit 1),
  see flags.py for why.
- Critical path: ``-v``, ``-info``, ``start`` and ``delete`` import only the standard library and our
  stdlib-only modules (flags, address, wire, mount, start, delete, info); never trio, protobuf or protos/.
  Each action module is imported only when chosen; the daemon (``shim.daemon``) likewise.
- This module owns the process's stdio for the short-lived actions: it reads stdin, writes the action's result
  to stdout in full (protocol bytes only) and writes errors to stderr, prefixed with the runtime name as
  upstream does. Exit status: 0 success, 1 failure, 2 unusable command line.
- The daemon listens on fd 3 (inherited from start), or on a socket it binds at ``-socket PATH``.
"""

from __future__ import annotations

import os
import stat
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, nor collections (~1-3 ms CPU)
if TYPE_CHECKING:
    from collections.abc import Sequence

from shim.flags import USAGE, FlagError, HelpRequested, ShimFlags, parse

RUNTIME_NAME = "io.containerd.pyshim.v1"
LISTEN_FD = 3


def _read_all(fd: int) -> bytes:
    try:
        if os.isatty(fd):
            return b""
    except OSError:
        return b""  # closed stdin
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _error(message: str) -> None:
    _write_all(2, f"{RUNTIME_NAME}: {message}\n".encode(errors="replace"))


def _daemon_listener(flags: ShimFlags) -> int:
    """The listening socket fd for the daemon: a new one at ``-socket``, else the inherited fd 3."""
    if flags.socket:
        from shim.commands.start import bind_or_reuse

        sock = bind_or_reuse(flags.socket)
        if sock is None:
            raise RuntimeError(f"a shim is already listening on {flags.socket}")
        return sock.detach()
    try:
        mode = os.fstat(LISTEN_FD).st_mode
    except OSError:
        mode = 0
    if not stat.S_ISSOCK(mode):
        raise RuntimeError(f"fd {LISTEN_FD} is not a socket: the daemon is started by 'start' (or use -socket)")
    return LISTEN_FD


def run(flags: ShimFlags) -> int:
    if flags.version:
        from shim.commands.info import version_text

        program = os.path.basename(sys.argv[0]) if sys.argv else ""
        if program in ("", "__main__.py", "-c"):
            program = "containerd-shim-pyshim-v1"
        _write_all(1, version_text(program).encode())
        return 0
    if flags.info:
        from shim.commands import info

        try:
            data = info.run(_read_all(0))
        except (OSError, ValueError) as exc:
            _error(f"-info: {exc}")
            return 1
        _write_all(1, data)
        return 0
    if not flags.namespace:
        _error("shim namespace cannot be empty")
        return 1
    if flags.action == "start":
        from shim.commands import start

        try:
            output = start.run(flags, _read_all(0))
        except Exception as exc:  # any failure is containerd's error text
            _error(f"start: {exc}")
            return 1
        _write_all(1, output)
        return 0
    if flags.action == "delete":
        from shim.commands import delete

        try:
            data = delete.run(flags, lambda message: _error(f"delete {flags.id}: {message}"))
        except ValueError as exc:
            _error(f"delete: {exc}")
            return 1
        _write_all(1, data)
        return 0
    if flags.action:
        _error(f"unknown action {flags.action!r} (expected start, delete or none)")
        return 1
    try:
        listen_fd = _daemon_listener(flags)
    except (OSError, RuntimeError) as exc:
        _error(str(exc))
        return 1
    from shim.daemon import run as serve

    return serve(flags, listen_fd)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    try:
        flags = parse(sys.argv[1:] if argv is None else argv)
    except HelpRequested:
        _write_all(1, USAGE.encode())
        return 0
    except FlagError as exc:
        _error(f"{exc}\n{USAGE}")
        return 2
    return run(flags)
