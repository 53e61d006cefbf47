"""pyshim's configuration: which runtime backend creates a container, and with which options.

Sources, lowest precedence first (docs/configuration.md has the user's version):
1. built-in defaults: backend ``runc`` with its built-in options;
2. the default file ``/etc/containerd/pyshim.toml`` ($PYSHIM_CONFIG overrides the path) -- absent is fine;
3. runtimeoptions ``config_path`` (``ctr run --runtime-config-path``, CRI ``options.ConfigPath``): the handler's
   own file, used *instead of* the default file; it must exist;
4. runtimeoptions ``config_body`` (containerd 1.7+ CRI sends its inline ``options`` table when ConfigPath is
   empty): merged key by key over the file of (2), tables recursively;
5. containerd's runc ``Options`` (binary_name, root, systemd_cgroup, criu_path: ``ctr --runc-*``, runc-style
   CRI options) override the chosen backend's options of the same name, where set;
6. the OCI annotation ``io.pyshim.backend`` picks another backend -- only one named in ``allowed_backends``.

Rules:
- Every key is known and typed; anything else fails Create with a ConfigError (InvalidArgument) naming the source,
  the key and the fix. Backend option tables are validated by the backend's own factory (runtime/registry).
- Pure: reading the named file is the only I/O (``load``); parsed files are cached by (path, mtime, size), so a
  grouped shim rereads a file only after it changed, and a change applies to containers created afterwards.
- A bad configuration only fails the Create that needed it; other containers of the shim are untouched.
- ``failpoints = true`` turns on containerd's shim failpoint annotations for the containers created with this
  configuration (shim/failpoint_wrap.py; docs/reliability.md, "Failpoints"). Off by default: a test facility.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shim.errors import InvalidArgument

DEFAULT_PATH = "/etc/containerd/pyshim.toml"
ENV_PATH = "PYSHIM_CONFIG"
BACKEND_ANNOTATION = "io.pyshim.backend"
DEFAULT_BACKEND = "runc"
TOP_KEYS = ("backend", "allowed_backends", "backends", "sharing", "max_tasks_per_daemon", "idle_timeout",
            "fork_server", "failpoints", "call_timeouts")
SHARING_MODES = ("pod", "namespace")
DEFAULT_MAX_TASKS = 64       # bench/README.md, "Sharing mode": what one daemon serves before the next starts
DEFAULT_IDLE_TIMEOUT = 60.0  # seconds a shared daemon without tasks waits for the next container
RUNC_OPTION_KEYS = ("binary_name", "root", "systemd_cgroup", "criu_path")
# Seconds each call to a backend may take before pyshim stops it (shim/runc/deadlines.py; docs/configuration.md,
# "Deadlines"): generous for the calls that start processes or move memory, a minute for the rest. One key per
# method of runtime.base.REQUIRED_METHODS (tests/unit/test_config_timeouts.py holds them equal).
CALL_TIMEOUTS = MappingProxyType({
    "create": 120.0, "start": 60.0, "exec": 120.0, "kill": 60.0, "delete": 60.0, "state": 60.0, "ps": 60.0,
    "pause": 60.0, "resume": 60.0, "update": 60.0, "checkpoint": 600.0, "restore": 600.0,
})


class ConfigError(InvalidArgument):
    """A configuration problem; the message names where it is and how to fix it."""


@dataclass(frozen=True)
class Backend:
    """One configured backend: ``name`` as written in the config, ``entry_point`` in group pyshim.runtimes."""
    name: str
    entry_point: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class Daemons:
    """How containers share shim daemons (docs/configuration.md, "Choosing a sharing mode")."""
    sharing: str = "pod"               # "pod": only by group annotation; "namespace": any container of the namespace
    max_tasks_per_daemon: int = DEFAULT_MAX_TASKS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    fork_server: bool = True           # start daemons from the fork server (default: on for pod, off for namespace)


@dataclass(frozen=True)
class Config:
    source: str                        # where it came from, for messages ("built-in defaults" or a path)
    backend: str                       # the default backend's name
    allowed_backends: tuple[str, ...]  # names io.pyshim.backend may choose (the default is always allowed)
    backends: Mapping[str, Backend]
    daemons: Daemons = Daemons()
    failpoints: bool = False           # containerd's shim failpoint annotations apply (a test facility)
    call_timeouts: Mapping[str, float] = field(default_factory=lambda: CALL_TIMEOUTS)  # every call, defaults in

    def backend_named(self, name: str) -> Backend:
        if name in self.backends:
            return self.backends[name]
        # a name without a table is an entry point with its default options
        return Backend(name, name, MappingProxyType({}))


def _where(source: str, key: str) -> str:
    return f"pyshim config {source}: key {key!r}"


def _expect(source: str, key: str, value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{_where(source, key)} must be {what}, got {type(value).__name__} {value!r}")
    return value


def _names(source: str, key: str, value: Any) -> tuple[str, ...]:
    _expect(source, key, value, list, "a list of backend names")
    for i, v in enumerate(value):
        _expect(source, f"{key}[{i}]", v, str, "a backend name (string)")
    return tuple(value)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: tables merge recursively, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def build(data: Mapping[str, Any], source: str) -> Config:
    """Validate a parsed TOML document into a Config."""
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{_where(source, key)} is unknown (known keys: {', '.join(TOP_KEYS)}); "
                              f"backend options belong under [backends.<name>]")
    default = _expect(source, "backend", data.get("backend", DEFAULT_BACKEND), str, "a backend name (string)")
    if not default:
        raise ConfigError(f"{_where(source, 'backend')} must not be empty (e.g. backend = \"runc\")")
    allowed = _names(source, "allowed_backends", data.get("allowed_backends", []))
    tables = _expect(source, "backends", data.get("backends", {}), Mapping, "a table of backend tables")
    daemons = _daemons(data, source)
    failpoints = _expect(source, "failpoints", data.get("failpoints", False), bool, "true or false")
    timeouts = _call_timeouts(data, source)
    backends = {}
    for name, table in tables.items():
        key = f"backends.{name}"
        table = dict(_expect(source, key, table, Mapping, "a table of backend options"))
        entry_point = _expect(source, f"{key}.type", table.pop("type", name), str, "a backend type (string)")
        backends[name] = Backend(name, entry_point, MappingProxyType(table))
    return Config(source, default, allowed, MappingProxyType(backends), daemons, failpoints, timeouts)


def _call_timeouts(data: Mapping[str, Any], source: str) -> Mapping[str, float]:
    """``[call_timeouts]`` over CALL_TIMEOUTS: a positive number of seconds per call, ``inf`` for no deadline."""
    table = _expect(source, "call_timeouts", data.get("call_timeouts", {}), Mapping,
                    "a table of seconds per backend call")
    out = dict(CALL_TIMEOUTS)
    for call, value in table.items():
        key = f"call_timeouts.{call}"
        if call not in CALL_TIMEOUTS:
            raise ConfigError(f"{_where(source, key)} is unknown (calls: {', '.join(CALL_TIMEOUTS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:  # NaN too
            raise ConfigError(f"{_where(source, key)} must be a number of seconds above 0 (inf: no deadline), "
                              f"got {value!r}")
        out[call] = float(value)
    return MappingProxyType(out)


def _daemons(data: Mapping[str, Any], source: str) -> Daemons:
    mode = _expect(source, "sharing", data.get("sharing", "pod"), str, f"one of {', '.join(SHARING_MODES)}")
    if mode not in SHARING_MODES:
        raise ConfigError(f"{_where(source, 'sharing')} must be one of {', '.join(map(repr, SHARING_MODES))}, "
                          f"got {mode!r}")
    max_tasks = _expect(source, "max_tasks_per_daemon", data.get("max_tasks_per_daemon", DEFAULT_MAX_TASKS), int,
                        "a whole number of tasks")
    if max_tasks < 1:
        raise ConfigError(f"{_where(source, 'max_tasks_per_daemon')} must be at least 1, got {max_tasks}")
    idle = data.get("idle_timeout", DEFAULT_IDLE_TIMEOUT)
    if isinstance(idle, bool) or not isinstance(idle, (int, float)) or not idle >= 0:  # NaN too
        raise ConfigError(f"{_where(source, 'idle_timeout')} must be a number of seconds (0 or more), got {idle!r}")
    fork_server = _expect(source, "fork_server", data.get("fork_server", mode == "pod"), bool, "true or false")
    return Daemons(mode, max_tasks, float(idle), fork_server)


DEFAULTS = build({}, "built-in defaults")
_cache: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}


def read_file(path: str, *, required: bool) -> dict[str, Any] | None:
    """The parsed TOML at ``path``; None if it is absent and not ``required``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"pyshim config {path}: no such file (fix config_path in the runtime options, "
                              f"e.g. ctr --runtime-config-path or the CRI handler's options.ConfigPath)") from None
        return None
    except OSError as e:
        raise ConfigError(f"pyshim config {path}: cannot read: {e.strerror}") from None
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _cache.get(path)
    if hit and hit[0] == stamp:
        return hit[1]
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"pyshim config {path}: invalid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"pyshim config {path}: cannot read: {e.strerror}") from None
    _cache[path] = (stamp, data)
    return data


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"pyshim config config_body (the runtime handler's options table): invalid TOML: {e}") \
            from None


