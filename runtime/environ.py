"""The environment an OCI runtime (and what it starts) gets: the shim's own, without what is only the shim's.

Rules:
- A runtime gets the shim's environment (containerd's, as containerd's Go shim hands it to runc through go-runc)
  minus SHIM_ONLY and every name starting with one of SHIM_ONLY_PREFIXES, each dropped for the reason below;
  configuration (``extra_env``) may add any variable back on top.
- Everything else is kept as containerd gave it (PATH, HOME, GOMAXPROCS, LANG, PYTHONPATH, ...): the runtime
  may need it, none of it names a socket or a secret of the shim's.
- Pure and standard-library-free (no imports at all): the ``delete`` command (critical path), ``-info`` and the
  OCI CLI driver use the same function.
"""

from __future__ import annotations

__all__ = ["SHIM_ONLY", "SHIM_ONLY_PREFIXES", "for_runtime"]

SHIM_ONLY = {
    # systemd's notify socket of containerd's unit: runc would send READY=1 through it (go-runc drops it too)
    "NOTIFY_SOCKET": "systemd notify socket",
    # containerd's own API sockets, given to the shim to publish events; a runtime (or runsc's sandbox, crun's
    # handlers, hooks it starts with its environment) never needs them
    "TTRPC_ADDRESS": "containerd's ttrpc socket",
    "GRPC_ADDRESS": "containerd's gRPC socket",
    # the rest of containerd's contract with the shim: the runtime gets the namespace through its --root
    "NAMESPACE": "shim contract",
    "MAX_SHIM_VERSION": "shim contract",
    "SCHED_CORE": "shim contract (the daemon creates the core-scheduling cookie itself)",
    # systemd socket activation of containerd: its listening sockets, not the runtime's (runc would hand
    # matching LISTEN_FDS on to the container)
    "LISTEN_PID": "containerd's activation sockets",
    "LISTEN_FDS": "containerd's activation sockets",
    "LISTEN_FDNAMES": "containerd's activation sockets",
}
SHIM_ONLY_PREFIXES = (
    "PYSHIM_",  # pyshim's own settings: configuration path, fork server directory, caches, tracing
)


def for_runtime(environ, extra=()) -> dict[str, str]:
    """``environ`` (a mapping) without the shim's own variables, then the ``extra`` (key, value) pairs."""
    env = {k: v for k, v in environ.items() if k not in SHIM_ONLY and not k.startswith(SHIM_ONLY_PREFIXES)}
    env.update(extra)
    return env
