"""``start``'s side of the fork server: ask it for a daemon, and bring it back when it is missing.

Rules:
- Standard library only, none of enum/re/json (critical path, see shim/stdlib_lite.py).
- ``request_daemon`` sends nothing (neither the environment nor the listening socket) unless SO_PEERCRED says
  the server runs as our own uid (root): a socket someone else bound there gets no request.
- ``request_daemon`` either returns the pid of a daemon that serves the listening socket, or a reason and the
  guarantee that no daemon forked for this request will ever serve it, so the caller may spawn a fresh one.
  The guarantee rests on the reply coming from the forked daemon itself, which runs only if its reply was
  queued: when no reply arrived in time, we shut the connection down (from then on the daemon's send fails
  with EPIPE and it exits without serving) and take a reply queued before the shutdown, if any.
- ``revive`` starts a fork server in the background and never waits for it: ``python -P -m shim.forkserver``
  of this interpreter and package, stdio on /dev/null (containerd waits for EOF on ours), its own session,
  the caller's cgroup (containerd's), so it is never in a container's cgroup or a shim's. It does nothing
  when a server holds the lock (alive or still loading), or when the ``revive`` stamp says a revive was tried
  in the last REVIVE_INTERVAL seconds and never came up (a server removes the stamp once it serves): a
  server that cannot start must not cost every start a process.
- The padding argument reserves room in the server's argv area: a forked daemon rewrites that area so its
  command line is exactly what a fresh daemon's would be (child.py).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

from shim.forkserver.protocol import Location, Request, decode_reply, encode_request, package_root

try:
    import _socket as _sock
except ImportError:  # pragma: no cover
    import socket as _sock

REPLY_TIMEOUT = 5.0
REVIVE_INTERVAL = 5.0
TITLE_SPACE = 2048  # bytes of argv area a forked daemon may use for its command line
_REPLY_MAX = 4096


def request_daemon(location: Location, req: Request, listen_fd: int,
                   timeout: float = REPLY_TIMEOUT) -> tuple[int, str]:
    """(pid, "") of a daemon forked for ``req`` with ``listen_fd`` as its fd 3, or (0, why not)."""
    sock = _sock.socket(_sock.AF_UNIX, _sock.SOCK_SEQPACKET)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(location.path("sock"))
            owner = server_uid(sock)
            if owner != os.geteuid():
                return 0, f"fork server socket is served by uid {owner}, not {os.geteuid()}: not asked"
            fds = listen_fd.to_bytes(4, sys.byteorder)
            sock.sendmsg([encode_request(req)], [(_sock.SOL_SOCKET, _sock.SCM_RIGHTS, fds)])
        except OSError as exc:
            return 0, f"fork server unavailable: {exc}"
        try:
            data = sock.recv(_REPLY_MAX)
        except OSError as exc:  # timed out or broken: make sure no late daemon serves the socket
            data = _last_word(sock)
            if data is None:
                if isinstance(exc, TimeoutError):
                    return 0, f"fork server gave no answer within {timeout:g} s"
                return 0, f"fork server dropped the request: {exc}"
        return decode_reply(data)
    finally:
        sock.close()


def server_uid(sock) -> int:
    """The uid of the process that listens on the other end (SO_PEERCRED: its credentials at listen time)."""
    return int.from_bytes(sock.getsockopt(_sock.SOL_SOCKET, _sock.SO_PEERCRED, 12)[4:8], sys.byteorder)


def _last_word(sock) -> bytes | None:
    """After shutdown nothing more can arrive; return a reply that was queued before it, if any."""
    try:
        sock.shutdown(_sock.SHUT_RDWR)
    except OSError:
        pass
    sock.setblocking(False)
    try:
        return sock.recv(_REPLY_MAX) or None
    except OSError:
        return None


def server_locked(location: Location) -> bool:
    """Does a fork server hold the lock (running, or starting up)?"""
    try:
        fd = os.open(location.path("lock"), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def server_argv(location: Location) -> list[str]:
    return [sys.executable, "-P", "-m", "shim.forkserver", location.directory, location.manager,
            " " * TITLE_SPACE]


def revive(location: Location, environ) -> int:
    """Start a fork server unless one is there or was tried recently; its pid, or 0 when none was started."""
    stamp = location.path("revive")
    try:
        if time.time() - os.stat(stamp).st_mtime < REVIVE_INTERVAL:
            return 0
    except FileNotFoundError:
        pass
    os.makedirs(location.directory, mode=0o700, exist_ok=True)
    if server_locked(location):
        return 0
    os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    os.utime(stamp)
    path = [package_root(), *([environ["PYTHONPATH"]] if environ.get("PYTHONPATH") else [])]
    env = {"PATH": environ.get("PATH") or os.defpath, "PYTHONPATH": os.pathsep.join(path)}
    return os.posix_spawn(
        sys.executable, server_argv(location), env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