def load(config_path: str = "", config_body: bytes = b"", *, default_path: str | None = None) -> Config:
    """The Config for one Create, from the sources (2)-(4) of the module docstring."""
    if config_path:
        if not os.path.isabs(config_path):
            raise ConfigError(f"pyshim config {config_path}: config_path must be an absolute path")
        data, source = read_file(config_path, required=True), config_path
    else:
        path = default_path or os.environ.get(ENV_PATH) or DEFAULT_PATH
        data, source = read_file(path, required=False), path
        if data is None:
            data, source = {}, "built-in defaults"
    if config_body:
        body = parse_body(config_body)
        data = merge(data, body)
        source = "config_body" if source == "built-in defaults" else f"{source} + config_body"
    return build(data, source)


def choose(cfg: Config, annotations: Mapping[str, Any], runc_options: Mapping[str, Any] | None = None) -> Backend:
    """The backend for one container: the default, or the annotation's pick when allowed; runc options on top."""
    name = cfg.backend
    picked = annotations.get(BACKEND_ANNOTATION)
    if picked not in (None, "", name):
        if not isinstance(picked, str):
            raise ConfigError(f"annotation {BACKEND_ANNOTATION} must be a string")
        if picked not in cfg.allowed_backends:
            allowed = ", ".join(cfg.allowed_backends) or "none"
            raise ConfigError(
                f"annotation {BACKEND_ANNOTATION}={picked!r} is not allowed by {_where(cfg.source, 'allowed_backends')}"
                f" (allowed: {allowed}); the operator must add it there, or drop the annotation to use {name!r}")
        name = picked
    backend = cfg.backend_named(name)
    extra = {k: v for k, v in (runc_options or {}).items() if k in RUNC_OPTION_KEYS and v}
    if extra:
        backend = Backend(backend.name, backend.entry_point, MappingProxyType({**backend.options, **extra}))
    return backend
