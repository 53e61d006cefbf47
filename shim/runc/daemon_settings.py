"""How ``start`` learns pyshim.toml's daemon keys (sharing, max_tasks_per_daemon, idle_timeout, fork_server) without
parsing TOML on its critical path.

Rules:
- The configuration that applies is the one Create will load (shim/runc/config.py): the runtime options'
  ``config_path`` if set, else the default file ($PYSHIM_CONFIG or /etc/containerd/pyshim.toml), with
  ``config_body`` merged over it.
- The settings are cached in CACHE_DIR (0700, and so is its parent when it makes it; files 0600; on /run's
  tmpfs), one small file per configuration, named by a hash
  of the file's path, mtime, size and inode and of the body: a changed file is a new name, so a cached entry is
  never stale. A miss parses the TOML once (tomllib is a large part of a start: bench/README.md) and writes the
  entry atomically. A cache that cannot be read or written costs only time.
- A configuration that does not load gives the defaults (pod, fork server on): start never fails over it, and the
  Create of that container reports the error with its source, as for every other key.
- Standard library only on the hit path; the options' decoder only when there are options.
"""

from __future__ import annotations

import os

from shim.record import Record

try:  # the builtin module avoids loading OpenSSL through hashlib
    from _sha256 import sha256
except ImportError:  # pragma: no cover
    from hashlib import sha256

__all__ = ["CACHE_DIR", "Settings", "settings"]

CACHE_DIR = os.environ.get("PYSHIM_CONFIG_CACHE", "/run/pyshim/config")
DEFAULT_PATH = "/etc/containerd/pyshim.toml"  # as shim/runc/config.py
ENV_PATH = "PYSHIM_CONFIG"
_VERSION = "v1"


class Settings(Record):
    sharing: str = "pod"
    max_tasks: int = 64
    idle_timeout: float = 60.0
    fork_server: bool = True


def runtime_options(options: tuple[bytes, ...]) -> tuple[str, bytes]:
    """(config_path, config_body) of the runtimeoptions.v1.Options among the options Anys, or ("", b"")."""
    if not options:
        return "", b""
    from shim.runc.typeurls import RUNTIME_OPTIONS, type_name
    from ttrpc import wire

    for any_bytes in options:
        try:
            type_url, value = wire.decode_any(any_bytes)
            if type_name(type_url) == RUNTIME_OPTIONS:
                decoded = wire.fields(value)
                return wire.get_string(decoded, 2), wire.get_bytes(decoded, 3)
        except wire.WireError:
            continue
    return "", b""


def _cache_name(path: str, body: bytes) -> str:
    try:
        st = os.stat(path)
        stamp = f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"
    except OSError:
        stamp = "absent"
    text = f"{_VERSION}\0{path}\0{stamp}\0{sha256(body).hexdigest()}"
    return sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _read(name: str) -> Settings | None:
    try:
        with open(os.path.join(CACHE_DIR, name), "rb") as f:
            words = f.read().decode().split()
        if len(words) != 5 or words[0] != _VERSION:
            return None
        return Settings(words[1], int(words[2]), float(words[3]), words[4] == "1")
    except (OSError, ValueError):
        return None


def _write(name: str, value: Settings) -> None:
    try:
        os.makedirs(os.path.dirname(CACHE_DIR), mode=0o700, exist_ok=True)  # /run/pyshim: the fork server's too
        os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
        tmp = os.path.join(CACHE_DIR, f".{name}.{os.getpid()}")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as f:
            f.write(f"{_VERSION} {value.sharing} {value.max_tasks} {value.idle_timeout!r} "
                    f"{int(value.fork_server)}\n".encode())
        os.replace(tmp, os.path.join(CACHE_DIR, name))
    except OSError:
        pass


def _load(config_path: str, config_body: bytes) -> Settings:
    from shim.runc import config

    try:
        daemons = config.load(config_path, config_body).daemons
    except config.ConfigError:
        return Settings()
    return Settings(daemons.sharing, daemons.max_tasks_per_daemon, daemons.idle_timeout, daemons.fork_server)


_last: tuple[tuple[bytes, ...], Settings] | None = None  # start asks more than once for the same options


def settings(options: tuple[bytes, ...]) -> Settings:
    """The daemon settings of the configuration a container with these runtime options gets."""
    global _last
    if _last is not None and _last[0] == options:
        return _last[1]
    config_path, config_body = runtime_options(options)
    path = config_path or os.environ.get(ENV_PATH) or DEFAULT_PATH
    name = _cache_name(path, config_body)
    value = _read(name)
    if value is None:
        value = _load(config_path, config_body)
        _write(name, value)
    _last = (options, value)
    return value
