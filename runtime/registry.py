"""Finding and building runtime backends through Python entry points (group `pyshim.runtimes`).

Rules:
- An entry point names a factory `(config: Mapping, launcher: Launcher, namespace: str) -> RuntimeBackend`; the
  built-ins (runtime/builtin.py) are registered the same way in pyproject.toml, with no special path.
- Only the requested entry point is loaded (others may be broken or slow to import; that is not our problem).
- What it returns is checked: `name` (str), `capabilities` (frozenset of Capability) and every method in
  base.REQUIRED_METHODS as a coroutine function. Any failure -- no such name, two distributions claiming it, import
  error, wrong signature, factory raising, interface violated -- raises BackendLoadError naming the distribution and
  the entry point, so a user knows which package to blame.
- Tests (and embedders) may pass `entry_points` instead of reading installed metadata.
- The installed entry points are scanned once per process and rescanned when a sys.path directory changes
  (the fork server warms the scan before it forks, so daemons share it).
- `make_backend` is the single way in; configuration files and their precedence are the caller's business.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from runtime.base import REQUIRED_METHODS, Capability, Launcher, RuntimeBackend

GROUP = "pyshim.runtimes"


class BackendLoadError(Exception):
    """A backend could not be found, imported or built, or violates the interface."""


def _describe(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    dist_name = getattr(dist, "name", None) or "an unknown distribution"
    return f"entry point {ep.name} = {ep.value} (group {GROUP}) from distribution {dist_name!r}"


_scan: tuple[tuple, list[Any]] | None = None


def _path_stamp() -> tuple:
    """What changes when a distribution is installed or removed: the sys.path directories' mtime and inode."""
    stamp = []
    for entry in sys.path:
        try:
            st = os.stat(entry or ".")
            stamp.append((entry, st.st_mtime_ns, st.st_ino))
        except OSError:
            stamp.append((entry, None, None))
    return tuple(stamp)


def _installed() -> list[Any]:
    """The group's entry points, scanned once per process while sys.path's directories stay unchanged (the scan
    reads every distribution's metadata, a cost per Create otherwise); a pip install or uninstall rescans."""
    global _scan
    stamp = _path_stamp()
    if _scan is None or _scan[0] != stamp:
        _scan = (stamp, list(metadata.entry_points(group=GROUP)))
    return _scan[1]


def available(entry_points: Iterable[Any] | None = None) -> list[str]:
    """Names of the registered backends, sorted."""
    eps = _installed() if entry_points is None else entry_points
    return sorted({ep.name for ep in eps if getattr(ep, "group", GROUP) == GROUP})


def _find(name: str, entry_points: Iterable[Any] | None) -> Any:
    eps = [ep for ep in (_installed() if entry_points is None else entry_points)
           if ep.name == name and getattr(ep, "group", GROUP) == GROUP]
    if not eps:
        known = ", ".join(available(entry_points)) or "none"
        raise BackendLoadError(f"no runtime backend named {name!r} in entry-point group {GROUP} (available: {known})")
    if len({ep.value for ep in eps}) > 1:
        claims = "; ".join(_describe(ep) for ep in eps)
        raise BackendLoadError(f"runtime backend {name!r} is registered more than once: {claims}")
    return eps[0]


def check_backend(obj: Any) -> list[str]:
    """The ways `obj` violates RuntimeBackend (empty if it conforms)."""
    problems = []
    if not isinstance(getattr(obj, "name", None), str):
        problems.append("attribute 'name' must be a str")
    caps = getattr(obj, "capabilities", None)
    if not isinstance(caps, frozenset) or not all(isinstance(c, Capability) for c in caps):
        problems.append("attribute 'capabilities' must be a frozenset of runtime.base.Capability")
    for method in REQUIRED_METHODS:
        fn = getattr(obj, method, None)
        if fn is None:
            problems.append(f"method {method!r} is missing")
        elif not inspect.iscoroutinefunction(fn):
            problems.append(f"method {method!r} must be a coroutine function (async def)")
    return problems


def make_backend(name: str, options: Mapping[str, Any], launcher: Launcher, namespace: str, *,
                 entry_points: Iterable[Any] | None = None) -> RuntimeBackend:
    """Load the entry point `name`, call its factory with (options, launcher, namespace) and check the result.

    The entry point is described (which parses its distribution's METADATA) only for an error message."""
    ep = _find(name, entry_points)
    try:
        factory = ep.load()
    except Exception as e:
        raise BackendLoadError(f"cannot import {_describe(ep)}: {type(e).__name__}: {e}") from e
    if not callable(factory):
        raise BackendLoadError(f"{_describe(ep)} is not callable (got {type(factory).__name__})")
    try:
        inspect.signature(factory).bind(options, launcher, namespace)
    except TypeError as e:
        raise BackendLoadError(f"{_describe(ep)} must accept (config, launcher, namespace): {e}") from e
    except ValueError:
        pass                       # no signature available (some builtins); calling it will tell
    try:
        backend = factory(options, launcher, namespace)
    except Exception as e:
        raise BackendLoadError(f"{_describe(ep)} failed to build backend {name!r}: {e}") from e
    problems = check_backend(backend)
    if problems:
        raise BackendLoadError(f"{_describe(ep)} returned {type(backend).__name__}, which violates the "
                               f"RuntimeBackend interface: {'; '.join(problems)}")
    return backend
