"""The ``delete`` action: clean up after container ``-id`` whose shim is gone or done, print a DeleteResponse.

Rules (shim-v2.md §9):
- Touch only container ``-id``: never the daemon, never other containers of its group.
- Steps: force-delete the container in the OCI runtime, but only if the runtime still has state for it (no
  runtime call at all in the common case, where the daemon's Delete already removed it); unmount everything
  under ``<bundle>/rootfs``; read ``<bundle>/init.pid`` (missing or unreadable: pid 0); print
  ``containerd.task.v2.DeleteResponse{pid, exit_status=137, exited_at=now}`` to stdout; exit 0.
- Every cleanup failure is a warning on stderr (containerd logs it) and never changes the exit status, so the
  action is idempotent and succeeds when nothing is left. stdout carries only the protobuf bytes.
- The whole action must finish well inside containerd's 5 s cleanup timeout: the runtime call is bounded by
  RUNTIME_TIMEOUT and unmounting detaches lazily after brief EBUSY retries.
- bundle = ``-bundle`` if given, else the cwd (containerd sets both to the bundle).

``<bundle>/pyshim.json`` (written by the daemon at Create; read here) tells how to reach the runtime::

    {"runtime": {"binary": "/usr/sbin/runc",              # absolute path, or a name looked up in $PATH
                 "root": "/run/containerd/runc/<ns>",      # the runtime's --root (already per namespace)
                 "global_args": ["--systemd-cgroup"],       # optional; placed after --root <root>
                 "state_path": "/run/containerd/runc/<ns>/<id>"}}   # optional, see below

The runtime is called as ``<binary> --root <root> <global_args...> delete --force <id>`` when
``state_path`` exists. ``state_path`` defaults to ``<root>/<id>`` (runc and crun keep one directory per
container there); a runtime whose state has another shape sets it explicitly, or sets it to null to make
delete always call the runtime. Without pyshim.json: binary ``runc``, root ``/run/containerd/runc/<ns>``.
A pyshim.json that exists but cannot be parsed is a warning, and the defaults are used.
"""

from __future__ import annotations

import os
import time
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, nor collections (~1-3 ms CPU)
if TYPE_CHECKING:
    from collections.abc import Callable

from ttrpc import wire
from shim.flags import ShimFlags
from shim.stdlib_lite import loads_json
from shim.record import Record
from shim.linux.unmount import unmount_all

CONFIG_FILE = "pyshim.json"
DEFAULT_BINARY = "runc"
DEFAULT_ROOT = "/run/containerd/runc"
RUNTIME_TIMEOUT = 3.0
SIGKILL_STATUS = 128 + 9


class RuntimeConfig(Record):
    binary: str
    root: str
    global_args: tuple[str, ...] = ()
    state_path: str | None = None  # None: unknown shape, always call the runtime

    def delete_argv(self, container_id: str) -> list[str]:
        return [self.binary, "--root", self.root, *self.global_args, "delete", "--force", container_id]


def default_config(namespace: str, container_id: str) -> RuntimeConfig:
    root = os.path.join(DEFAULT_ROOT, namespace)
    return RuntimeConfig(DEFAULT_BINARY, root, (), os.path.join(root, container_id))


def read_runtime_config(bundle: str, namespace: str, container_id: str) -> RuntimeConfig:
    """The runtime section of ``<bundle>/pyshim.json``; the defaults when the file is absent.

    Raises ValueError/OSError for a file that exists but is unusable (the caller warns and uses defaults).
    """
    try:
        with open(os.path.join(bundle, CONFIG_FILE), "rb") as f:
            doc = loads_json(f.read())
    except FileNotFoundError:
        return default_config(namespace, container_id)
    runtime = doc.get("runtime") if isinstance(doc, dict) else None
    if not isinstance(runtime, dict):
        raise ValueError(f"{CONFIG_FILE}: no \"runtime\" object")
    binary, root = runtime.get("binary"), runtime.get("root")
    args = runtime.get("global_args", [])
    if not isinstance(binary, str) or not binary or not isinstance(root, str) or not root:
        raise ValueError(f"{CONFIG_FILE}: runtime.binary and runtime.root must be non-empty strings")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError(f"{CONFIG_FILE}: runtime.global_args must be a list of strings")
    state = runtime.get("state_path", os.path.join(root, container_id))
    if state is not None and not isinstance(state, str):
        raise ValueError(f"{CONFIG_FILE}: runtime.state_path must be a string or null")
    return RuntimeConfig(binary, root, tuple(args), state)


def runtime_delete(config: RuntimeConfig, container_id: str, timeout: float = RUNTIME_TIMEOUT) -> str | None:
    """Run the runtime's ``delete --force``; return a warning, or None on success."""
    import subprocess  # only on this rare path: ~10 ms of imports

    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    argv = config.delete_argv(container_id)
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"{' '.join(argv)}: killed after {timeout:g} s"
    except OSError as exc:
        return f"{' '.join(argv)}: {exc}"
    if done.returncode != 0:
        output = done.stdout.decode(errors="replace").strip()
        return f"{' '.join(argv)}: exit status {done.returncode}: {output}"
    return None


def read_pid(path: str) -> int:
    """The pid in a runtime pid file; 0 if the file is missing or not a positive number."""
    try:
        with open(path, "rb") as f:
            pid = int(f.read().strip() or b"0")
    except (OSError, ValueError):
        return 0
    return pid if 0 < pid < (1 << 32) else 0


def delete_response(pid: int, exit_status: int, exited_at_ns: int) -> bytes:
    """containerd.task.v2.DeleteResponse {1 pid uint32, 2 exit_status uint32, 3 exited_at Timestamp}."""
    return (wire.uint_field(1, pid) + wire.uint_field(2, exit_status)
            + wire.message_field(3, wire.timestamp_ns(exited_at_ns)))


def cleanup(flags: ShimFlags, bundle: str, warn: Callable[[str], None]) -> int:
    """Release what belongs to container ``flags.id``; return the init pid. Failures go to ``warn``."""
    try:
        config = read_runtime_config(bundle, flags.namespace, flags.id)
    except (OSError, ValueError) as exc:
        warn(f"cannot use {CONFIG_FILE}, assuming runc defaults: {exc}")
        config = default_config(flags.namespace, flags.id)
    if config.state_path is None or os.path.exists(config.state_path):
        problem = runtime_delete(config, flags.id)
        if problem:
            warn(f"failed to remove runtime container: {problem}")
    elif flags.debug:
        warn(f"no runtime state at {config.state_path}, runtime delete skipped")
    try:
        unmount_all(os.path.join(bundle, "rootfs"))
    except (OSError, ValueError) as exc:
        warn(f"failed to cleanup rootfs mount: {exc}")
    return read_pid(os.path.join(bundle, "init.pid"))


def run(flags: ShimFlags, warn: Callable[[str], None]) -> bytes:
    """The ``delete`` action as containerd runs it: return the DeleteResponse to print.

    Raises ValueError only for an unusable ``-id``; cleanup problems go to ``warn``.
    """
    if not flags.id or "/" in flags.id or flags.id in (".", ".."):
        raise ValueError(f"invalid container id {flags.id!r}")
    bundle = flags.bundle or os.getcwd()
    pid = cleanup(flags, bundle, warn)
    return delete_response(pid, SIGKILL_STATUS, time.time_ns())
