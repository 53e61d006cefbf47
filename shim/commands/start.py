"""The ``start`` command: find or create the group's listening socket, spawn the daemon, print the address.

Rules (containerd ``pkg/shim/shim.go`` and ``runtime/v2/runc/manager/manager_linux.go`` ``Start`` at v1.6.20):
- stdout and stderr of this process are read by containerd as one string: on success the only output is the
  address (no newline), or a BootstrapResult for 2.3+ (bootstrap.py); on failure one error line on stderr and
  exit status 1. Nothing else is printed.
- The group (``Manager.group``) names the socket (address.py). The socket is bound, chmod 0600 and listening
  before this process exits, and the daemon gets it as fd 3, so containerd's single connect succeeds even
  before the daemon calls accept. A live socket of the group is reused: the container joins that daemon.
- ``-namespace`` and ``-id`` must be containerd identifiers (shim/ids.py), checked before anything else.
- ``./address`` (the bundle is the cwd) is written atomically before the daemon starts, as upstream, because
  the daemon may look for it.
- A manager that shares daemons (``Manager.sharing``) gets the shard walk of shim/sharing.py instead of one
  group: the first shard that accepts a reservation, or the first free one (its new daemon counts this container
  as reserved and gets ``-shared MAX:IDLE``). Concurrent starts never make two daemons for one shard (bind under
  the directory lock) nor overfill one (the daemon decides each reservation in its one thread).
- The daemon is made by ``spawn_daemon`` alone: forked by the fork server when the manager has one and it is
  running (shim/forkserver/, docs/architecture.md "Process model"), else spawned fresh and the fork server
  revived in the background. Either way: same program, argv ``-namespace NS -id ID -address ADDR [-debug]``,
  cwd = bundle, stdio on /dev/null (containerd waits for EOF on our stdout/stderr pipe), a new session, our
  environment, umask, limits and cgroups, the listener as fd 3. Then ``Manager.daemon_cgroup`` (if any) and
  oom_score_adj = containerd's (our parent's) + 1, clamped to [-1000, 1000] (EPERM/EACCES ignored).
- After the daemon was spawned, any failure kills it, and the socket file and ``./address`` are removed.
- Standard library only (critical path), and none of the modules that load enum/re (see stdlib_lite.py). What
  only some starts need (the 2.3+ bootstrap, options, the sharing walk, a daemon cgroup) is imported where used:
  every module is paid by every container's start (bench/README.md, "The start path").
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, nor collections
if TYPE_CHECKING:
    from collections.abc import Mapping

    from shim.manager import Manager
    from shim.sharing import Sharing

from shim import address as addr
from shim import bundle as bundle_files
from shim import ids
from shim.flags import ShimFlags
from shim.forkserver import client as forkserver_client
from shim.forkserver import protocol as forkserver_proto
from shim.forkserver.protocol import package_root
from shim.manager import StartRequest
from shim.stdlib_lite import SIGKILL, SIGPIPE, SIGXFSZ

OOM_SCORE_MIN, OOM_SCORE_MAX = -1000, 1000
Socket = addr.Socket

__all__ = ["StartError", "run", "start"]


class StartError(RuntimeError):
    """start failed; the message is what containerd shows."""


# -- daemon ---------------------------------------------------------------------------------------------

def daemon_program() -> list[str]:
    """How to run this program again: the console script itself, or ``python -m <package>`` as we were run."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.endswith(".__main__"):
        return [sys.executable, "-m", spec.name[:-len(".__main__")]]
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if script and os.access(script, os.X_OK) and os.path.isfile(script):
        return [script]
    return [sys.executable, "-m", "shim"]


def daemon_argv(flags: ShimFlags) -> list[str]:
    argv = ["-namespace", flags.namespace, "-id", flags.id, "-address", flags.address]
    if flags.shared:
        argv += ["-shared", flags.shared]
    if flags.debug:
        argv.append("-debug")
    return argv


def daemon_environ(program: list[str], environ: Mapping[str, str], manager: Manager) -> dict[str, str]:
    """The inherited environment; for ``python -m`` also a PYTHONPATH that finds the manager and this library."""
    env = dict(environ)
    if program[1:2] == ["-m"]:
        roots = [package_root()]
        own = manager.source_root()
        if own and own not in roots:
            roots.append(own)
        if env.get("PYTHONPATH"):
            roots.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(roots)
    return env


