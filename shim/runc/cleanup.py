"""pyshim's half of the ``delete`` command, and the bundle file that connects it to the daemon: ``pyshim.json``.

Rules:
- The daemon writes ``<bundle>/pyshim.json`` at Create (``write_state``, atomically, mode 0600 whatever the
  umask: ``delete`` runs the binary it names as root); ``cleanup`` reads it. It tells how to reach the
  container's OCI runtime::

    {"runtime": {"binary": "/usr/sbin/runc",              # absolute path, or a name looked up in $PATH
                 "root": "/run/containerd/runc/<ns>",      # the runtime's --root (already per namespace)
                 "global_args": ["--systemd-cgroup"],       # optional; placed after --root <root>
                 "state_path": "/run/containerd/runc/<ns>/<id>"}}   # optional, see below

  A backend that is not an OCI CLI writes ``{"runtime": null}``: there is no runtime to call.
- Steps of ``cleanup``: force-delete the container in the OCI runtime, but only if the runtime still has state
  for it (no runtime call at all in the common case, where the daemon's Delete already removed it); unmount
  everything under ``<bundle>/rootfs``; read ``<bundle>/init.pid`` (missing or unreadable: pid 0).
- Before that force-delete, runtime commands for the container that a dead daemon left running are killed with
  their process groups (``kill_orphaned_calls``): a daemon SIGKILLed during a runtime call cannot stop it, and the
  Go shim's runc dies with its shim (Pdeathsig). They are found by their command line, the runtime binary (or a
  script run by it: argv[0] or argv[1]) followed by ``--root <root>``, with the container id among the arguments,
  which is how the daemon runs every command (runtime/oci_argv.py).
- The runtime is called as ``<binary> --root <root> <global_args...> delete --force <id>`` when ``state_path``
  exists. ``state_path`` defaults to ``<root>/<id>`` (runc and crun keep one directory per container there); a
  runtime whose state has another shape sets it explicitly, or sets it to null to make cleanup always call the
  runtime. Without pyshim.json: binary ``runc``, root ``/run/containerd/runc/<ns>``. A pyshim.json that exists
  but cannot be parsed is a warning, and the defaults are used.
- The whole cleanup must finish well inside containerd's 5 s: the runtime call is bounded by RUNTIME_TIMEOUT and
  unmounting detaches lazily after brief EBUSY retries (shim/linux/unmount.py).
- Standard library only (critical path), except ``write_state`` (daemon side).
"""

from __future__ import annotations

import os

from shim.linux.unmount import unmount_all
from shim.record import Record
from shim.stdlib_lite import loads_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shim.manager import CleanupRequest

STATE_FILE = "pyshim.json"
DEFAULT_BINARY = "runc"
DEFAULT_ROOT = "/run/containerd/runc"
RUNTIME_TIMEOUT = 3.0


class RuntimeConfig(Record):
    binary: str
    root: str
    global_args: tuple[str, ...] = ()
    state_path: str | None = None  # None: unknown shape, always call the runtime

    def delete_argv(self, container_id: str) -> list[str]:
        return [self.binary, "--root", self.root, *self.global_args, "delete", "--force", container_id]


def write_state(bundle: str, runtime: dict | None) -> None:
    """Write ``<bundle>/pyshim.json`` (the daemon, at Create) atomically; ``runtime`` as the module rules say.
    A failed write (a full file system) leaves no pyshim.json and no temporary file, and raises OSError."""
    import json

    from shim.bundle import write_atomically

    write_atomically(os.path.join(bundle, STATE_FILE), json.dumps({"runtime": runtime}).encode(), 0o600)


def default_config(namespace: str, container_id: str) -> RuntimeConfig:
    root = os.path.join(DEFAULT_ROOT, namespace)
    return RuntimeConfig(DEFAULT_BINARY, root, (), os.path.join(root, container_id))


