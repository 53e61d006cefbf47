"""Builds the daemon's parts from its flags and environment: the only place that knows them all.

Rules: construction only, no I/O beyond reading the environment; the daemon (shim/daemon.py) starts
the parts in its root nursery. Backends are made per container (at Create) from pyshim's configuration
(shim/runc/config.py: files, runtime options, the io.pyshim.backend annotation), through runtime/registry (entry
points, group `pyshim.runtimes`); every failure there is a ConfigError naming its source.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import trio

from runtime import registry
from runtime.errors import InvalidOptions
from runtime.oci_argv import global_argv
from runtime.oci_config import OciConfig
from shim.runc import config
from shim.address import read_annotations
from shim.io import ProcessIO
from shim.events import Publisher, TaskEvents
from shim.flags import ShimFlags
from shim.runc.options import RuntimeOptions
from shim.reaper import Reaper, ReaperLauncher
from shim.runc.service import TaskService
from shim.runc.task.tasks import Tasks
from ttrpc.server import Server

@dataclass
class Parts:
    reaper: Reaper
    publisher: Publisher
    tasks: Tasks
    server: Server
    shutdown: trio.Event


def cleanup_info(backend, bundle: str) -> dict | None:
    """What `delete` needs to force-delete a container of this backend (see shim/commands/delete.py)."""
    cfg = getattr(backend, "cfg", None)
    if not isinstance(cfg, OciConfig):
        return None
    argv = global_argv(cfg, bundle)
    return {"binary": cfg.binary, "root": cfg.root, "global_args": argv[3:],
            "state_path": os.path.join(cfg.root, os.path.basename(bundle)) if cfg.state_dir_per_id else None}


def make_backend(opts: RuntimeOptions, bundle: str, launcher, namespace: str, *, default_path: str | None = None):
    """The backend for the container in ``bundle``, as pyshim's configuration says (shim/runc/config.py)."""
    cfg = config.load(opts.config_path, opts.config_body, default_path=default_path)
    try:
        annotations = read_annotations(bundle)
    except (OSError, ValueError) as e:
        raise config.ConfigError(f"cannot read the annotations of {bundle}/config.json: {e}") from None
    runc_options = {"binary_name": opts.binary_name, "root": opts.root, "systemd_cgroup": opts.systemd_cgroup,
                    "criu_path": opts.criu_path}
    chosen = config.choose(cfg, annotations, runc_options)
    try:
        return registry.make_backend(chosen.entry_point, chosen.options, launcher, namespace)
    except (registry.BackendLoadError, InvalidOptions) as e:
        where = f"table [backends.{chosen.name}]" if chosen.name in cfg.backends else f"backend {chosen.name!r}"
        raise config.ConfigError(f"pyshim config {cfg.source}: {where}: {e}") from None


def build(flags: ShimFlags) -> Parts:
    reaper = Reaper()
    launcher = ReaperLauncher(reaper)
    namespace = flags.namespace
    publisher = Publisher(os.environ.get("TTRPC_ADDRESS", ""), namespace)

    def backend_factory(opts: RuntimeOptions | None, bundle: str):
        backend = make_backend(opts or RuntimeOptions(), bundle, launcher, namespace)
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
