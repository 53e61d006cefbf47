"""What the fork server imports and warms before it forks anything: every module a daemon will need.

Rules:
- Every module of the library's packages (shim, ttrpc, protos) and of the manager's (``Manager.preload``) is
  imported, found by walking their directories, so modules added later are preloaded without a list to
  maintain. ``__main__`` modules are skipped, and so is the library's own user shim.runc unless its manager
  names it. A module that fails to import is reported, not fatal (a daemon importing it would fail the same way,
  in the daemon, where containerd sees it).
- LAZY names the standard library modules daemons import only inside functions (found by running containers
  through forked daemons with PYSHIM_FORKSERVER_TRACE set in containerd's environment, see child.py):
  preloading them keeps them shared instead of loaded again in every daemon.
- ``Manager.warm_up`` then does the one-time work a daemon's first requests would otherwise pay in every process.
- No threads may exist afterwards (the server forks); ``preload`` checks it.
- ``Watch`` decides whether the installed code changed since the preload: (mtime, size, inode) of the preloaded
  packages' files and the sys.path directories (a pip install or uninstall changes those) for the quick check,
  plus every other loaded module file and the interpreter for the full one. A file that vanished is a change.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

LIBRARY = ("shim", "ttrpc", "protos")
EXCLUDE = frozenset({"shim.runc"})  # the library's own user, preloaded only by its manager (Manager.preload)
LAZY = (
    # importlib.metadata reads a distribution's METADATA with these when an entry point is described (found
    # with PYSHIM_FORKSERVER_TRACE over run/exec/ps/pause/resume/metrics/kill/delete).
    "email.parser", "email.feedparser",
)


def _stat_all(paths: list[str]) -> list[tuple[int, int, int] | None]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return out


class Watch:
    """What "the installed code changed" means: ``quick`` paths per request, ``full`` on the timer."""

    def __init__(self, roots: list[str]) -> None:
        files = sorted({m.__file__ for m in list(sys.modules.values())
                        if isinstance(getattr(m, "__file__", None), str)})
        ours = [f for f in files if any(f.startswith(r + os.sep) for r in roots)]
        dirs = [d for d in sys.path if d and os.path.isdir(d)]
        self.quick = ours + dirs
        self.full = self.quick + [f for f in files if f not in ours] + [os.path.realpath(sys.executable)]
        self._quick_sig = _stat_all(self.quick)
        self._full_sig = _stat_all(self.full)

    def changed(self, full: bool = False) -> bool:
        if full:
            return _stat_all(self.full) != self._full_sig
        return _stat_all(self.quick) != self._quick_sig


def packages(manager) -> tuple[str, ...]:
    """The library's packages and the manager's (``Manager.preload``), as dotted names."""
    return (*LIBRARY, *manager.preload)


def _directory(package: str) -> str:
    from shim.forkserver.protocol import package_root

    top = package.split(".", 1)[0]
    if top in ("shim", "ttrpc", "protos"):
        base = package_root()
    else:
        base = os.path.dirname(os.path.dirname(importlib.import_module(top).__file__))
    return os.path.join(base, *package.split("."))


def roots(names: tuple[str, ...]) -> list[str]:
    """The directories of ``names``."""
    return [_directory(p) for p in names]


def modules(names: tuple[str, ...]) -> list[str]:
    """Dotted names of every module of the packages ``names`` (a package listed in EXCLUDE only if named)."""
    found = []
    for package, root in zip(names, roots(names)):
        for directory, subdirs, files in os.walk(root):
            relative = os.path.relpath(directory, root)
            prefix = package if relative == "." else f"{package}.{relative.replace(os.sep, '.')}"
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__" and not d.startswith(".")
                                and f"{prefix}.{d}" not in EXCLUDE
                                and any(n.endswith(".py") for n in os.listdir(os.path.join(directory, d))))
            for name in sorted(files):
                if name.endswith(".py"):
                    module = prefix if name == "__init__.py" else f"{prefix}.{name[:-3]}"
                    if not module.endswith(".__main__"):
                        found.append(module)
    return found


def preload(manager, names: tuple[str, ...]) -> list[str]:
    """Import every module of ``names`` and LAZY, then the manager's own warm-up; return what failed."""
    failed = []
    for name in [*modules(names), *LAZY]:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported by the server, the daemon would fail alike
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    try:
        manager.warm_up()
    except Exception as exc:  # noqa: BLE001
        failed.append(f"warm-up: {type(exc).__name__}: {exc}")
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        raise RuntimeError("preloading started threads; a process with threads must not fork")
    return failed
