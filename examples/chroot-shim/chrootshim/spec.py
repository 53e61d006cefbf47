"""The OCI ``process`` this shim runs, and the util-linux command lines that run it.

Rules:
- A process is ``args`` (non-empty), ``env`` (``KEY=value`` strings; entries without ``=`` are dropped),
  ``cwd`` (absolute, ``/`` when absent) and ``user.uid``/``user.gid`` (0 when absent). Everything else of the
  OCI process (capabilities, rlimits, additionalGids, apparmor, ...) is ignored; ``terminal`` is refused
  (there is no console). Malformed input raises InvalidArgument.
- The init: ``unshare --mount --uts --ipc --root=<root> --wd=<cwd> --setuid U --setgid G -- args``. No
  ``--fork``: unshare makes the namespaces, chroots, changes to ``cwd`` (inside the root), drops supplementary
  groups, sets the ids and execs the program, so the spawned pid is the container's process itself.
  ``--mount-proc`` is added when the root has a ``proc`` directory: a proc filesystem mounted there after the
  chroot, in the container's mount namespace only (it shows the host's processes: there is no pid namespace).
  Nothing else is mounted: no ``/dev``, the rootfs brings the device nodes its programs need.
- An exec: ``nsenter --target <init> --mount --uts --ipc --root --wdns=<cwd> --setuid U --setgid G -- args``.
  ``--root`` without a value takes the init's root; ``--wdns`` is resolved after the chroot (``--wd=<dir>``
  would open a host path). nsenter forks only to enter a pid namespace, so the pid is the exec's process too.
- The environment of the spawned program is the process's ``env``, whole: it is also the environment of unshare
  and nsenter themselves before they exec, which is one reason this shim is no isolation boundary.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

from shim import InvalidArgument

__all__ = ["ProcessSpec", "Tools", "exec_argv", "init_argv", "parse_process"]


@dataclass(frozen=True)
class ProcessSpec:
    args: tuple[str, ...]
    env: dict[str, str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0


def parse_process(process: object, *, terminal: bool) -> ProcessSpec:
    """Check an OCI ``process`` object (from config.json, or an exec's Process JSON already decoded)."""
    if not isinstance(process, dict):
        raise InvalidArgument("the OCI process must be a JSON object")
    if terminal or process.get("terminal"):
        raise InvalidArgument("terminal is not supported by the pychroot shim (it has no console)")
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise InvalidArgument("process.args must be a non-empty list of strings")
    env_list = process.get("env") or []
    if not isinstance(env_list, list) or not all(isinstance(e, str) for e in env_list):
        raise InvalidArgument("process.env must be a list of strings")
    cwd = process.get("cwd") or "/"
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise InvalidArgument("process.cwd must be an absolute path")
    user = process.get("user") or {}
    uid, gid = (user.get("uid", 0), user.get("gid", 0)) if isinstance(user, dict) else (None, None)
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**32 for i in (uid, gid)):
        raise InvalidArgument("process.user.uid and gid must be numbers")
    env = dict(e.split("=", 1) for e in env_list if "=" in e)
    return ProcessSpec(tuple(args), env, cwd, uid, gid)


def parse_exec(spec_json: bytes, *, terminal: bool) -> ProcessSpec:
    """An ExecProcessRequest's ``spec``: the OCI Process as JSON."""
    try:
        process = json.loads(spec_json or b"null")
    except ValueError as exc:
        raise InvalidArgument(f"exec spec is not valid JSON: {exc}") from None
    return parse_process(process, terminal=terminal)


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the util-linux programs, found once per daemon on its PATH."""

    unshare: str
    nsenter: str

    @classmethod
    def find(cls) -> Tools:
        found = {name: shutil.which(name) for name in ("unshare", "nsenter")}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise FileNotFoundError(f"util-linux {' and '.join(missing)} not found on PATH")
        return cls(found["unshare"], found["nsenter"])  # type: ignore[arg-type]


def _ids(p: ProcessSpec) -> list[str]:
    return ["--setuid", str(p.uid), "--setgid", str(p.gid)]


def init_argv(tools: Tools, root: str, p: ProcessSpec) -> list[str]:
    proc = ["--mount-proc"] if os.path.isdir(os.path.join(root, "proc")) else []
    return [tools.unshare, "--mount", "--uts", "--ipc", *proc, f"--root={root}", f"--wd={p.cwd}", *_ids(p),
            "--", *p.args]


def exec_argv(tools: Tools, init_pid: int, p: ProcessSpec) -> list[str]:
    return [tools.nsenter, f"--target={init_pid}", "--mount", "--uts", "--ipc", "--root", f"--wdns={p.cwd}",
            *_ids(p), "--", *p.args]
