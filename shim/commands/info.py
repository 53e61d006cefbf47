"""``-v`` (version text) and ``-info`` (a serialized containerd.types.RuntimeInfo for containerd 2.x).

Rules (shim-v2.md §2.2, §2.3; containerd 2.1.9 ``core/runtime/v2/task_manager.go`` ``PluginInfo`` and
``validateRuntimeFeatures``, ``api/types/introspection.proto``):
- ``-info`` gets no other flags, containerd's environment and cwd, and stdin = a serialized
  google.protobuf.Any of the runtime options (possibly empty). stdout = RuntimeInfo bytes only:
  1 name, 2 version {1 version, 2 revision}, 3 options (the stdin Any echoed when given), 4 features.
- ``features`` is an Any with type_url ``types.containerd.io/opencontainers/runtime-spec/1/features/Features``
  (the name containerd 2.x registers for the OCI features struct, whose typeurl codec is JSON) and value = the
  JSON document printed by ``<runtime> features``. containerd refuses tasks with id-mapped mounts unless that
  document declares ``linux.mountExtensions.idmap.enabled``, and refuses them outright if features is absent.
  When the runtime has no ``features`` command (crun < 1.13, runc < 1.1) features is omitted, as upstream does.
- The runtime binary: ``binary_name`` of a containerd.runc.v1.Options Any, else ``runc`` from $PATH.
- Undecodable stdin is an error (exit 1, message on stderr), as upstream.
- Version = the installed distribution's version (dist-info METADATA found on sys.path) or, in a source
  checkout, pyproject.toml's; revision = the source checkout's git commit when there is one, else "".
  Both are read without importlib.metadata / tomllib (tens of ms on a path containerd waits for).
- Standard library only.
"""

from __future__ import annotations

import os
import sys

from ttrpc import wire

RUNTIME_NAME = "io.containerd.pyshim.v1"
DISTRIBUTION = "pyshim"
FEATURES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
RUNC_OPTIONS = "containerd.runc.v1.Options"
DEFAULT_RUNTIME = "runc"
FEATURES_TIMEOUT = 10.0

_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _metadata_version(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
            if not line.strip():
                break
    return ""


def _pyproject_version(path: str) -> str:
    """``version = "..."`` of the ``[project]`` table (a line scan; pyproject.toml keeps it that simple)."""
    section = ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = line.strip()
            if text.startswith("["):
                section = text
            elif section == "[project]" and text.startswith("version") and "=" in text:
                return text.split("=", 1)[1].strip().strip("\"'")
    return ""


def package_version() -> str:
    pyproject = os.path.join(_SOURCE_ROOT, "pyproject.toml")
    if os.path.isfile(pyproject):  # running from a source checkout (or an editable install)
        version = _pyproject_version(pyproject)
        if version:
            return version
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith(DISTRIBUTION + "-") and name.endswith(".dist-info"):
                version = _metadata_version(os.path.join(entry, name, "METADATA"))
                if version:
                    return version
    return "unknown"


def package_revision() -> str:
    """The git commit of the source checkout this module runs from, or ""."""
    git = os.path.join(_SOURCE_ROOT, ".git")
    try:
        if os.path.isfile(git):  # a worktree: "gitdir: <path>"
            with open(git, encoding="utf-8") as f:
                git = os.path.join(_SOURCE_ROOT, f.read().split(":", 1)[1].strip())
        with open(os.path.join(git, "HEAD"), encoding="utf-8") as f:
            head = f.read().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        for base in (git, _common_dir(git)):
            try:
                with open(os.path.join(base, ref), encoding="utf-8") as f:
                    return f.read().strip()
            except FileNotFoundError:
                pass
            try:
                with open(os.path.join(base, "packed-refs"), encoding="utf-8") as f:
                    for line in f:
                        if line.rstrip().endswith(" " + ref):
                            return line.split(" ", 1)[0]
            except FileNotFoundError:
                pass
    except (OSError, IndexError):
        return ""
    return ""


def _common_dir(git: str) -> str:
    try:
        with open(os.path.join(git, "commondir"), encoding="utf-8") as f:
            return os.path.join(git, f.read().strip())
    except OSError:
        return git


def version_text(program: str) -> str:
    return (f"{os.path.basename(program)}:\n  Version:  {package_version()}\n  Revision: {package_revision()}\n"
            f"  Python version: {sys.version.split()[0]}\n\n")


def runtime_binary(options: bytes) -> str:
    """``binary_name`` (field 6) of runc Options in the options Any, else DEFAULT_RUNTIME."""
    if options:
        type_url, value = wire.decode_any(options)
        if type_url.rsplit("/", 1)[-1] == RUNC_OPTIONS:
            return wire.get_string(wire.fields(value), 6) or DEFAULT_RUNTIME
    return DEFAULT_RUNTIME


def runtime_features(binary: str, timeout: float = FEATURES_TIMEOUT) -> bytes | None:
    """The JSON printed by ``<binary> features``, or None if the runtime cannot tell."""
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    try:
        done = subprocess.run([binary, "features"], stdin=subprocess.DEVNULL, capture_output=True,
                              env=env, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        if not isinstance(json.loads(done.stdout), dict):
            return None
    except ValueError:
        return None
    return done.stdout


def runtime_info(options: bytes, features: bytes | None) -> bytes:
    """Serialized containerd.types.RuntimeInfo."""
    version = wire.string_field(1, package_version()) + wire.string_field(2, package_revision())
    out = wire.string_field(1, RUNTIME_NAME) + wire.message_field(2, version)
    if options:
        out += wire.message_field(3, options)
    if features is not None:
        out += wire.message_field(4, wire.any_message(FEATURES_TYPE_URL, features))
    return out


def run(options: bytes) -> bytes:
    """The ``-info`` action: ``options`` is stdin (a serialized Any or nothing); return RuntimeInfo bytes."""
    if options:
        wire.decode_any(options)  # validate before echoing it back
    return runtime_info(options, runtime_features(runtime_binary(options)))
