"""The per-run exchange disk: what the host sends into the VM and how it reads what comes back.

Rules:
- The disk is a raw file holding one tar stream (no filesystem, no mounts, no loop devices): the host writes
  the payload tar at offset 0 and pads the file with free room; the guest's /sbin/vminit extracts it to
  /payload and, at the end, writes a tar of its results over the same disk.
- The payload is: ``run.sh`` (the entry vminit runs), ``config.json`` (pytest arguments, time-out, environment),
  ``src/`` (the checkout as the working tree has it: git's tracked and untracked-but-not-ignored files, so
  uncommitted changes are tested, with their bytecode compiled here when this is CPython 3.11 like the guest's;
  tar keeps the sources' mtimes, so the guest's Python accepts it) and ``cache/`` (extra containerd versions
  copied from the host's cache).
  The project code is shipped every run; the cached image never contains it.
- Reading results never trusts the tar: only regular files and directories with relative paths that stay
  inside the destination are extracted (host Python 3.11.2 has no tarfile extraction filters).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import py_compile
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import spec as S

ROOM = 256 * 1024 * 1024  # free space after the payload, for the results tar
GUEST_CACHE_TAG = "cpython-311"  # the guest's /usr/bin/python3 is Debian bookworm's 3.11
RUN_SH = f"""#!/bin/sh
# Entry point of the payload, run by /sbin/vminit with the results directory as $1.
exec {S.GUEST_VENV}/bin/python /payload/src/tests/vm/guest_run.py /payload/config.json "$1"
"""


@dataclass(frozen=True)
class GuestConfig:
    """What guest_run.py does: run pytest with ``pytest_args`` from /payload/src for at most ``timeout`` s."""

    pytest_args: tuple[str, ...]
    timeout: float
    versions: tuple[str, ...] = ("1.6.20",)
    env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"pytest_args": list(self.pytest_args), "timeout": self.timeout,
                           "versions": list(self.versions), "env": dict(self.env)}, indent=1, sort_keys=True)


def source_files(root: Path) -> list[str]:
    """Paths (relative, sorted) of the checkout: tracked and untracked-unignored files that exist."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, timeout=60, check=True).stdout
    names = sorted({n for n in out.decode().split("\0") if n})
    return [n for n in names if os.path.lexists(root / n) and not (root / n).is_dir()]


def bytecode_name(name: str) -> str:
    """``pkg/mod.py`` -> ``pkg/__pycache__/mod.cpython-311.pyc`` (what the guest's 3.11 looks for)."""
    p = PurePosixPath(name)
    return str(p.parent / "__pycache__" / f"{p.stem}.{GUEST_CACHE_TAG}.pyc")


def _compiled(root: Path, name: str, tmp: Path) -> Path | None:
    """Bytecode of a .py file, compiled here for the guest (same CPython 3.11: imports in the emulated guest
    are slow enough without compiling every module there first).  None for other files, or when this
    interpreter's bytecode would not be the guest's, or the file does not compile (the guest will say why)."""
    if not name.endswith(".py") or sys.implementation.cache_tag != GUEST_CACHE_TAG or (root / name).is_symlink():
        return None
    out = tmp / hashlib.sha256(name.encode()).hexdigest()
    try:
        py_compile.compile(str(root / name), cfile=str(out), dfile=f"/payload/src/{name}", doraise=True)
    except py_compile.PyCompileError:
        return None
    return out


def _add_text(tar: tarfile.TarFile, name: str, text: str, mode: int = 0o644) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def write(disk: Path, root: Path, config: GuestConfig, extra: dict[str, Path] | None = None) -> int:
    """Write the payload tar to ``disk`` (created or replaced) and pad it; returns the payload's size.
    ``extra`` maps payload names (e.g. ``cache/containerd/2.1.9/root/usr/bin/ctr``) to host files."""
    with open(disk, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_text(tar, "run.sh", RUN_SH, 0o755)
            _add_text(tar, "config.json", config.to_json() + "\n")
            with tempfile.TemporaryDirectory() as tmp:
                for name in source_files(root):
                    tar.add(root / name, arcname=f"src/{name}", recursive=False)
                    pyc = _compiled(root, name, Path(tmp))
                    if pyc is not None:
                        tar.add(pyc, arcname=f"src/{bytecode_name(name)}", recursive=False)
            for name, path in sorted((extra or {}).items()):
                tar.add(path, arcname=name, recursive=False)
        size = f.tell()
    os.truncate(disk, size + ROOM)
    return size


def _safe_name(name: str) -> PurePosixPath | None:
    p = PurePosixPath(name)
    parts = [x for x in p.parts if x not in ("", ".")]
    if p.is_absolute() or ".." in parts or not parts:
        return None
    return PurePosixPath(*parts)


class NoResults(Exception):
    """The exchange disk still holds the payload: the guest never wrote its results."""


def read_results(disk: Path, dest: Path) -> list[str]:
    """Extract the results tar the guest wrote over ``disk`` into ``dest``; returns the extracted names.
    Raises NoResults when the disk still holds the payload, tarfile.ReadError when it holds no tar at all."""
    dest.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    with tarfile.open(disk, mode="r:") as tar:
        for member in tar:
            rel = _safe_name(member.name)
            if rel is None:
                continue
            if not names and str(rel) == "run.sh":
                raise NoResults(f"{disk} still holds the payload")
            target = dest / rel
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                names.append(str(rel))
    return names
