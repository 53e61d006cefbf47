"""What the fork server imports and warms before it forks anything: every module a daemon will need.

Rules:
- Every module of our packages (shim, ttrpc, runtime, protos) is imported, found by walking their
  directories (namespace subpackages like shim/task included), so modules added later are preloaded without
  a list to maintain; ``__main__`` modules and the
  fork server itself are skipped. A module that fails to import is reported, not fatal (a daemon importing it
  would fail the same way, in the daemon, where containerd sees it).
- LAZY names the other modules daemons import only inside functions (measured by running containers through
  forked daemons with PYSHIM_FORKSERVER_TRACE set in containerd's environment, see forkserver_child.py):
  preloading them keeps them shared instead of loaded again in every daemon.
- ``warm`` does the one-time work a daemon's first requests would otherwise pay in every process: the
  entry-point scan of runtime/registry.py (importlib.metadata caches the distributions it read).
- No threads may exist afterwards (the server forks); ``preload`` checks it.
- ``Watch`` decides whether the installed code changed since the preload: (mtime, size, inode) of our packages'
  files and the sys.path directories (a pip install or uninstall changes those) for the quick check, plus
  every other loaded module file and the interpreter for the full one. A file that vanished is a change.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

PACKAGES = ("shim", "ttrpc", "runtime", "protos")
SKIP = frozenset({"shim.__main__", "shim.forkserver.__main__"})
LAZY = (
    # importlib.metadata reads a distribution's METADATA with these when runtime/registry.py names the
    # entry point it loads (each daemon's first Create). Found with PYSHIM_FORKSERVER_TRACE over
    # run/exec/ps/pause/resume/metrics/kill/delete; everything else a daemon imports is already loaded.
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


def roots() -> list[str]:
    """The directories of our packages."""
    from shim.forkserver.protocol import package_root

    return [os.path.join(package_root(), p) for p in PACKAGES]


def modules() -> list[str]:
    """Dotted names of every module of our packages."""
    base = os.path.dirname(roots()[0])
    names = []
    for root in roots():
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__" and not d.startswith(".")
                                and any(n.endswith(".py") for n in os.listdir(os.path.join(directory, d))))
            package = os.path.relpath(directory, base).replace(os.sep, ".")
            for name in sorted(files):
                if name.endswith(".py"):
                    module = package if name == "__init__.py" else f"{package}.{name[:-3]}"
                    if module not in SKIP:
                        names.append(module)
    return names


def warm() -> None:
    from runtime import registry

    registry.available()


def preload() -> list[str]:
    """Import and warm everything; return what failed (``module: error``)."""
    failed = []
    for name in [*modules(), *LAZY]:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported by the server, the daemon would fail alike
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    try:
        warm()
    except Exception as exc:  # noqa: BLE001
        failed.append(f"warm: {type(exc).__name__}: {exc}")
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        raise RuntimeError("preloading started threads; a process with threads must not fork")
    return failed
