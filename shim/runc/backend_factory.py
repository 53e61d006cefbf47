"""Which backend a container gets, made at its Create from pyshim's configuration, and what ``delete`` will need.

Rules:
- ``make_backend``: configuration from files, runtime options and the io.pyshim.backend annotation
  (shim/runc/config.py), the backend built through runtime/registry (entry points, group ``pyshim.runtimes``).
  Every failure is a ConfigError naming its source, so a bad configuration fails only that Create. The backend
  comes wrapped in its call deadlines (shim/runc/deadlines.py, config ``call_timeouts``).
- ``cleanup_info``: the runtime section of pyshim.json (shim/runc/cleanup.py) for a backend driven through an
  OCI runtime CLI, None for any other backend.
"""
from __future__ import annotations

import os

from runtime import registry
from runtime.errors import InvalidOptions
from runtime.oci_argv import global_argv
from runtime.oci_config import OciConfig
from shim.bundle import read_annotations
from shim.runc import config
from shim.runc.deadlines import Deadlined
from shim.runc.options import RuntimeOptions

__all__ = ["cleanup_info", "make_backend"]


def cleanup_info(backend, bundle: str) -> dict | None:
    """What ``delete`` needs to force-delete a container of this backend (see shim/runc/cleanup.py)."""
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
        backend = registry.make_backend(chosen.entry_point, chosen.options, launcher, namespace)
    except (registry.BackendLoadError, InvalidOptions) as e:
        where = f"table [backends.{chosen.name}]" if chosen.name in cfg.backends else f"backend {chosen.name!r}"
        raise config.ConfigError(f"pyshim config {cfg.source}: {where}: {e}") from None
    return Deadlined(backend, cfg.call_timeouts, cfg.source)
