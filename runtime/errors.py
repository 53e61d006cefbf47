"""Domain errors raised by runtime backends, and the one place that turns runtime error text into them.

Rules:
- No ttrpc or shim imports: the shim maps these to its own errors (NotFound, AlreadyExists, ...) in one place.
- Every error carries `op` (the backend call: "create", "kill", ...) and a message a user can act on; messages
  keep upstream containerd's wording ("OCI runtime create failed: <runtime's words>") so they are recognisable.
- Classification is by case-insensitive regular expressions given as data (runtime/oci_config.py), because each
  runtime words "not found" and "already exited" differently; the defaults are containerd's (C16
  pkg/process/utils.go checkKillError).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# containerd's kill classification (``checkKillError`` in ``pkg/process/utils.go`` at v1.6.20), used by every
# built-in runtime config.
DEFAULT_FINISHED_PATTERNS: tuple[str, ...] = (
    r"os: process already finished",
    r"container not running",
    r"no such process",
    r"\bESRCH\b",
)
DEFAULT_NOT_FOUND_PATTERNS: tuple[str, ...] = (r"does not exist",)
DEFAULT_EXISTS_PATTERNS: tuple[str, ...] = (r"already exists",)

# Upstream wording of each operation's failure (C16 pkg/process/init.go, exec.go, init_state.go).
_PREFIX = {
    "create": "OCI runtime create failed",
    "start": "OCI runtime start failed",
    "exec": "OCI runtime exec failed",
    "restore": "OCI runtime restore failed",
    "pause": "OCI runtime pause failed",
    "resume": "OCI runtime resume failed",
    "kill": "unknown error after kill",
    "delete": "failed to delete task",
    "update": "OCI runtime update failed",
    "ps": "OCI runtime ps failed",
    "state": "OCI runtime state failed",
    "checkpoint": "OCI runtime checkpoint failed",
}


class BackendError(Exception):
    """Base of every error a backend raises; str() is the user-facing message."""

    def __init__(self, op: str, message: str) -> None:
        super().__init__(message)
        self.op = op
        self.message = message

    def __str__(self) -> str:
        return self.message


class ContainerNotFound(BackendError):
    """The runtime does not know the container (NotFound upstream: "no such container")."""


class ProcessFinished(BackendError):
    """A signal could not be delivered because the process already exited (NotFound upstream)."""


class AlreadyExists(BackendError):
    """create/restore with an id the runtime already has."""


class Unsupported(BackendError):
    """The backend lacks a capability or a flag; nothing was run."""

    def __init__(self, op: str, backend: str, feature: str) -> None:
        super().__init__(op, f"runtime {backend!r} does not support {feature}")
        self.backend = backend
        self.feature = feature


class InvalidOptions(BackendError):
    """The configuration handed to a backend factory is wrong (unknown key, wrong type)."""

    def __init__(self, backend: str, message: str) -> None:
        super().__init__("configure", f"runtime {backend!r}: {message}")


class CallTimedOut(BackendError):
    """The call ran past its deadline and was stopped (its runtime command killed, a plugin's call cancelled).

    Raised by the shim's deadline on each backend call (shim/runc/deadlines.py), never by a backend itself."""

    def __init__(self, op: str, container_id: str, seconds: float, setting: str) -> None:
        super().__init__(op, f"runtime call {op!r} for container {container_id} did not finish within {seconds:g} s "
                             f"and was stopped ({setting})")
        self.container_id = container_id
        self.seconds = seconds


class RuntimeFailed(BackendError):
    """The runtime command failed for any other reason. `status` is its exit status (-1 if it never ran)."""

    def __init__(self, op: str, message: str, status: int = -1) -> None:
        super().__init__(op, message)
        self.status = status


def failure_message(op: str, detail: str) -> str:
    """`"<upstream prefix>: <detail>"`, e.g. "OCI runtime create failed: exec: \\"x\\": not found"."""
    prefix = _PREFIX.get(op, f"OCI runtime {op} failed")
    return f"{prefix}: {detail}"


def _matches(patterns: Iterable[str], text: str) -> bool:
    return any(re.search(p, text, re.IGNORECASE) for p in patterns)


def classify(op: str, detail: str, status: int, *, output: str = "",
             finished: Iterable[str] = DEFAULT_FINISHED_PATTERNS,
             not_found: Iterable[str] = DEFAULT_NOT_FOUND_PATTERNS,
             exists: Iterable[str] = DEFAULT_EXISTS_PATTERNS) -> BackendError:
    """The error for a failed runtime call `op` whose runtime said `detail` (exit status `status`).

    kill: finished patterns -> ProcessFinished, then not-found -> ContainerNotFound (containerd's order).
    create/restore: exists patterns -> AlreadyExists (a not-found there is about files, not the container).
    everything else: not-found patterns -> ContainerNotFound.
    Patterns are matched against `detail` and the runtime's captured `output`; messages quote only `detail`.
    """
    text = f"{detail}\n{output}"
    if op == "kill" and _matches(finished, text):
        return ProcessFinished(op, "process already finished")
    if op in ("create", "restore"):
        if _matches(exists, text):
            return AlreadyExists(op, failure_message(op, detail))
    elif _matches(not_found, text):
        return ContainerNotFound(op, "no such container" if op == "kill" else failure_message(op, detail))
    return RuntimeFailed(op, failure_message(op, detail), status)
