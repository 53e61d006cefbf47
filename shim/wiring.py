"""Builds the daemon's parts from its flags and environment: the only place that knows them all.

Rules: construction only, no I/O beyond reading the environment; the daemon (shim/daemon.py) starts
the parts in its root nursery. Backends are made per container from its runtime options, through
runtime/registry (entry points, group `pyshim.runtimes`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import trio

from runtime import registry
from runtime.oci_argv import global_argv
from runtime.oci_config import OciConfig
from shim.io import ProcessIO
from shim.events import Publisher, TaskEvents
from shim.flags import ShimFlags
from shim.options import RuntimeOptions
from shim.reaper import Reaper, ReaperLauncher
from shim.service import TaskService
from shim.task.tasks import Tasks
from ttrpc.server import Server

DEFAULT_BACKEND = "runc"


@dataclass
class Parts:
    reaper: Reaper
    publisher: Publisher
    tasks: Tasks
    server: Server
    shutdown: trio.Event


def cleanup_info(backend, bundle: str) -> dict | None:
    """What `delete` needs to force-delete a container of this backend (see shim/delete.py)."""
    cfg = getattr(backend, "cfg", None)
    if not isinstance(cfg, OciConfig):
        return None
    argv = global_argv(cfg, bundle)
    return {"binary": cfg.binary, "root": cfg.root, "global_args": argv[3:],
            "state_path": os.path.join(cfg.root, os.path.basename(bundle))}


def build(flags: ShimFlags) -> Parts:
    reaper = Reaper()
    launcher = ReaperLauncher(reaper)
    namespace = flags.namespace
    publisher = Publisher(os.environ.get("TTRPC_ADDRESS", ""), namespace)

    def backend_factory(opts: RuntimeOptions | None, bundle: str):
        opts = opts or RuntimeOptions()
        config = {
            "binary_name": opts.binary_name,
            "root": opts.root,
            "systemd_cgroup": opts.systemd_cgroup,
            "criu_path": opts.criu_path,
        }
        backend = registry.make_backend(DEFAULT_BACKEND, {k: v for k, v in config.items() if v},
                                        launcher, namespace)
        return backend, {"runtime": cleanup_info(backend, bundle)}

    async def io_factory(stdio, proc, container):
        opts = container.options or RuntimeOptions()
        return await ProcessIO.prepare(
            stdio,
            container_id=container.id, namespace=namespace, io_uid=opts.io_uid, io_gid=opts.io_gid,
            spawner=launcher,
        )

    tasks = Tasks(namespace=namespace, reaper=reaper, events=TaskEvents(publisher),
                  backend_factory=backend_factory, io_factory=io_factory)
    shutdown = trio.Event()
    server = Server()
    TaskService(tasks, shutdown).register(server)
    return Parts(reaper, publisher, tasks, server, shutdown)
