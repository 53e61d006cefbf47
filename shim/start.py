"""The ``start`` action: find or create the group's listening socket, spawn the daemon, print the address.

Rules (shim-v2.md §3, §4, §7, §10.1):
- stdout and stderr of this process are read by containerd as one string: on success the only output is the
  address (no newline); on failure one error line on stderr and exit status 1. Nothing else is printed.
- The socket is bound, chmod 0600 and listening before this process exits, and the daemon gets it as fd 3, so
  containerd's single connect succeeds even before the daemon calls accept.
- Bind-or-reuse runs under an exclusive flock on the socket directory, so concurrent starts of one group
  (pyshim's own) settle on one daemon: the path only ever appears already listening, a live socket (test
  connect within 100 ms, a full backlog counts as live) is reused without spawning, a dead one is unlinked and
  replaced. The directory is created 0700 (upstream asks for 0600; both mean root-only).
- ``./address`` (the bundle is the cwd) is written atomically before the daemon starts, as upstream, because
  the daemon may look for it.
- The options Any on stdin is decoded only by a start that spawns a daemon; undecodable bytes fail the start
  before anything is spawned. ``containerd.runc.v1.Options.shim_cgroup`` moves the daemon into that cgroup.
- The daemon's oom_score_adj is containerd's (our parent's) + 1, clamped to [-1000, 1000]; EPERM/EACCES ignored.
- The daemon is spawned by ``spawn_daemon`` alone (a fork server may replace it): same program, argv
  ``-namespace NS -id ID -address ADDR [-debug]``, cwd = bundle, stdio on /dev/null (containerd waits for EOF
  on our stdout/stderr pipe), a new session, inherited environment, the listener as fd 3.
- After the daemon was spawned, any failure kills it, and the socket file and ``./address`` are removed.
- containerd 2.3+ bootstrap handshake: ``_bootstrap_mode`` is the one place that decides; until its wire
  format is settled it answers False and start speaks the plain protocol of containerd 1.6-2.1.
- Standard library only (critical path), and none of the modules that load enum/re (see lean.py).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from collections.abc import Mapping

from shim import address as addr
from shim import wire
from shim.flags import ShimFlags
from shim.lean import SIGKILL, SIGPIPE, SIGXFSZ, unix_socket

RUNC_OPTIONS = "containerd.runc.v1.Options"
CONNECT_TIMEOUT = 0.1
BACKLOG = 4096  # the kernel clamps it to net.core.somaxconn, like Go's listener
OOM_SCORE_MIN, OOM_SCORE_MAX = -1000, 1000
Socket = object  # annotation only: a socket.socket or the leaner _socket.socket (lean.py), same methods


class StartError(RuntimeError):
    """start failed; the message is what containerd shows."""


# -- socket ---------------------------------------------------------------------------------------------

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
        _unlink(path)
        raise
    return sock


def _unlink(path: str) -> None:
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
            _unlink(path)
        raise StartError(f"socket {path} stays in use but refuses connections")
    finally:
        os.close(lock)


# -- daemon ---------------------------------------------------------------------------------------------

def daemon_program() -> list[str]:
    """How to run this program again: the console script itself, or ``python -m shim``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if (spec is None or spec.name != "shim.__main__") and script and os.access(script, os.X_OK) \
            and os.path.isfile(script):
        return [script]
    return [sys.executable, "-m", "shim"]


def daemon_argv(flags: ShimFlags) -> list[str]:
    argv = ["-namespace", flags.namespace, "-id", flags.id, "-address", flags.address]
    if flags.debug:
        argv.append("-debug")
    return argv


