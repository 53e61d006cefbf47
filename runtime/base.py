"""The backend interface: what the task service may ask of an OCI runtime, and how backends spawn commands.

Rules:
- Everything here is a type: frozen dataclasses in, frozen dataclasses out, never protobuf messages.
- This module imports only the standard library; `runtime/` never imports `shim/` or `ttrpc/`.
- A backend is built by a factory `(config: Mapping, launcher: Launcher, namespace: str) -> RuntimeBackend`
  (see runtime/registry.py) and serves every container of one shim in that namespace; each call names its container
  with a `ContainerRef` (the bundle is needed for `<bundle>/log.json`).
- Backends spawn processes only through the injected `Launcher` (implemented by shim/reaper.py), which subscribes
  to the reaper before forking so the exit status cannot be stolen.
- create/exec/restore return after the runtime command exited; the pid they return is read from the pid file the
  runtime wrote (it renames the file into place, so a complete file or none is seen).
- An operation outside `capabilities` raises `runtime.errors.Unsupported` without running anything, so the shim can
  answer UNIMPLEMENTED/FAILED_PRECONDITION honestly; it may also check `capabilities` first.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class Capability(enum.Enum):
    """Optional features; every backend must implement create, start, kill, delete and state."""

    EXEC = "exec"                      # extra processes in a running container
    TERMINAL = "terminal"              # --console-socket for create/exec/restore
    PAUSE = "pause"                    # pause and resume (freezer)
    UPDATE = "update"                  # resource update from a LinuxResources JSON
    CHECKPOINT = "checkpoint"
    RESTORE = "restore"
    PS = "ps"                          # list the container's pids
    KILL_ALL = "kill_all"              # kill --all: signal every process of the container
    NO_PIVOT = "no_pivot"              # create/restore without pivot_root
    NO_NEW_KEYRING = "no_new_keyring"  # create without a new session keyring


class Status(str, enum.Enum):
    """Container status as OCI runtimes report it (runc has no "pausing"; the shim synthesises that)."""

    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, text: str) -> Status:
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True)
class ContainerRef:
    """Names a container for every call after create: its id and its bundle directory (absolute)."""

    id: str
    bundle: str


@dataclass(frozen=True)
class StdioFds:
    """File descriptors the runtime command gets as its fds 0/1/2 (and hands to the container process).

    None means /dev/null for the container. In terminal mode (a console socket is given) the container uses the pty,
    and a None stdout/stderr instead captures the runtime's own output for error messages.
    The caller keeps ownership of the fds: the backend neither closes nor keeps them.
    """

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


@dataclass(frozen=True)
class CreateSpec:
    id: str
    bundle: str
    pid_file: str                      # absolute; conventionally <bundle>/init.pid
    stdio: StdioFds = StdioFds()
    console_socket: str | None = None  # absolute path of a listening AF_UNIX socket (terminal mode)
    no_pivot: bool = False
    no_new_keyring: bool = False

    @property
    def ref(self) -> ContainerRef:
        return ContainerRef(self.id, self.bundle)


@dataclass(frozen=True)
class ExecSpec:
    id: str                            # the container
    exec_id: str
    bundle: str
    process_json: bytes                # the OCI Process object, `terminal` already set by the caller
    pid_file: str                      # absolute; conventionally <bundle>/<exec_id>.pid
    stdio: StdioFds = StdioFds()
    console_socket: str | None = None

    @property
    def ref(self) -> ContainerRef:
        return ContainerRef(self.id, self.bundle)


@dataclass(frozen=True)
class CriuOptions:
    """CRIU settings shared by checkpoint and restore (names as in runc's flags)."""

    image_path: str
    work_path: str = ""
    parent_path: str = ""
    tcp_established: bool = False
    ext_unix_sk: bool = False
    shell_job: bool = False            # a container with a terminal
    file_locks: bool = False
    page_server: str = ""
    manage_cgroups_mode: str = ""      # "", "soft", "full" or "strict"
    empty_namespaces: tuple[str, ...] = ()
    lazy_pages: bool = False


@dataclass(frozen=True)
class CheckpointSpec:
    criu: CriuOptions
    leave_running: bool = False


@dataclass(frozen=True)
class RestoreSpec:
    id: str
    bundle: str
    pid_file: str
    criu: CriuOptions
    stdio: StdioFds = StdioFds()
    console_socket: str | None = None
    no_pivot: bool = False

    @property
    def ref(self) -> ContainerRef:
        return ContainerRef(self.id, self.bundle)


def _empty_annotations() -> Mapping[str, str]:
    return types.MappingProxyType({})


@dataclass(frozen=True)
class ContainerState:
    """The runtime's `state` output. pid is 0 when the runtime reports none (runc 0, runsc -1 when stopped)."""

    id: str
    pid: int
    status: Status
    bundle: str
    rootfs: str = ""
    created: str = ""                  # RFC 3339 text as the runtime printed it
    annotations: Mapping[str, str] = field(default_factory=_empty_annotations)


@dataclass(frozen=True)
class RunResult:
    pid: int
    status: int          # exit code, or 128+signal
    output: bytes        # combined stdout+stderr when captured, else b""


class Launcher(Protocol):
    """Runs one command to completion (the shim library's ``ReaperLauncher`` in shim/reaper.py implements it)."""

    async def run(self, argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None,
                  stdin: int | bytes | None = None,      # fd to dup as stdin, bytes to feed via a pipe, None -> /dev/null
                  stdout: int | None = None, stderr: int | None = None,   # fds for the child; None -> captured
                  pass_fds: Sequence[int] = ()) -> RunResult: ...


# Every method a backend must have, all coroutine functions; the registry checks this list.
REQUIRED_METHODS: tuple[str, ...] = (
    "create", "start", "exec", "kill", "delete", "state", "ps",
    "pause", "resume", "update", "checkpoint", "restore",
)


@runtime_checkable
class RuntimeBackend(Protocol):
    """One OCI runtime, as the task service needs it. Errors are runtime.errors.BackendError subclasses."""

    name: str
    capabilities: frozenset[Capability]

    async def create(self, spec: CreateSpec) -> int:
        """Create the container (its init waits for start); returns the init pid."""

    async def start(self, ref: ContainerRef) -> None:
        """Let the created init exec the user program (same pid)."""

    async def exec(self, spec: ExecSpec) -> int:
        """Start an extra process detached; returns its pid (Capability.EXEC)."""

    async def kill(self, ref: ContainerRef, signal: int, *, all: bool = False) -> None:
        """Signal the init (or every process with all=True, Capability.KILL_ALL).

        Raises ProcessFinished when the target already exited, ContainerNotFound when the container is gone."""

    async def delete(self, ref: ContainerRef, *, force: bool = False) -> None:
        """Destroy the container; raises ContainerNotFound if the runtime does not know it."""

    async def state(self, ref: ContainerRef) -> ContainerState: ...

    async def ps(self, ref: ContainerRef) -> tuple[int, ...]:
        """Pids of the container's processes (Capability.PS)."""

    async def pause(self, ref: ContainerRef) -> None: ...

    async def resume(self, ref: ContainerRef) -> None: ...

    async def update(self, ref: ContainerRef, resources_json: bytes) -> None:
        """Apply an OCI LinuxResources JSON document (Capability.UPDATE)."""

    async def checkpoint(self, ref: ContainerRef, spec: CheckpointSpec) -> None: ...

    async def restore(self, spec: RestoreSpec) -> int:
        """Create and start the container from a checkpoint image, detached; returns the init pid."""
