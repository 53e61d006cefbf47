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
- The daemon is made by ``spawn_daemon`` alone: forked by the fork server when it is running (shim/forkserver*.py,
  docs/architecture.md "Process model"), else spawned fresh and the fork server revived in the background.
  Either way: same program, argv ``-namespace NS -id ID -address ADDR [-debug]``, cwd = bundle, stdio on
  /dev/null (containerd waits for EOF on our stdout/stderr pipe), a new session, our environment, umask,
  limits and cgroups, the listener as fd 3.
- After the daemon was spawned, any failure kills it, and the socket file and ``./address`` are removed.
- stdin and stdout by containerd version (protos/README.md): 1.6-2.2 write the options Any (or nothing) and
  read the plain address. 2.3+ write a binary BootstrapParams and prefer a binary BootstrapResult (they still
  accept the plain address). A BootstrapParams is recognised as upstream 2.4 does: it decodes and its
  instance_id and namespace equal ``-id`` and ``-namespace`` (a legacy Any never passes: its type_url would
  have to equal the id). Then its socket_dir (if set) replaces /run/containerd/s, the runtime options are
  the ``containerd.runc.v1.Options`` extension (if any), and the answer is BootstrapResult{version 3 (task
  API v3, as upstream's runc shim answers; containerd may then attach a CRI pod's other containers to this
  shim without a start of their own, which the daemon serves like grouped ones), address, "ttrpc"}, whose
  last bytes are the protocol string, never whitespace (2.3.0 trims before decoding).
- Standard library only (critical path), and none of the modules that load enum/re (see lean.py).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, nor collections (~1-3 ms CPU)
if TYPE_CHECKING:
    from collections.abc import Mapping

from shim import address as addr
from shim.forkserver import client as forkserver_client
from shim.forkserver import protocol as forkserver_proto
from shim.forkserver.protocol import package_root
from ttrpc import wire
from shim.flags import ShimFlags
from shim.stdlib_lite import SIGKILL, SIGPIPE, SIGXFSZ, unix_socket
from shim.record import Record

RUNC_OPTIONS = "containerd.runc.v1.Options"
LEGACY_CREATE_OPTIONS = "containerd.linux.runc.CreateOptions"
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
        root = package_root()
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def spawn_daemon(flags: ShimFlags, listen_sock: Socket) -> int:
    """Start the daemon with ``listen_sock`` as its fd 3; return its pid. cwd = the current directory.

    The fork server forks it when it is there (forkserver_client.py); else a fresh process is spawned and
    the fork server is brought back in the background for the next start."""
    program = daemon_program()
    env = daemon_environ(program, os.environ)
    if not forkserver_proto.enabled(env):
        return spawn_fresh(flags, listen_sock, program, env)
    location = forkserver_proto.Location.of(env)
    old_umask = os.umask(0o022)
    os.umask(old_umask)
    request = forkserver_proto.Request(
        argv=tuple(daemon_argv(flags)),
        env=tuple(os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()),
        cwd=os.fsencode(os.getcwd()), umask=old_umask, program=tuple(fresh_command_line(program)),
        comm=os.path.basename(program[0]))
    pid, _ = forkserver_client.request_daemon(location, request, listen_sock.fileno())
    if pid:
        return pid
    pid = spawn_fresh(flags, listen_sock, program, env)
    try:
        forkserver_client.revive(location, env)
    except OSError:
        pass  # the fork server is an optimisation: never fail a start over it
    return pid


def fresh_command_line(program: list[str]) -> list[str]:
    """What a fresh daemon's /proc/<pid>/cmdline starts with. Our own script runs under the same #! line we
    run under, i.e. our own command line up to the script; ``python -m shim`` shows as itself."""
    if len(program) == 1 and sys.argv and program[0] == os.path.abspath(sys.argv[0]):
        return [*sys.orig_argv[:len(sys.orig_argv) - len(sys.argv)], program[0]]
    return program


