"""The Manager of ``io.containerd.pychroot.v1``: everything containerd's ``start`` and ``delete`` need.

Rules:
- ``start`` is the library's: one daemon per container (the default group), no fork server
  (``forkserver = ""``), so every start spawns a fresh daemon from this console script.
- ``delete`` runs ``cleanup`` after a daemon died or left a task behind. When the init of ``init.pid`` still
  lives in a mount namespace of its own, every process of the container (see bundle.py: rooted in its root,
  in the init's namespace) gets SIGKILL, with a short wait for them to go; then everything mounted at
  ``<bundle>/rootfs`` is unmounted. It answers the pid of ``init.pid`` (0 when there is none), reports
  problems with ``request.warn`` and never raises. Processes left by an init that died with its daemon are
  not found (their namespace is not known any more).
- Only the standard library at import time (``start``/``delete`` are the path containerd waits on); the daemon's
  modules (trio, protobuf) are imported inside ``task_service``.
"""

from __future__ import annotations

import os
import time

from shim import Manager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shim import CleanupRequest, Daemon, TaskService

__all__ = ["MANAGER", "ChrootManager"]

SIGKILL = 9  # the signal module would load enum on the delete path
CLEANUP_WAIT = 1.0  # seconds for killed processes to leave the rootfs before it is unmounted


class ChrootManager(Manager):
    """``io.containerd.pychroot.v1``: run the bundle's process chrooted in new namespaces, no OCI runtime."""

    name = "io.containerd.pychroot.v1"
    distribution = "pyshim-example-chroot"
    forkserver = ""

    def cleanup(self, request: CleanupRequest) -> int:
        from chrootshim import bundle

        pid = bundle.read_pid(request.bundle)
        try:
            root = bundle.root_dir(request.bundle, bundle.load_config(request.bundle))
        except (OSError, ValueError) as exc:
            request.warn(f"cannot find the container's root, no process killed: {exc}")
            root = ""
        mntns = bundle.mount_namespace(pid) if pid else None
        if root and mntns is not None and mntns != bundle.mount_namespace("self"):
            try:
                deadline = time.monotonic() + CLEANUP_WAIT
                while bundle.signal_all(root, mntns, SIGKILL) and time.monotonic() < deadline:
                    time.sleep(0.02)
            except (OSError, ValueError) as exc:
                request.warn(f"failed to kill the container's processes: {exc}")
        from shim.linux.unmount import unmount_all

        try:
            unmount_all(os.path.join(request.bundle, "rootfs"))
        except (OSError, ValueError) as exc:
            request.warn(f"failed to unmount the rootfs: {exc}")
        return pid

    def task_service(self, daemon: Daemon) -> TaskService:
        from chrootshim.service import ChrootTaskService

        return ChrootTaskService(daemon)


MANAGER = ChrootManager()
