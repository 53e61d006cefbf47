"""OciConfig: everything that distinguishes one OCI-CLI runtime (runc, crun, runsc, ...) from another, as data.

Rules:
- Frozen and hashable; built-in values live in runtime/builtin.py, user options are applied with `configure`,
  which validates every key and type and raises InvalidOptions (never ignores an unknown key).
- `root` is the runtime's state root *including* the namespace (`<root>/<namespace>`, as containerd's runc shim
  passes `--root`); `configure` appends the namespace exactly once.
- Patterns are case-insensitive regular expressions matched against the runtime's error text (runtime/errors.py).
- Nothing here runs a command or touches the file system.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from runtime.base import Capability
from runtime.errors import (
    DEFAULT_EXISTS_PATTERNS,
    DEFAULT_FINISHED_PATTERNS,
    DEFAULT_NOT_FOUND_PATTERNS,
    InvalidOptions,
)


@dataclass(frozen=True)
class OciConfig:
    name: str                                  # backend name, used in messages
    binary: str                                # absolute path, or a name looked up in $PATH at each call
    root: str                                  # state root, namespace included once configured
    capabilities: frozenset[Capability]
    global_flags: tuple[str, ...] = ()         # after the standard global options, before the command
    debug: bool = False
    systemd_cgroup: bool = False
    criu_path: str = ""                        # --criu (only runc knows it; containerd 1.6's shim passes it)
    extra_env: tuple[tuple[str, str], ...] = ()
    log_name: str = "log.json"                 # in the bundle
    state_dir_per_id: bool = True              # state is the directory <root>/<id> (runc, crun; not runsc)
    drop_annotations: tuple[str, ...] = ()     # removed from the bundle's config.json before create
    oci_version: str = ""                      # if set, the spec's ociVersion is rewritten to it before create
    finished_patterns: tuple[str, ...] = DEFAULT_FINISHED_PATTERNS
    not_found_patterns: tuple[str, ...] = DEFAULT_NOT_FOUND_PATTERNS
    exists_patterns: tuple[str, ...] = DEFAULT_EXISTS_PATTERNS

    def log_path(self, bundle: str) -> str:
        return os.path.join(bundle, self.log_name)


def _str(name: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidOptions(name, f"option {key!r} must be a string, got {type(value).__name__}")
    return value


def _bool(name: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidOptions(name, f"option {key!r} must be a boolean, got {type(value).__name__}")
    return value


def _strs(name: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise InvalidOptions(name, f"option {key!r} must be a list of strings")
    return tuple(_str(name, key, v) for v in value)


def _env(name: str, key: str, value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise InvalidOptions(name, f"option {key!r} must be a table of strings")
    return tuple((_str(name, key, k), _str(name, key, v)) for k, v in value.items())


def _caps(name: str, key: str, value: Any) -> frozenset[Capability]:
    out = set()
    for v in _strs(name, key, value):
        try:
            out.add(Capability(v))
        except ValueError:
            known = ", ".join(c.value for c in Capability)
            raise InvalidOptions(name, f"option {key!r}: unknown capability {v!r} (known: {known})") from None
    return frozenset(out)


# option key -> (OciConfig field, parser). Keys follow containerd's runc Options where one exists.
_OPTIONS = {
    "binary_name": ("binary", _str),
    "root": ("root", _str),
    "systemd_cgroup": ("systemd_cgroup", _bool),
    "criu_path": ("criu_path", _str),
    "debug": ("debug", _bool),
    "global_flags": ("global_flags", _strs),
    "extra_env": ("extra_env", _env),
    "capabilities": ("capabilities", _caps),
    "finished_patterns": ("finished_patterns", _strs),
    "not_found_patterns": ("not_found_patterns", _strs),
    "exists_patterns": ("exists_patterns", _strs),
    "drop_annotations": ("drop_annotations", _strs),
    "oci_version": ("oci_version", _str),
}


def configure(base: OciConfig, options: Mapping[str, Any], namespace: str) -> OciConfig:
    """`base` with `options` applied and the namespace appended to the state root.

    Empty strings for binary_name/root mean "keep the default", as in containerd's runc Options."""
    if not namespace or "/" in namespace or namespace in (".", ".."):
        raise InvalidOptions(base.name, f"invalid namespace {namespace!r}")
    changes: dict[str, Any] = {}
    for key, value in options.items():
        if key not in _OPTIONS:
            raise InvalidOptions(base.name, f"unknown option {key!r} (known: {', '.join(sorted(_OPTIONS))})")
        field_name, parse = _OPTIONS[key]
        parsed = parse(base.name, key, value)
        if field_name in ("binary", "root") and parsed == "":
            continue
        changes[field_name] = parsed
    cfg = replace(base, **changes)
    if not os.path.isabs(cfg.root):
        raise InvalidOptions(base.name, f"state root {cfg.root!r} must be an absolute path")
    return replace(cfg, root=os.path.join(cfg.root, namespace))
