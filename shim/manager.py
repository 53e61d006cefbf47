"""The Manager: what a shim built on this library supplies, and the requests the library hands it.

A shim is a ``Manager`` subclass plus a console script that calls ``shim.run(manager)``. The library does the
rest of containerd's shim v2 contract: the command line, ``-v`` and ``-info``, the ``start`` handshake of every
containerd version (socket address, bind-or-reuse, spawning the daemon or asking the fork server for one),
the ``delete`` command's output, and the daemon (subreaper, logging, reaper, event publisher, ttrpc server).
The Manager answers the questions only a shim can (containerd's ``pkg/shim`` ``Manager`` interface at
v2.1.4 has the same shape: Name, Start, Stop, Info, with the task service registered beside it).

Rules:
- ``start``, ``delete``, ``-v`` and ``-info`` run while containerd waits, so the module that defines a Manager
  subclass, and every hook but ``task_service``, must import only the standard library (and this library's
  stdlib-only modules). ``task_service`` runs in the daemon and imports what it needs inside the method.
- A hook raises to fail the command; the message is what containerd shows (prefixed with the runtime name).
- Standard library only, and none of the modules that load enum/re/typing (see stdlib_lite.py); the requests
  are ``Record`` values for the same reason.
"""

from __future__ import annotations

import os

from shim.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable

    from shim.daemon import Daemon
    from shim.service import TaskService
    from shim.sharing import Sharing

__all__ = ["CleanupRequest", "Manager", "StartRequest"]


class StartRequest(Record):
    """What ``start`` knows about the container whose task containerd is about to create."""

    id: str
    namespace: str
    address: str          # containerd's gRPC address (``-address``)
    bundle: str           # the bundle directory (start's cwd)
    options: tuple[bytes, ...] = ()  # serialized google.protobuf.Any runtime options, as containerd sent them
    debug: bool = False

    def annotations(self) -> dict[str, object]:
        """The ``annotations`` object of the bundle's config.json ({} when there are none).

        Raises OSError or ValueError for a missing or malformed config.json."""
        from shim.bundle import read_annotations

        return read_annotations(self.bundle)


class CleanupRequest(Record):
    """What the ``delete`` command knows: containerd runs it after a task ended or its shim died."""

    id: str
    namespace: str
    bundle: str
    warn: Callable[[str], None]  # report a problem (stderr: containerd logs it); the command still succeeds
    debug: bool = False


class Manager:
    """Base of a shim's manager. Override ``name`` and ``task_service``; the other hooks have defaults."""

    name = ""          # the runtime name containerd knows the shim by, e.g. "io.containerd.pyshim.v1"
    distribution = ""  # the Python distribution whose version ``-v`` and ``-info`` report
    forkserver = ""    # "module:attribute" naming this manager, for the fork server; "" = spawn every daemon
    preload: tuple[str, ...] = ()  # packages the fork server imports besides the library's own

    def group(self, request: StartRequest) -> str:
        """The grouping id: containers with the same id (in one namespace and containerd) share a daemon.

        Default: the container id, i.e. a daemon per container."""
        return request.id

    def daemon_cgroup(self, request: StartRequest) -> str:
        """The cgroup a newly started daemon moves into ("" to stay in containerd's). Default: ""."""
        return ""

    def sharing(self, request: StartRequest) -> Sharing | None:
        """Share daemons between unrelated containers (shim/sharing.py): the key, the tasks per daemon and the
        idle time; None to group by ``group`` only. Default: None."""
        return None

    def use_forkserver(self, request: StartRequest) -> bool:
        """Ask the fork server (``forkserver``) for this container's new daemon. Default: True."""
        return True

    def cleanup(self, request: CleanupRequest) -> int:
        """Release whatever container ``request.id`` still holds after its task or daemon is gone.

        Must be idempotent and finish well inside containerd's 5 s; report problems with ``request.warn``.
        Returns the container's init pid if known, else 0 (the delete response carries it). Default: 0."""
        return 0

    def features(self, options: bytes) -> bytes | None:
        """``-info``: the OCI runtime features JSON for the runtime options Any ``options``, or None.

        containerd 2.x refuses tasks with id-mapped mounts unless the features declare them. Default: None."""
        return None

    def warm_up(self) -> None:
        """One-time work the fork server does before it forks daemons, so none of them pays for it. Default:
        nothing (every module of ``preload`` is imported anyway)."""

    def task_service(self, daemon: Daemon) -> TaskService:
        """Build the task service of a new daemon (called once, inside its trio run, before serving)."""
        raise NotImplementedError(f"{type(self).__name__} must implement task_service")

    def source_root(self) -> str:
        """The directory holding this manager's top-level package (a git checkout's root when run from one)."""
        import sys

        top = type(self).__module__.split(".", 1)[0]
        module = sys.modules.get(top)
        path = getattr(module, "__file__", None) or ""
        return os.path.dirname(os.path.dirname(os.path.abspath(path))) if path else ""
