"""The built-in OCI-CLI runtimes (runc, crun, runsc): data for OciCli, and their entry-point factories.

Rules:
- Each runtime is one OciConfig constant; the differences are data, verified against the binaries on Debian
  bookworm (runc 1.1.5, crun 1.8.1, runsc 0.0~20221219) -- see runtime/README.md for what was checked and how.
- Factories have the registry's signature `(config: Mapping, launcher: Launcher, namespace: str) -> OciCli` and are
  registered as entry points of group `pyshim.runtimes`, like any third-party backend.
- Binaries are names looked up in $PATH when a command runs (Debian: /usr/sbin/runc, /usr/bin/crun,
  /usr/bin/runsc); option `binary_name` overrides. A factory checks the binary exists and is executable, so a
  misconfigured backend fails when it is chosen (with the option to fix), not at its first command.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any

from runtime.base import Capability, Launcher
from runtime.errors import DEFAULT_FINISHED_PATTERNS, DEFAULT_NOT_FOUND_PATTERNS, InvalidOptions
from runtime.oci_cli import OciCli
from runtime.oci_config import OciConfig, configure

_ALL = frozenset(Capability)

RUNC = OciConfig(
    name="runc",
    binary="runc",
    root="/run/containerd/runc",
    capabilities=_ALL,   # checkpoint/restore also need criu on $PATH (or criu_path)
)

CRUN = OciConfig(
    name="crun",
    binary="crun",
    root="/run/containerd/crun",
    # Debian's crun is built without CRIU: `crun checkpoint` -> "unknown command checkpoint" (no +CRIU in
    # `crun --version`). Give option capabilities=[...] for a build that has it.
    capabilities=_ALL - {Capability.CHECKPOINT, Capability.RESTORE},
    # crun says "error opening file `<root>/<id>/status`: No such file or directory" (kill, state, pause, start,
    # update, ps) or "cannot open directory '<root>/<id>': No such file or directory" (delete) for an unknown id.
    not_found_patterns=DEFAULT_NOT_FOUND_PATTERNS + (
        r"error opening file `[^`]*/status`: no such file or directory",
        r"cannot open directory '[^']*': no such file or directory",
    ),
)

RUNSC = OciConfig(
    name="runsc",
    binary="runsc",
    root="/run/containerd/runsc",
    # No `update` command; checkpoint/restore are "experimental" with other flags (no CRIU options) and
    # `checkpoint --leave-running` did not return; create has no --no-pivot/--no-new-keyring.
    capabilities=_ALL - {Capability.UPDATE, Capability.CHECKPOINT, Capability.RESTORE,
                         Capability.NO_PIVOT, Capability.NO_NEW_KEYRING},
    # runsc's default network mode "sandbox" needs a network namespace prepared by CNI (a path in the spec); with
    # a plain bundle `start` fails "cannot run with network enabled in root network namespace". Containers started
    # through containerd without CNI therefore need --network=none; set global_flags to change it.
    global_flags=("--network=none",),
    # state is <root>/<id>_sandbox:<sandbox id>.state (+ .lock), not a directory per container
    state_dir_per_id=False,
    # With these annotations runsc makes a pod's container a *subcontainer* of the pause container's sandbox,
    # whose stdio is that of `runsc start` and whose exit only `runsc wait` reports (measured with runsc
    # 20221219): the OCI-CLI protocol the shim speaks does not carry either, so each container of a pod gets its
    # own sandbox instead (README "Choosing a backend"). Set drop_annotations = [] to keep them.
    drop_annotations=("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType"),
    # after the sandbox exited, kill fails with "sandbox is not running" once the sandbox process was reaped, or
    # "connecting to control server at PID <n>: connection refused" while it is still a zombie
    finished_patterns=DEFAULT_FINISHED_PATTERNS + (r"sandbox is not running",
                                                   r"connecting to control server at PID \d+: connection refused"),
)

BUILTIN = {c.name: c for c in (RUNC, CRUN, RUNSC)}


def checked(cfg: OciConfig) -> OciConfig:
    """`cfg` if its binary can be run (the environment's $PATH for a bare name), else InvalidOptions."""
    if os.sep in cfg.binary:
        if not os.access(cfg.binary, os.X_OK) or os.path.isdir(cfg.binary):
            raise InvalidOptions(cfg.name, f"option 'binary_name': {cfg.binary} is not an executable file; "
                                           f"install {cfg.name} or point binary_name at it")
    elif shutil.which(cfg.binary) is None:
        raise InvalidOptions(cfg.name, f"runtime binary {cfg.binary!r} not found in $PATH "
                                       f"({os.environ.get('PATH', os.defpath)}); install it, or set option "
                                       f"'binary_name' to its absolute path")
    return cfg


def runc(config: Mapping[str, Any], launcher: Launcher, namespace: str) -> OciCli:
    return OciCli(checked(configure(RUNC, config, namespace)), launcher)


def crun(config: Mapping[str, Any], launcher: Launcher, namespace: str) -> OciCli:
    return OciCli(checked(configure(CRUN, config, namespace)), launcher)


def runsc(config: Mapping[str, Any], launcher: Launcher, namespace: str) -> OciCli:
    return OciCli(checked(configure(RUNSC, config, namespace)), launcher)
