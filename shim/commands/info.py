"""``-v`` (version text) and ``-info`` (a serialized containerd.types.RuntimeInfo for containerd 2.x).

Rules (containerd 2.1.9 ``core/runtime/v2/task_manager.go`` ``PluginInfo`` and ``validateRuntimeFeatures``,
``api/types/introspection.proto``):
- ``-info`` gets no other flags, containerd's environment and cwd, and stdin = a serialized
  google.protobuf.Any of the runtime options (possibly empty). stdout = RuntimeInfo bytes only:
  1 name, 2 version {1 version, 2 revision}, 3 options (the stdin Any echoed when given), 4 features.
- ``features`` (``Manager.features``) is an Any with type_url
  ``types.containerd.io/opencontainers/runtime-spec/1/features/Features`` (the name containerd 2.x registers
  for the OCI features struct, whose typeurl codec is JSON) and value = the features JSON. containerd refuses
  tasks with id-mapped mounts unless that document declares ``linux.mountExtensions.idmap.enabled``, and
  refuses them outright if features is absent. No features: the field is omitted, as upstream does.
- Undecodable stdin is an error (exit 1, message on stderr), as upstream.
- Version = the manager's distribution's version (dist-info METADATA found on sys.path) or, in a source
  checkout, pyproject.toml's; revision = the source checkout's git commit when there is one, else "".
  Both are read without importlib.metadata / tomllib (tens of ms on a path containerd waits for).
- Standard library only.
"""

from __future__ import annotations

import os
import sys

from ttrpc import wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shim.manager import Manager

__all__ = ["run", "runtime_info", "version_text"]

FEATURES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"


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


def package_version(distribution: str, source_root: str) -> str:
    """The version of ``distribution``: pyproject.toml's in a source checkout at ``source_root``, else the
    installed distribution's (dist-info METADATA on sys.path); "unknown" when neither says."""
    pyproject = os.path.join(source_root, "pyproject.toml") if source_root else ""
    if pyproject and os.path.isfile(pyproject):  # a source checkout (or an editable install)
        version = _pyproject_version(pyproject)
        if version:
            return version
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith(distribution.replace("-", "_") + "-") and name.endswith(".dist-info"):
                version = _metadata_version(os.path.join(entry, name, "METADATA"))
                if version:
                    return version
    return "unknown"


def package_revision(source_root: str) -> str:
    """The git commit of the source checkout at ``source_root``, or ""."""
    if not source_root:
        return ""
    git = os.path.join(source_root, ".git")
    try:
        if os.path.isfile(git):  # a worktree: "gitdir: <path>"
            with open(git, encoding="utf-8") as f:
                git = os.path.join(source_root, f.read().split(":", 1)[1].strip())
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


def version_text(manager: Manager, program: str) -> str:
    root = manager.source_root()
    return (f"{os.path.basename(program)}:\n  Version:  {package_version(manager.distribution, root)}\n"
            f"  Revision: {package_revision(root)}\n  Python version: {sys.version.split()[0]}\n\n")


def runtime_info(manager: Manager, options: bytes, features: bytes | None) -> bytes:
    """Serialized containerd.types.RuntimeInfo."""
    root = manager.source_root()
    version = (wire.string_field(1, package_version(manager.distribution, root))
               + wire.string_field(2, package_revision(root)))
    out = wire.string_field(1, manager.name) + wire.message_field(2, version)
    if options:
        out += wire.message_field(3, options)
    if features is not None:
        out += wire.message_field(4, wire.any_message(FEATURES_TYPE_URL, features))
    return out


def run(manager: Manager, options: bytes) -> bytes:
    """The ``-info`` command: ``options`` is stdin (a serialized Any or nothing); return RuntimeInfo bytes."""
    if options:
        wire.decode_any(options)  # validate before echoing it back
    return runtime_info(manager, options, manager.features(options))