def spawn_daemon(manager: Manager, flags: ShimFlags, listen_sock: Socket, forkserver: bool = True) -> int:
    """Start the daemon with ``listen_sock`` as its fd 3; return its pid. cwd = the current directory.

    The fork server forks it when the manager has one, ``forkserver`` asks for it and it is there
    (shim/forkserver/client.py); else a fresh process is spawned and the fork server is brought back in the
    background for the next start."""
    program = daemon_program()
    env = daemon_environ(program, os.environ, manager)
    if not (manager.forkserver and forkserver) or not forkserver_proto.enabled(env):
        return spawn_fresh(flags, listen_sock, program, env)
    location = forkserver_proto.Location.of(env, manager.forkserver)
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


# -- the command ----------------------------------------------------------------------------------------

def start(manager: Manager, flags: ShimFlags, options: tuple[bytes, ...],
          socket_dir: str = addr.SOCKET_DIR) -> str:
    """Do everything but printing; return the address. ``options`` are serialized Anys (maybe none).

    Raises on failure, after cleaning up."""
    why = ids.problem(flags.namespace, "namespace") or ids.problem(flags.id, "container id")
    if why:
        raise StartError(why)
    bundle = os.getcwd()
    request = StartRequest(id=flags.id, namespace=flags.namespace, address=flags.address, bundle=bundle,
                           options=options, debug=flags.debug)
    shared = manager.sharing(request)
    if shared is not None:
        return start_shared(manager, flags, request, shared, socket_dir)
    address = addr.socket_address(flags.address, flags.namespace, manager.group(request), socket_dir)
    path = addr.socket_path(address)
    listener = addr.bind_or_reuse(path)
    if listener is None:
        bundle_files.write_address(bundle, address)
        return address
    return new_daemon(manager, flags, request, listener, path, address)


def start_shared(manager: Manager, flags: ShimFlags, request: StartRequest, shared: Sharing,
                 socket_dir: str) -> str:
    """The shard walk (module rules): the address of the daemon that took this container."""
    from shim import sharing

    refusals = []
    for index in range(sharing.MAX_SHARDS):
        group = sharing.shard_group(shared.key, index)
        address = addr.socket_address(flags.address, flags.namespace, group, socket_dir)
        path = addr.socket_path(address)
        listener = addr.bind_or_reuse(path)
        if listener is not None:
            daemon_flags = flags.replace(shared=f"{shared.max_tasks}:{shared.idle_exit!r}")
            return new_daemon(manager, daemon_flags, request, listener, path, address)
        answer = sharing.reserve(path, flags.id)
        if answer.accepted:
            bundle_files.write_address(request.bundle, address)
            return address
        if len(refusals) < 3:
            refusals.append(f"shard {index}: {answer.reason}")
    raise StartError(f"no shard of {shared.key} took the container ({'; '.join(refusals)}; ...)")


def new_daemon(manager: Manager, flags: ShimFlags, request: StartRequest, listener: Socket, path: str,
               address: str) -> str:
    """Spawn the daemon that will serve on ``listener`` (bound at ``path``); ``address`` once it is up."""
    bundle = request.bundle
    pid = 0
    try:
        if request.options:
            from ttrpc import wire
        for any_bytes in request.options:
            try:
                wire.decode_any(any_bytes)
            except wire.WireError as exc:
                raise StartError(f"cannot decode the runtime options (a google.protobuf.Any): {exc}") from None
        cgroup = manager.daemon_cgroup(request)
        bundle_files.write_address(bundle, address)
        pid = spawn_daemon(manager, flags, listener, manager.use_forkserver(request))
        if cgroup:
            from shim.linux.cgroup_join import join_path

            join_path(pid, cgroup)
        adjust_oom_score(pid)
    except BaseException:
        if pid:
            os.kill(pid, SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # forked by the fork server: init reaps it
        addr.unlink(path)
        addr.unlink(os.path.join(bundle, "address"))
        raise
    finally:
        listener.close()
    return address


def run(manager: Manager, flags: ShimFlags, stdin_bytes: bytes) -> bytes:
    """The ``start`` command as containerd runs it: return what to print. Raises on failure."""
    if not stdin_bytes:
        return start(manager, flags, ()).encode()
    from shim.commands import bootstrap

    params = bootstrap.params(stdin_bytes, flags.id, flags.namespace)
    if params is None:
        return start(manager, flags, (stdin_bytes,)).encode()
    address = start(manager, flags, params.options, params.socket_dir or addr.SOCKET_DIR)
    return bootstrap.result(address)
