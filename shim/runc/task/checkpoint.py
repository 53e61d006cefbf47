"""Checkpoint and restore in domain terms: which CRIU options the backend gets, and where CRIU's files go.

Rules (containerd ``pkg/process/init.go`` ``checkpoint``, ``createCheckpointedState`` at v1.6.20):
- `CheckpointRequest` is containerd's CheckpointTaskRequest with its `containerd.runc.v1.CheckpointOptions`
  already decoded by shim/runc/service.py; nothing here knows protobuf.
- Image directory: the request's `path`. containerd always fills it: with the options' image_path when it
  honours that (1.6/1.7 only for runtimes named io.containerd.runc.*, 2.x for every runtime), else with a
  temporary directory it archives into its content store afterwards. When the options name an image_path
  that is not `path` (pyshim under 1.6/1.7), the images are also placed there (hard links, copies across file
  systems), so the client's image_path is honoured too. No `path` at all (a raw ttrpc client): image_path.
- Work directory: the options' work_path, kept; else <bundle>/work/criu-work, removed afterwards (upstream).
  Restore: the runtime options' criu_work_path, else <bundle>/work (upstream's CriuWorkPath default).
- Every path must be absolute: a relative one is InvalidArgument (runc would resolve it against our cwd).
- Plain blocking file work (rmtree, linking the images) runs in a worker thread; it is local and bounded.
"""
from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass

import trio

from runtime import base as rt
from shim.errors import InvalidArgument

CGROUPS_MODES = ("", "soft", "full", "strict")


@dataclass(frozen=True)
class CheckpointRequest:
    path: str = ""                       # CheckpointTaskRequest.path: where containerd reads the images
    exit: bool = False                   # stop the container afterwards (no --leave-running)
    open_tcp: bool = False
    external_unix_sockets: bool = False
    terminal: bool = False
    file_locks: bool = False
    empty_namespaces: tuple[str, ...] = ()
    cgroups_mode: str = ""
    image_path: str = ""                 # the client's wish (options.image_path)
    work_path: str = ""


@dataclass(frozen=True)
class CheckpointPlan:
    spec: rt.CheckpointSpec
    remove_work: str | None              # our default work dir, removed after the call
    mirror_to: str | None                # the client's image_path when it is not the image dir


def _absolute(what: str, path: str) -> str:
    if path and not os.path.isabs(path):
        raise InvalidArgument(f"checkpoint {what} must be an absolute path, got {path!r}")
    return path


def plan_checkpoint(req: CheckpointRequest, bundle: str) -> CheckpointPlan:
    path = _absolute("path", req.path)
    image_path = _absolute("image_path", req.image_path)
    work = _absolute("work_path", req.work_path)
    if req.cgroups_mode not in CGROUPS_MODES:
        raise InvalidArgument(f"checkpoint cgroups_mode {req.cgroups_mode!r}: use soft, full or strict")
    images = path or image_path
    if not images:
        raise InvalidArgument("checkpoint needs an image directory: the request has no path and no image_path")
    mirror = image_path if image_path and os.path.normpath(image_path) != os.path.normpath(images) else None
    remove = None
    if not work:
        work = remove = os.path.join(bundle, "work", "criu-work")
    criu = rt.CriuOptions(
        image_path=images, work_path=work, tcp_established=req.open_tcp,
        ext_unix_sk=req.external_unix_sockets, shell_job=req.terminal, file_locks=req.file_locks,
        manage_cgroups_mode=req.cgroups_mode, empty_namespaces=tuple(req.empty_namespaces),
    )
    return CheckpointPlan(rt.CheckpointSpec(criu, leave_running=not req.exit), remove, mirror)


def restore_criu(image_path: str, parent_path: str, bundle: str, work_path: str = "") -> rt.CriuOptions:
    """CRIU options for restoring the checkpoint in `image_path` (CreateTaskRequest.checkpoint)."""
    _absolute("image path", image_path)
    _absolute("parent path", parent_path)
    work = _absolute("work path (criu_work_path)", work_path) or os.path.join(bundle, "work")
    return rt.CriuOptions(image_path=image_path, work_path=work, parent_path=parent_path)


async def remove_work(path: str | None) -> None:
    if path:
        await trio.to_thread.run_sync(shutil.rmtree, path, True)


async def mirror_images(src: str, dst: str) -> None:
    """Place every file of the image directory `src` under `dst` too (link, or copy across file systems)."""
    await trio.to_thread.run_sync(_mirror, src, dst)


def _mirror(src: str, dst: str) -> None:
    def link_or_copy(s: str, d: str) -> None:
        try:
            os.unlink(d)
        except FileNotFoundError:
            pass
        try:
            os.link(s, d)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copy2(s, d)

    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy, dirs_exist_ok=True)