def read_runtime_config(bundle: str, namespace: str, container_id: str) -> RuntimeConfig | None:
    """The runtime section of ``<bundle>/pyshim.json``: the defaults when the file is absent, None when the
    backend has no runtime to call.

    Raises ValueError/OSError for a file that exists but is unusable (the caller warns and uses defaults).
    """
    try:
        with open(os.path.join(bundle, STATE_FILE), "rb") as f:
            doc = loads_json(f.read())
    except FileNotFoundError:
        return default_config(namespace, container_id)
    if not isinstance(doc, dict) or "runtime" not in doc:
        raise ValueError(f"{STATE_FILE}: no \"runtime\" entry")
    runtime = doc["runtime"]
    if runtime is None:
        return None
    if not isinstance(runtime, dict):
        raise ValueError(f"{STATE_FILE}: \"runtime\" is neither an object nor null")
    binary, root = runtime.get("binary"), runtime.get("root")
    args = runtime.get("global_args", [])
    if not isinstance(binary, str) or not binary or not isinstance(root, str) or not root:
        raise ValueError(f"{STATE_FILE}: runtime.binary and runtime.root must be non-empty strings")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError(f"{STATE_FILE}: runtime.global_args must be a list of strings")
    state = runtime.get("state_path", os.path.join(root, container_id))
    if state is not None and not isinstance(state, str):
        raise ValueError(f"{STATE_FILE}: runtime.state_path must be a string or null")
    return RuntimeConfig(binary, root, tuple(args), state)


def runtime_delete(config: RuntimeConfig, container_id: str, timeout: float = RUNTIME_TIMEOUT) -> str | None:
    """Run the runtime's ``delete --force``; return a warning, or None on success.

    The command leads a process group of its own; past ``timeout`` the whole group is killed (while the command
    is not yet reaped, so the group id is still its pid) and the command reaped: a hung runtime leaves no
    helper behind, and none keeps the output pipe open."""
    import signal
    import subprocess  # only on this rare path

    from runtime.environ import for_runtime

    env = for_runtime(os.environ)
    argv = config.delete_argv(container_id)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, process_group=0)
    except OSError as exc:
        return f"{' '.join(argv)}: {exc}"
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"{' '.join(argv)}: killed after {timeout:g} s"
    if proc.returncode != 0:
        return f"{' '.join(argv)}: exit status {proc.returncode}: {output.decode(errors='replace').strip()}"
    return None


def is_call_for(argv: list[str], binary: str, root: str, container_id: str) -> bool:
    """Is ``argv`` a runtime command ``binary --root <root> ...`` naming ``container_id`` (module rules)?"""
    return any(argv[i:i + 3] == [binary, "--root", root] and container_id in argv[i + 3:] for i in (0, 1))


def kill_orphaned_calls(config: RuntimeConfig, container_id: str) -> list[int]:
    """SIGKILL every runtime command for ``container_id`` still running (with its process group, when it leads
    one, as the daemon's do); return their pids."""
    import shutil
    import signal

    binary = config.binary if os.sep in config.binary else (shutil.which(config.binary) or config.binary)
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="surrogateescape") for a in f.read().split(b"\0")[:-1]]
        except OSError:
            continue
        if not is_call_for(argv, binary, config.root, container_id):
            continue
        pid = int(entry)
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(pid)
    return killed


def read_pid(path: str) -> int:
    """The pid in a runtime pid file; 0 if the file is missing or not a positive number."""
    try:
        with open(path, "rb") as f:
            pid = int(f.read().strip() or b"0")
    except (OSError, ValueError):
        return 0
    return pid if 0 < pid < (1 << 32) else 0


def cleanup(request: CleanupRequest) -> int:
    """Release what belongs to container ``request.id``; return the init pid. Failures go to ``request.warn``."""
    warn = request.warn
    try:
        config = read_runtime_config(request.bundle, request.namespace, request.id)
    except (OSError, ValueError) as exc:
        warn(f"cannot use {STATE_FILE}, assuming runc defaults: {exc}")
        config = default_config(request.namespace, request.id)
    if config is not None:
        if config.state_path is None or os.path.exists(config.state_path):
            orphans = kill_orphaned_calls(config, request.id)
            if orphans:
                warn(f"killed runtime commands a dead shim left running: {orphans}")
            problem = runtime_delete(config, request.id)
            if problem:
                warn(f"failed to remove runtime container: {problem}")
        elif request.debug:
            warn(f"no runtime state at {config.state_path}, runtime delete skipped")
    try:
        unmount_all(os.path.join(request.bundle, "rootfs"))
    except (OSError, ValueError) as exc:
        warn(f"failed to cleanup rootfs mount: {exc}")
    return read_pid(os.path.join(request.bundle, "init.pid"))