def daemon_environ(program: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The inherited environment; for ``python -m shim`` also a PYTHONPATH that finds this package."""
    env = dict(environ)
    if program[1:2] == ["-m"]:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def spawn_daemon(flags: ShimFlags, listen_sock: Socket) -> int:
    """Start the daemon with ``listen_sock`` as its fd 3; return its pid. cwd = the current directory."""
    program = daemon_program()
    fd = listen_sock.fileno()
    source = fd if fd != 3 else os.dup(fd)  # dup2(3, 3) would keep FD_CLOEXEC set
    try:
        return os.posix_spawn(
            program[0], program + daemon_argv(flags), daemon_environ(program, os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, 1, 2),
                (os.POSIX_SPAWN_DUP2, source, 3),
            ],
            setsid=True,
            setsigdef=(SIGPIPE, SIGXFSZ),  # Python ignores these; do not pass that on
        )
    finally:
        if source != fd:
            os.close(source)


def _write_proc(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def adjust_oom_score(pid: int) -> None:
    """oom_score_adj of ``pid`` = our parent's + 1, clamped; permission errors are ignored."""
    with open(f"/proc/{os.getppid()}/oom_score_adj", "rb") as f:
        score = int(f.read().strip())
    score = max(OOM_SCORE_MIN, min(OOM_SCORE_MAX, score + 1))
    try:
        _write_proc(f"/proc/{pid}/oom_score_adj", str(score))
    except PermissionError:
        pass


def _cgroup_mounts() -> list[tuple[str, str]]:
    """(mount point, fstype) of every cgroup/cgroup2 filesystem, from /proc/self/mountinfo."""
    from shim.unmount import unescape

    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f.read().splitlines():
            left, _, right = line.partition(b" - ")
            fstype = right.split(b" ", 1)[0]
            if fstype in (b"cgroup", b"cgroup2"):
                found.append((unescape(left.split(b" ")[4]), fstype.decode()))
    return found


def join_cgroup(pid: int, cgroup: str) -> None:
    """Move ``pid`` into ``cgroup``: the unified hierarchy if /sys/fs/cgroup is cgroup2, else every v1
    hierarchy where that cgroup exists (like containerd's cgroups.Load with a static path)."""
    relative = cgroup.strip("/")
    mounts = _cgroup_mounts()
    if ("/sys/fs/cgroup", "cgroup2") in mounts:
        targets = ["/sys/fs/cgroup"]
    else:
        targets = [m for m, t in mounts if t == "cgroup"]
    joined = 0
    for mount_point in targets:
        procs = os.path.join(mount_point, relative, "cgroup.procs")
        if os.path.exists(procs):
            _write_proc(procs, str(pid))
            joined += 1
    if not joined:
        raise StartError(f"failed to load cgroup {cgroup}: no such cgroup")


def shim_cgroup(options: bytes) -> str:
    """``shim_cgroup`` (field 3) of a containerd.runc.v1.Options Any; "" for no options or another type."""
    if not options:
        return ""
    type_url, value = wire.decode_any(options)
    if type_url.rsplit("/", 1)[-1] != RUNC_OPTIONS:
        return ""
    return wire.get_string(wire.fields(value), 3)


# -- the action -----------------------------------------------------------------------------------------

def _bootstrap_mode(stdin_bytes: bytes, environ: Mapping[str, str]) -> bool:
    """Does this containerd speak the 2.3+ bootstrap handshake (BootstrapParams in, BootstrapResult out)?

    containerd 1.6-2.1 never do: their stdin is an options Any and they read the plain address. The 2.3+
    detection rule is still being settled (protos/bootstrap.proto); until then the answer is False, which
    2.3+ accepts too (it still takes the plain address).
    """
    return False


def start(flags: ShimFlags, stdin_bytes: bytes, socket_dir: str = addr.SOCKET_DIR) -> str:
    """Do everything but printing; return the address. Raises on failure after cleaning up."""
    if not flags.id:
        raise StartError("shim id cannot be empty")
    bundle = os.getcwd()
    group = addr.grouping_id(addr.read_annotations(bundle), flags.id)
    address = addr.socket_address(flags.address, flags.namespace, group, socket_dir)
    path = addr.socket_path(address)
    listener = bind_or_reuse(path)
    if listener is None:
        addr.write_address(bundle, address)
        return address
    pid = 0
    try:
        cgroup = shim_cgroup(stdin_bytes)
        addr.write_address(bundle, address)
        pid = spawn_daemon(flags, listener)
        if cgroup:
            join_cgroup(pid, cgroup)
        adjust_oom_score(pid)
    except BaseException:
        if pid:
            os.kill(pid, SIGKILL)
            os.waitpid(pid, 0)
        _unlink(path)
        _unlink(os.path.join(bundle, "address"))
        raise
    finally:
        listener.close()
    return address


def run(flags: ShimFlags, stdin_bytes: bytes, environ: Mapping[str, str]) -> str:
    """The ``start`` action as containerd runs it: return what to print. Raises on failure."""
    if _bootstrap_mode(stdin_bytes, environ):
        raise StartError("the containerd 2.3+ bootstrap handshake is not implemented")
    return start(flags, stdin_bytes)
