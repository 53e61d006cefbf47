"""A zygote: a pre-forked daemon-to-be that takes one ``start`` request itself and becomes that daemon.

Rules:
- The fork server forks zygotes in advance, twice (the middle process exits at once), so a daemon's parent
  is init (or the nearest subreaper) exactly like a Go shim's after ``start`` exits; the server never reaps
  daemons and its death takes none down. A request therefore pays for no fork and never passes through the
  server: the zygote accepts on the server's listening socket itself.
- Right after the fork: a new session, a fresh interpreter's signal dispositions, mask and wakeup fd, and
  only the listener and the channel to the server kept, with /dev/null on 0-2 (the server's Python sockets
  are detached first, so no stale object can ever close a daemon's descriptor). A trial trio run builds a
  daemon's parts (``warm``, off the critical path; skipped when a start already waits). Then it waits for a
  connection or for EOF on the channel (the server exited, crashed or restarted), which ends it.
- Per connection (``Gate.check``): the peer's SO_PEERCRED uid must be 0, else the connection is closed
  unanswered; the request must arrive within REQUEST_TIMEOUT, decode, be a daemon command line (namespace
  and id containerd identifiers, shim/ids.py) that fits the argv area, carry exactly one socket descriptor,
  come from a peer in the server's namespaces, and the installed code must be what the server preloaded.
  A refusal is answered and the zygote waits again; "code changed" is also reported to the server on the
  channel (it restarts) and ends the zygote.
- An accepted request: the zygote tells the server its pid and the container (for the server's log), closes
  the listener and the channel (the server sees EOF and forks the next zygote) and becomes the daemon
  (child.become_daemon, which replies to ``start``).
- Nothing here returns: every path ends in os._exit, so none of the server's cleanup ever runs here.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import struct
import sys

import trio

from shim import ids
from shim.forkserver import child
from shim.forkserver import protocol as proto
from shim.flags import FlagError, HelpRequested, parse

REQUEST_TIMEOUT = 1.0
NAMESPACES = ("mnt", "net", "pid", "ipc", "uts", "user", "cgroup")
CODE_CHANGED = "installed code changed"
RESTART = b"restart"  # zygote -> server on the channel: the code changed
TAKEN = b"taken"  # zygote -> server: "taken <pid> <namespace> <id>", then EOF
_CRED = struct.Struct("3i")


def namespaces(pid: str) -> tuple[int, ...]:
    return tuple(os.stat(f"/proc/{pid}/ns/{name}").st_ino for name in NAMESPACES)


class Gate:
    """What a request is checked against: the server's code, namespaces and argv area."""

    def __init__(self, manager, watch, area: child.ArgvArea) -> None:
        self.manager = manager  # the shim's Manager (shim/manager.py): what the daemons serve
        self.watch = watch
        self.area = area
        self.namespaces = namespaces("self")

    def check(self, data: bytes, msg_flags: int, fds: list[int], peer: int) -> tuple[str, proto.Request | None]:
        """("", request) or (refusal, None)."""
        if msg_flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            return "request or its descriptors truncated", None
        if len(fds) != proto.MAX_FDS or not stat.S_ISSOCK(os.fstat(fds[0]).st_mode):
            return f"expected one socket descriptor, got {len(fds)} descriptors", None
        try:
            req = proto.decode_request(data)
            flags = parse(req.argv)
        except (ValueError, FlagError, HelpRequested) as exc:
            return f"bad request: {exc}", None
        if flags.action or flags.socket or flags.version or flags.info or not flags.namespace:
            return "not a daemon command line", None
        why = ids.problem(flags.namespace, "namespace") or (ids.problem(flags.id, "container id") if flags.id else "")
        if why:
            return f"bad request: {why}", None
        if self.watch.changed():
            return CODE_CHANGED, None
        if namespaces(str(peer)) != self.namespaces:
            return "the peer is in other namespaces than the fork server", None
        if not self.area.fits(child.title(req)):
            return "command line too long for the fork server's argv area", None
        return "", req


