"""The ``delete`` command: clean up after container ``-id`` whose task ended or whose shim died; print a
DeleteResponse.

Rules (containerd ``runtime/v2/shim.go`` ``cleanupAfterDeadShim`` and ``pkg/shim/shim.go`` at v1.6.20):
- containerd runs it after every task's connection closes (also in the normal path, after Delete and Shutdown,
  while a daemon may still serve the other tasks of its group) and after a shim died, with a 5 s timeout. So it
  touches only container ``-id``: never the daemon, never other containers.
- What to release is the manager's business (``Manager.cleanup``); it reports problems through ``warn``, which
  go to stderr (containerd logs them) and never change the exit status: the command is idempotent and succeeds
  when nothing is left. stdout carries only the protobuf bytes:
  ``containerd.task.v2.DeleteResponse{pid, exit_status=137, exited_at=now}`` (what upstream reports for a task
  whose shim is gone: killed).
- The daemon's socket file (``./address``) is removed when nothing listens on it any more: a daemon that was
  SIGKILLed never unlinked it. A live daemon (of a group, or shared) keeps its socket.
- ``-namespace`` and ``-id`` must be containerd identifiers (shim/ids.py), checked before anything uses them
  (the runtime's root and state directory are built from them).
- bundle = ``-bundle`` if given, else the cwd (containerd sets both to the bundle).
- Standard library only (critical path).
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, nor collections
if TYPE_CHECKING:
    from collections.abc import Callable

    from shim.manager import Manager

from shim import ids
from shim.flags import ShimFlags
from shim.manager import CleanupRequest
from ttrpc import wire

__all__ = ["delete_response", "run"]

SIGKILL_STATUS = 128 + 9


def delete_response(pid: int, exit_status: int, exited_at_ns: int) -> bytes:
    """containerd.task.v2.DeleteResponse {1 pid uint32, 2 exit_status uint32, 3 exited_at Timestamp}."""
    return (wire.uint_field(1, pid) + wire.uint_field(2, exit_status)
            + wire.message_field(3, wire.timestamp_ns(exited_at_ns)))


def run(manager: Manager, flags: ShimFlags, warn: Callable[[str], None]) -> bytes:
    """The ``delete`` command as containerd runs it: return the DeleteResponse to print.

    Raises ValueError only for an unusable ``-namespace`` or ``-id`` (shim/ids.py); cleanup problems go to
    ``warn``.
    """
    why = ids.problem(flags.namespace, "namespace") or ids.problem(flags.id, "container id")
    if why:
        raise ValueError(why)
    request = CleanupRequest(id=flags.id, namespace=flags.namespace, bundle=flags.bundle or os.getcwd(),
                             warn=warn, debug=flags.debug)
    pid = manager.cleanup(request)
    remove_dead_socket(request.bundle, warn)
    return delete_response(pid, SIGKILL_STATUS, time.time_ns())


def remove_dead_socket(bundle: str, warn: Callable[[str], None]) -> None:
    """Unlink the socket ``<bundle>/address`` names if it exists and nobody listens on it."""
    from shim import address
    from shim.bundle import read_address

    try:
        path = address.socket_path(read_address(bundle))
    except (OSError, ValueError):
        return  # no address file (start failed, or already cleaned), or not a socket path of ours
    if os.path.exists(path) and not address.is_alive(path):
        try:
            address.unlink(path)
        except OSError as exc:
            warn(f"failed to remove the dead shim socket {path}: {exc}")
