"""``shim.run(manager)``: a shim binary's entry point. Chooses ``-v``, ``-info``, ``start``, ``delete`` or the daemon.

Rules (containerd ``pkg/shim/shim.go`` ``run`` at v1.6.20):
- Order: parse flags; ``-v``; ``-info``; then the namespace check (containerd 2.x runs ``-info`` without
  ``-namespace``); then the action. An action word other than ``start``/``delete`` is refused (exit 1),
  see flags.py for why.
- Critical path: ``-v``, ``-info``, ``start`` and ``delete`` import only the standard library and the library's
  stdlib-only modules; never trio, protobuf or protos/. Each command module is imported only when chosen; the
  daemon (``shim.daemon``) likewise.
- This module owns the process's stdio for the short-lived commands: it reads stdin, writes the command's result
  to stdout in full (protocol bytes only) and writes errors to stderr, prefixed with the runtime name as
  upstream does. Exit status: 0 success, 1 failure, 2 unusable command line.
- The daemon listens on fd 3 (inherited from start), or on a socket it binds at ``-socket PATH``.
- ``-namespace`` and ``-id`` must be containerd identifiers (shim/ids.py) before anything uses them: ``start``
  and ``delete`` check their own (an id is required there), the daemon's are checked here (an id is optional).
"""

from __future__ import annotations

import os
import stat
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, nor collections
if TYPE_CHECKING:
    from collections.abc import Sequence

    from shim.manager import Manager

from shim.flags import FlagError, HelpRequested, ShimFlags, parse, usage

__all__ = ["run"]

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


def _program(manager: Manager) -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program in ("", "__main__.py", "-c"):
        name = manager.name.split(".")  # io.containerd.<name>.<version> -> containerd-shim-<name>-<version>
        program = f"containerd-shim-{name[-2]}-{name[-1]}" if len(name) >= 2 else manager.name
    return program


def _daemon_listener(flags: ShimFlags) -> int:
    """The listening socket fd for the daemon: a new one at ``-socket``, else the inherited fd 3."""
    if flags.socket:
        from shim.address import bind_or_reuse

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


def dispatch(manager: Manager, flags: ShimFlags) -> int:
    """Run what ``flags`` ask for; the exit status."""
    def error(message: str) -> None:
        _write_all(2, f"{manager.name}: {message}\n".encode(errors="replace"))

    if flags.version:
        from shim.commands.info import version_text

        _write_all(1, version_text(manager, _program(manager)).encode())
        return 0
    if flags.info:
        from shim.commands import info

        try:
            data = info.run(manager, _read_all(0))
        except (OSError, ValueError) as exc:
            error(f"-info: {exc}")
            return 1
        _write_all(1, data)
        return 0
    if not flags.namespace:
        error("shim namespace cannot be empty")
        return 1
    if flags.action == "start":
        from shim.commands import start

        try:
            output = start.run(manager, flags, _read_all(0))
        except Exception as exc:  # any failure is containerd's error text
            error(f"start: {exc}")
            return 1
        _write_all(1, output)
        return 0
    if flags.action == "delete":
        from shim.commands import delete

        try:
            data = delete.run(manager, flags, lambda message: error(f"delete {flags.id}: {message}"))
        except ValueError as exc:
            error(f"delete: {exc}")
            return 1
        _write_all(1, data)
        return 0
    if flags.action:
        error(f"unknown action {flags.action!r} (expected start, delete or none)")
        return 1
    from shim import ids

    why = ids.problem(flags.namespace, "namespace") or (ids.problem(flags.id, "container id") if flags.id else "")
    if why:
        error(why)
        return 1
    try:
        listen_fd = _daemon_listener(flags)
    except (OSError, RuntimeError) as exc:
        error(str(exc))
        return 1
    from shim.daemon import run as serve

    return serve(manager, flags, listen_fd)


def run(manager: Manager, argv: Sequence[str] | None = None) -> int:
    """The shim binary: parse ``argv`` (default: the process's arguments) and act; returns the exit status."""
    try:
        flags = parse(sys.argv[1:] if argv is None else argv)
    except HelpRequested:
        _write_all(1, usage(_program(manager)).encode())
        return 0
    except FlagError as exc:
        _write_all(2, f"{manager.name}: {exc}\n{usage(_program(manager))}".encode(errors="replace"))
        return 2
    return dispatch(manager, flags)