def warm(manager) -> None:
    """A trial trio run that builds a daemon's parts, while nobody waits: the first run in a fresh process
    costs more CPU than later ones (first calls, copy-on-write faults; bench/README.md), paid here instead."""
    from shim.daemon import build
    from shim.flags import ShimFlags

    async def trial() -> None:
        build(manager, ShimFlags(namespace="warm-up", id="warm-up"))

    try:
        trio.run(trial)
    except Exception:  # noqa: BLE001 - an optimisation only; the daemon reports its own failures
        pass


def receive(conn: socket.socket) -> tuple[int, int, bytes, int, list[int]]:
    """(peer pid, peer uid, request bytes, msg flags, received fds); nothing is read from a non-root peer."""
    peer, uid, _ = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    if uid != 0:
        return peer, uid, b"", 0, []
    data, ancdata, msg_flags, _ = conn.recvmsg(proto.MAX_REQUEST, socket.CMSG_SPACE(proto.MAX_FDS * 4),
                                               socket.MSG_CMSG_CLOEXEC)
    fds = [int.from_bytes(payload[i:i + 4], sys.byteorder)
           for level, kind, payload in ancdata if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
           for i in range(0, len(payload) - len(payload) % 4, 4)]
    return peer, uid, data, msg_flags, fds


def run(listen_fd: int, channel_fd: int, gate: Gate, title: list[str]) -> None:
    """The zygote's life; never returns."""
    code = 0
    try:
        os.setsid()
        child.fresh_signals()
        low, high = sorted((listen_fd, channel_fd))
        os.closerange(0, low)
        os.closerange(low + 1, high)
        os.closerange(high + 1, 1 << 30)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            if fd != null:
                os.dup2(null, fd)
        gate.area.write(title)
        child.set_comm(title[0])
        listener = socket.socket(fileno=listen_fd)
        listener.setblocking(False)  # several zygotes may wake for one connection
        channel = socket.socket(fileno=channel_fd)
        poller = select.poll()
        poller.register(listen_fd, select.POLLIN)
        poller.register(channel_fd, select.POLLIN)
        if not poller.poll(0):  # in a burst a start is already waiting: serve it rather than warm up
            warm(gate.manager)
        while True:
            events = dict(poller.poll())
            if channel_fd in events:
                return  # EOF (or anything) from the server: it is gone
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, ConnectionAbortedError):
                continue  # another zygote took it
            taken = _serve(conn, listener, channel, gate)
            if taken is not None:
                code = 1
                child.become_daemon(*taken)
    finally:
        os._exit(code)


def _serve(conn: socket.socket, listener: socket.socket, channel: socket.socket, gate: Gate):
    """Check one connection; the become_daemon arguments if we take it, None to wait again."""
    fds: list[int] = []
    try:
        conn.settimeout(REQUEST_TIMEOUT)
        peer, uid, data, msg_flags, fds = receive(conn)
        if uid != 0:
            return None
        error, req = gate.check(data, msg_flags, fds, peer)
        if error:
            conn.send(proto.encode_reply(error=error), socket.MSG_NOSIGNAL)
            if error == CODE_CHANGED:
                try:
                    channel.send(RESTART, socket.MSG_NOSIGNAL)
                finally:
                    os._exit(0)
            return None
        flags = parse(req.argv)
        try:
            channel.send(b"%s %d %s %s" % (TAKEN, os.getpid(), flags.namespace.encode(), flags.id.encode()),
                         socket.MSG_NOSIGNAL)
        except OSError:
            pass  # the server is gone: serving this request does not need it
        listener.close()
        channel.close()  # the server forks the next zygote
        conn_fd, listen_fd = conn.detach(), fds[0]
        fds = []
        return gate.manager, conn_fd, listen_fd, req, peer, gate.area
    except OSError:
        return None
    finally:
        for fd in fds:
            os.close(fd)
        if conn.fileno() >= 0:
            conn.close()
