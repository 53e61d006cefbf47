"""A zygote of the fork server turning into a shim daemon, as if ``start`` had spawned it.

Rules:
- ``become_daemon``: descriptors exactly 0-2 = /dev/null, 3 = the listening socket (inheritable, as start
  passes it), 4 = the reply connection, nothing else; then what ``start``'s process would have passed on:
  cwd, umask, environment, resource limits, nice value, CPU affinity and, where the server's differ, the
  cgroups of the asking ``start`` (read from /proc/<peer>, which waits for our reply and so is alive); the
  command line (argv area, ``comm``, sys.argv) a fresh daemon would show. oom_score_adj and ``shim_cgroup``
  stay with start, which applies them to whatever pid it gets.
- Any failure before the reply is answered as an error (start then spawns a fresh daemon) and we exit. The
  reply is the last step before serving: if it cannot be sent, the asking start has given up and may be
  spawning a fresh daemon for the same socket, so we exit without serving (client.py).
- Then ``shim.daemon.run(manager, flags, 3)``, with the collector enabled again (the server's objects stay frozen).
- Nothing here returns: every path ends in os._exit, so none of the server's cleanup (its finally blocks,
  unlinking its socket) ever runs in a daemon.
"""
from __future__ import annotations

import ctypes
import fcntl
import gc
import os
import resource
import signal
import socket
import sys

from shim.linux import cgroup_join
from shim.forkserver import protocol as proto

TRACE_ENV = "PYSHIM_FORKSERVER_TRACE"  # a file: the daemon appends every module it still has to import
FD_PARK = 64  # descriptors are parked at or above this while everything below is closed
PR_SET_NAME = 15
_RLIMITS = tuple(getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_"))
_libc = ctypes.CDLL(None, use_errno=True)


class ArgvArea:
    """The process's argv memory (what /proc/<pid>/cmdline shows), rewritten in place.

    The arguments are written NUL-separated and the rest is NUL-filled; the last byte stays NUL, so the
    kernel shows the area as an argument list (trailing empty arguments are ignored by ps and pgrep).
    """

    def __init__(self, start: int, end: int) -> None:
        self.start, self.size = start, max(0, end - start)

    @classmethod
    def of_self(cls) -> ArgvArea:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return cls(int(fields[45]), int(fields[46]))  # fields 48 and 49 of proc(5): arg_start, arg_end

    @staticmethod
    def encode(args: list[str]) -> bytes:
        return b"".join(os.fsencode(a) + b"\0" for a in args)

    def fits(self, args: list[str]) -> bool:
        return len(self.encode(args)) <= self.size

    def write(self, args: list[str]) -> None:
        raw = self.encode(args)
        if len(raw) > self.size:
            raise ValueError(f"command line of {len(raw)} bytes does not fit {self.size}")
        ctypes.memmove(self.start, raw + bytes(self.size - len(raw)), self.size)


def title(req: proto.Request) -> list[str]:
    """The command line of a fresh daemon."""
    return list(req.program) + list(req.argv)


def set_comm(program: str) -> None:
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(os.fsencode(os.path.basename(program))[:15]), 0, 0, 0)


def fresh_signals() -> None:
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2,
                   signal.SIGALRM, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # what CPython sets at startup
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _peer_cgroups(peer: int) -> None:
    """Join the peer's cgroup in every hierarchy where ours differs (shim/linux/cgroup_join.py)."""
    with open(f"/proc/{peer}/cgroup", "rb") as f:
        wanted = f.read()
    with open("/proc/self/cgroup", "rb") as f:
        current = f.read()
    if wanted != current:
        cgroup_join.join_like(wanted.decode(), current.decode(), os.getpid())


def _inherit(req: proto.Request, peer: int) -> None:
    os.chdir(req.cwd)
    os.umask(req.umask)
    os.environ.clear()
    for entry in req.env:
        name, _, value = entry.partition(b"=")
        os.environb[name] = value
    for limit in _RLIMITS:
        wanted = resource.prlimit(peer, limit)
        if resource.getrlimit(limit) != wanted:
            resource.setrlimit(limit, wanted)
    nice = os.getpriority(os.PRIO_PROCESS, peer)
    if os.getpriority(os.PRIO_PROCESS, 0) != nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    cpus = os.sched_getaffinity(peer)
    if os.sched_getaffinity(0) != cpus:
        os.sched_setaffinity(0, cpus)
    _peer_cgroups(peer)


def _trace_imports(path: str) -> None:
    """Development aid for preload.LAZY: log imports the preload missed."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def hook(event: str, args: tuple) -> None:
        if event == "import" and args[0] not in sys.modules:
            os.write(fd, f"{os.getpid()} {args[0]}\n".encode())

    sys.addaudithook(hook)


def _reply(fd: int, data: bytes) -> bool:
    sock = socket.socket(fileno=fd)
    try:
        sock.send(data, socket.MSG_NOSIGNAL)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def become_daemon(manager, conn_fd: int, listen_fd: int, req: proto.Request, peer: int, area: ArgvArea) -> None:
    """Set up as ``start`` would have (see the module rules), reply, serve; ends in os._exit."""
    code = 1
    try:
        listen_fd, conn_fd = _park_and_arrange(listen_fd, conn_fd)
        try:
            _inherit(req, peer)
            args = title(req)
            area.write(args)
            set_comm(req.comm or req.program[0])
            sys.argv = args[1:]
            if os.environ.get(TRACE_ENV):
                _trace_imports(os.environ[TRACE_ENV])
        except Exception as exc:
            _reply(conn_fd, proto.encode_reply(error=f"daemon setup: {type(exc).__name__}: {exc}"))
            return
        gc.enable()
        if not _reply(conn_fd, proto.encode_reply(pid=os.getpid())):
            return
        from shim.daemon import run
        from shim.flags import parse

        code = run(manager, parse(req.argv), listen_fd)
    finally:
        os._exit(code)


def _park_and_arrange(listen_fd: int, conn_fd: int) -> tuple[int, int]:
    """Move the listener to 3 and the connection to 4 after closing everything else; return (3, 4)."""
    parked_listen = fcntl.fcntl(listen_fd, fcntl.F_DUPFD_CLOEXEC, FD_PARK)
    parked_conn = fcntl.fcntl(conn_fd, fcntl.F_DUPFD_CLOEXEC, FD_PARK)
    low, high = sorted((parked_listen, parked_conn))
    os.closerange(0, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, 1 << 30)
    null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: 0
    if null != 0:
        raise OSError(f"/dev/null opened as {null}, expected 0")
    os.dup2(0, 1)
    os.dup2(0, 2)
    os.dup2(parked_listen, 3)  # inheritable, as start passes it
    os.dup2(parked_conn, 4, inheritable=False)
    os.close(parked_listen)
    os.close(parked_conn)
    return 3, 4