def spawn_fresh(flags: ShimFlags, listen_sock: Socket, program: list[str], env: dict[str, str]) -> int:
    """posix_spawn a new interpreter as the daemon (no fork server)."""
    fd = listen_sock.fileno()
    source = fd if fd != 3 else os.dup(fd)  # dup2(3, 3) would keep FD_CLOEXEC set
    try:
        return os.posix_spawn(
            program[0], program + daemon_argv(flags), env,
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
    from shim.linux.unmount import unescape

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


def _type_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def shim_cgroup(options: bytes) -> str:
    """``shim_cgroup`` of the options Any: field 3 of containerd.runc.v1.Options, or field 9 of the legacy
    containerd.linux.runc.CreateOptions that 1.6/1.7 clients send for runtimes not named io.containerd.runc.*
    (containerd's TestShimInCgroup); "" for no options or another type."""
    if not options:
        return ""
    type_url, value = wire.decode_any(options)
    field = {RUNC_OPTIONS: 3, LEGACY_CREATE_OPTIONS: 9}.get(_type_name(type_url))
    if field is None:
        return ""
    return wire.get_string(wire.fields(value), field)


# -- the action -----------------------------------------------------------------------------------------

class Bootstrap(Record):
    """What start uses from a containerd 2.3+ BootstrapParams."""

    options: bytes = b""   # a serialized Any (the runc Options extension), or b""
    socket_dir: str = ""


def bootstrap_params(stdin_bytes: bytes, flags: ShimFlags) -> Bootstrap | None:
    """The BootstrapParams on stdin (containerd 2.3+), or None for the legacy options Any / nothing."""
    if not stdin_bytes:
        return None
    instance_id = namespace = socket_dir = ""
    options = b""
    try:
        for number, wire_type, value in wire.iter_fields(stdin_bytes):
            if wire_type != wire.LEN:
                continue
            if number == 1:
                instance_id = value.decode("utf-8")
            elif number == 2:
                namespace = value.decode("utf-8")
            elif number == 8 and not options:
                extension = wire.get_bytes(wire.fields(value), 1)
                if _type_name(wire.decode_any(extension)[0]) == RUNC_OPTIONS:
                    options = extension
            elif number == 9:
                socket_dir = value.decode("utf-8")
    except (wire.WireError, UnicodeDecodeError):
        return None
    if (instance_id, namespace) != (flags.id, flags.namespace):
        return None
    return Bootstrap(options=options, socket_dir=socket_dir)


def bootstrap_result(address: str) -> bytes:
    """containerd.runtime.bootstrap.v1.BootstrapResult {1 version int32, 2 address, 3 protocol}."""
    return wire.uint_field(1, 3) + wire.string_field(2, address) + wire.string_field(3, "ttrpc")


def start(flags: ShimFlags, options: bytes, socket_dir: str = addr.SOCKET_DIR) -> str:
    """Do everything but printing; return the address. ``options`` is a serialized Any (or b"").

    Raises on failure, after cleaning up."""
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
        cgroup = shim_cgroup(options)
        addr.write_address(bundle, address)
        pid = spawn_daemon(flags, listener)
        if cgroup:
            join_cgroup(pid, cgroup)
        adjust_oom_score(pid)
    except BaseException:
        if pid:
            os.kill(pid, SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # forked by the fork server: init reaps it
        _unlink(path)
        _unlink(os.path.join(bundle, "address"))
        raise
    finally:
        listener.close()
    return address


def run(flags: ShimFlags, stdin_bytes: bytes) -> bytes:
    """The ``start`` action as containerd runs it: return what to print. Raises on failure."""
    params = bootstrap_params(stdin_bytes, flags)
    if params is None:
        return start(flags, stdin_bytes).encode()
    address = start(flags, params.options, params.socket_dir or addr.SOCKET_DIR)
    return bootstrap_result(address)
