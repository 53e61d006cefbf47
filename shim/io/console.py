"""The console socket a runtime sends the pty master through, and window-size changes on that master.

Rules (runc's ``--console-socket`` protocol, runc ``docs/terminals.md``; containerd ``pkg/process/init.go`` at v1.6.20):
- `ConsoleSocket.create` makes a private directory `pty*` (under $XDG_RUNTIME_DIR if set, else the system temp
  dir) holding a listening unix stream socket `pty.sock`; the runtime gets its absolute path with
  `--console-socket`. With $XDG_RUNTIME_DIR the socket is made 0755|sticky, as go-runc does.
- `receive_master` accepts one connection (after the runtime command returned, so it is normally queued
  already) from a peer of our own uid (SO_PEERCRED: another user's connection is closed unread and the wait
  goes on; the private directory is the first fence), reads one message with a 4096-byte data buffer and room
  for exactly one fd, and requires exactly one SCM_RIGHTS fd; anything else (no fd, more fds, truncated
  control data) is an error and every received fd is closed. The fd arrives close-on-exec (MSG_CMSG_CLOEXEC)
  so no later child inherits the master.
- The ConsoleSocket owns the listener, the connection and the directory; `close` removes all of them and may
  be called any number of times. The caller bounds the wait (`trio.fail_after`).
"""
from __future__ import annotations

import array
import fcntl
import os
import shutil
import socket
import struct
import tempfile
import termios

import trio

from ttrpc.unixcreds import peer_credentials

MAX_NAME = 4096


class ConsoleSocketError(RuntimeError):
    """The runtime did not hand over exactly one pty master."""


class ConsoleSocket:
    def __init__(self, directory: str, sock: socket.socket) -> None:
        self.directory = directory
        self.path = os.path.join(directory, "pty.sock")
        self._sock: socket.socket | None = sock

    @classmethod
    def create(cls) -> ConsoleSocket:
        runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or None
        directory = tempfile.mkdtemp(prefix="pty", dir=runtime_dir)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            path = os.path.join(directory, "pty.sock")
            sock.bind(path)
            sock.listen(1)
            sock.setblocking(False)
            if runtime_dir is not None:
                os.chmod(path, 0o755 | 0o1000)
        except BaseException:
            sock.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(directory, sock)

    async def receive_master(self) -> int:
        """The pty master fd the runtime sent (the caller owns it from now on)."""
        if self._sock is None:
            raise ConsoleSocketError("console socket is closed")
        listener = self._sock
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listener)
                continue
            if peer_credentials(conn).uid == os.geteuid():
                break
            conn.close()  # another user's connection: dropped unread; the runtime's is still to come
        try:
            conn.setblocking(False)
            while True:
                try:
                    msg = conn.recvmsg(MAX_NAME, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(conn)
        finally:
            trio.lowlevel.notify_closing(conn)
            conn.close()
        if not msg[0] and not msg[1]:
            raise ConsoleSocketError("failed to receive the console master: connection closed without a message")
        return _one_fd(*msg)

    def close(self) -> None:
        if self._sock is not None:
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()
            self._sock = None
        shutil.rmtree(self.directory, ignore_errors=True)


def _one_fd(data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int, _addr: object) -> int:
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    problem = ""
    if flags & socket.MSG_CTRUNC:
        problem = "control data truncated (more than one fd sent?)"
    elif len(ancdata) != 1:
        problem = f"number of control messages is not 1: {len(ancdata)}"
    elif len(fds) != 1:
        problem = f"number of fds is not 1: {len(fds)}"
    elif len(data) >= MAX_NAME:
        problem = f"console name too long ({len(data)} bytes)"
    if problem:
        for fd in fds:
            os.close(fd)
        raise ConsoleSocketError(f"failed to receive the console master: {problem}")
    return fds[0]


def resize(master: int, width: int, height: int) -> None:
    """TIOCSWINSZ: rows = height, columns = width, pixel sizes 0."""
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def window_size(fd: int) -> tuple[int, int]:
    """(width, height) of a terminal, via TIOCGWINSZ."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return cols, rows
