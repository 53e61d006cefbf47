"""pyshim's shim library: containerd's shim v2 contract in Python on trio, for any shim to build on.

A shim is a ``Manager`` (shim/manager.py) whose ``task_service`` returns a ``TaskService`` (shim/service.py),
and a console script that calls ``run(manager)``. The library supplies the rest: the command line and ``start``,
``delete``, ``-info`` and ``-v`` for every containerd version, the daemon (subreaper, logging, the ``Reaper``,
the event ``Publisher`` and ``TaskEvents``, the ttrpc server), the fork server, process stdio (``shim.io``) and
mounts (``shim.linux``). pyshim's own runc-style shim in shim/runc/ is one user of it, examples/chroot-shim
another; docs/architecture.md draws who imports whom.

Importing this package imports nothing else: the names below load their module on first use, so a shim's
``start`` and ``delete`` stay on the standard library.
"""

__all__ = [
    "AlreadyExists",
    "CleanupRequest",
    "Daemon",
    "DeadlineExceeded",
    "Exit",
    "FailedPrecondition",
    "InvalidArgument",
    "Manager",
    "NotFound",
    "Publisher",
    "Reaper",
    "ReaperLauncher",
    "SpawnedChild",
    "StartRequest",
    "Subscription",
    "TaskEvents",
    "TaskService",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "run",
]

_WHERE = {
    "run": "shim.commands.run",
    "Manager": "shim.manager", "StartRequest": "shim.manager", "CleanupRequest": "shim.manager",
    "Daemon": "shim.daemon",
    "TaskService": "shim.service",
    "Reaper": "shim.reaper", "ReaperLauncher": "shim.reaper", "Subscription": "shim.reaper", "Exit": "shim.reaper",
    "SpawnedChild": "shim.reaper",
    "Publisher": "shim.events", "TaskEvents": "shim.events",
    **{name: "shim.errors" for name in ("AlreadyExists", "DeadlineExceeded", "FailedPrecondition",
                                         "InvalidArgument", "NotFound", "Unavailable", "Unimplemented", "Unknown")},
}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'shim' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
