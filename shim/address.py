"""A shim's socket: its address, and the listening socket ``start`` binds or finds there.

Rules (containerd ``pkg/shim/util_unix.go`` ``SocketAddress`` and ``NewSocket`` at v1.6.20):
- Address = ``unix://`` + SOCKET_DIR + ``/`` + lowercase hex SHA-256 of Go's ``filepath.Join(<-address>,
  <namespace>, <grouping id>)`` (Join drops empty elements, joins with ``/`` and applies Go's ``path.Clean``).
  SOCKET_DIR is upstream's hard-coded ``/run/containerd/s`` (2.3+ may send another in BootstrapParams).
- Never an abstract socket (CVE-2020-15257): every address produced here is a filesystem path with ``unix://``.
- ``bind_or_reuse`` runs under an exclusive flock on the socket directory, so concurrent starts of one group
  settle on one daemon: the path only ever appears already listening, a live socket (test connect within
  CONNECT_TIMEOUT, a full backlog counts as live) is reused, a dead one is unlinked and replaced. The directory
  is created 0700 and the socket chmod 0600 before it listens (upstream asks for 0600; both mean root-only).
- Standard library only (critical path), and no module that loads enum (stdlib_lite.unix_socket).
"""

from __future__ import annotations

import errno
import fcntl
import os

from shim.stdlib_lite import unix_socket

try:  # the builtin module avoids loading OpenSSL through hashlib
    from _sha256 import sha256
except ImportError:  # pragma: no cover - other interpreters / Python 3.12+ name it _sha2
    from hashlib import sha256

__all__ = ["SOCKET_DIR", "AddressError", "bind_or_reuse", "is_alive", "socket_address", "socket_path", "unlink"]

SOCKET_DIR = "/run/containerd/s"
UNIX_SCHEME = "unix://"
SOCKET_PATH_LIMIT = 106  # upstream's limit for socket paths (Linux sun_path is 108 bytes)
CONNECT_TIMEOUT = 0.1
BACKLOG = 4096  # the kernel clamps it to net.core.somaxconn, like Go's listener
Socket = object  # annotation only: a socket.socket or the leaner _socket.socket (stdlib_lite.py), same methods


class AddressError(RuntimeError):
    """A socket path that stays in use but refuses connections."""


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: shortest equivalent path by purely lexical processing."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def go_join(*elements: str) -> str:
    """Go's ``filepath.Join`` on Unix: join the non-empty elements with ``/`` and clean; "" if all are empty."""
    kept = [e for e in elements if e]
    if not kept:
        return ""
    return go_clean("/".join(kept))


def socket_address(containerd_address: str, namespace: str, group: str, socket_dir: str = SOCKET_DIR) -> str:
    """The ``unix://`` address a shim of (containerd, namespace, group) listens on."""
    digest = sha256(go_join(containerd_address, namespace, group).encode("utf-8")).hexdigest()
    return f"{UNIX_SCHEME}{go_join(socket_dir)}/{digest}"


def socket_path(address: str) -> str:
    """The filesystem path of a ``unix://`` address; anything else is refused (no abstract sockets)."""
    if not address.startswith(UNIX_SCHEME) or not address[len(UNIX_SCHEME):].startswith("/"):
        raise ValueError(f"not a unix:// socket path address: {address!r}")
    path = address[len(UNIX_SCHEME):]
    if len(path.encode()) > SOCKET_PATH_LIMIT:
        raise ValueError(f"socket path {path!r} is longer than {SOCKET_PATH_LIMIT} bytes")
    return path


def _listen(path: str) -> Socket:
    sock = unix_socket()
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    try:
        os.chmod(path, 0o600)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        unlink(path)
        raise
    return sock


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_alive(path: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Is something listening on the unix socket ``path``? A full backlog (EAGAIN) counts as alive."""
    probe = unix_socket()
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except (BlockingIOError, TimeoutError):
        return True
    finally:
        probe.close()
    return True


def bind_or_reuse(path: str) -> Socket | None:
    """A new listening socket at ``path``, or None if a live shim already listens there."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for _ in range(3):  # others (non-pyshim, or a daemon unlinking on exit) do not take the lock
            try:
                return _listen(path)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
            if is_alive(path):
                return None
            unlink(path)
        raise AddressError(f"socket {path} stays in use but refuses connections")
    finally:
        os.close(lock)
