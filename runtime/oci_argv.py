"""Pure argv builders for OCI-CLI runtimes, in go-runc's argument order (``runc.go`` of
github.com/containerd/go-runc v1.0.0).

Rules:
- Every function is pure: (OciConfig, spec) -> list[str]. No file system, no environment, no $PATH lookup;
  argv[0] is `cfg.binary` as configured (the driver resolves it). Paths must already be absolute (ValueError).
- Global options: `--root R [--debug] --log <bundle>/log.json --log-format json [--criu C] [--systemd-cgroup]
  <cfg.global_flags...>`, then the command, its options, the container id, then trailing arguments.
- A flag the runtime does not support (not in cfg.capabilities) raises Unsupported before anything runs, instead
  of letting the runtime fail with "flag provided but not defined" (runsc create has no --no-pivot).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from runtime.base import Capability, CheckpointSpec, CreateSpec, CriuOptions, ExecSpec, RestoreSpec
from runtime.environ import for_runtime
from runtime.errors import Unsupported
from runtime.oci_config import OciConfig


def _abs(what: str, path: str) -> str:
    if not os.path.isabs(path):
        raise ValueError(f"{what} must be an absolute path, got {path!r}")
    return path


def _need(cfg: OciConfig, op: str, cap: Capability, feature: str) -> None:
    if cap not in cfg.capabilities:
        raise Unsupported(op, cfg.name, feature)


def global_argv(cfg: OciConfig, bundle: str) -> list[str]:
    out = [cfg.binary, "--root", cfg.root]
    if cfg.debug:
        out.append("--debug")
    out += ["--log", cfg.log_path(_abs("bundle", bundle)), "--log-format", "json"]
    if cfg.criu_path:
        out += ["--criu", cfg.criu_path]
    if cfg.systemd_cgroup:
        out.append("--systemd-cgroup")
    out += cfg.global_flags
    return out


def _console(cfg: OciConfig, op: str, socket: str | None) -> list[str]:
    if socket is None:
        return []
    _need(cfg, op, Capability.TERMINAL, "terminals (--console-socket)")
    return ["--console-socket", _abs("console socket", socket)]


def create_argv(cfg: OciConfig, spec: CreateSpec) -> list[str]:
    out = global_argv(cfg, spec.bundle)
    out += ["create", "--bundle", spec.bundle, "--pid-file", _abs("pid file", spec.pid_file)]
    out += _console(cfg, "create", spec.console_socket)
    if spec.no_pivot:
        _need(cfg, "create", Capability.NO_PIVOT, "--no-pivot")
        out.append("--no-pivot")
    if spec.no_new_keyring:
        _need(cfg, "create", Capability.NO_NEW_KEYRING, "--no-new-keyring")
        out.append("--no-new-keyring")
    return out + [spec.id]


def start_argv(cfg: OciConfig, id: str, bundle: str) -> list[str]:
    return global_argv(cfg, bundle) + ["start", id]


def exec_argv(cfg: OciConfig, spec: ExecSpec, process_file: str) -> list[str]:
    _need(cfg, "exec", Capability.EXEC, "exec")
    out = global_argv(cfg, spec.bundle) + ["exec", "--process", _abs("process file", process_file)]
    out += _console(cfg, "exec", spec.console_socket)
    return out + ["--detach", "--pid-file", _abs("pid file", spec.pid_file), spec.id]


def kill_argv(cfg: OciConfig, id: str, bundle: str, signal: int, all: bool = False) -> list[str]:
    out = global_argv(cfg, bundle) + ["kill"]
    if all:
        _need(cfg, "kill", Capability.KILL_ALL, "kill --all")
        out.append("--all")
    return out + [id, str(int(signal))]


def delete_argv(cfg: OciConfig, id: str, bundle: str, force: bool = False) -> list[str]:
    return global_argv(cfg, bundle) + ["delete"] + (["--force"] if force else []) + [id]


def state_argv(cfg: OciConfig, id: str, bundle: str) -> list[str]:
    return global_argv(cfg, bundle) + ["state", id]


def ps_argv(cfg: OciConfig, id: str, bundle: str) -> list[str]:
    _need(cfg, "ps", Capability.PS, "ps")
    return global_argv(cfg, bundle) + ["ps", "--format", "json", id]


def pause_argv(cfg: OciConfig, id: str, bundle: str) -> list[str]:
    _need(cfg, "pause", Capability.PAUSE, "pause")
    return global_argv(cfg, bundle) + ["pause", id]


def resume_argv(cfg: OciConfig, id: str, bundle: str) -> list[str]:
    _need(cfg, "resume", Capability.PAUSE, "resume")
    return global_argv(cfg, bundle) + ["resume", id]


def update_argv(cfg: OciConfig, id: str, bundle: str) -> list[str]:
    """The resources JSON goes to the command's stdin."""
    _need(cfg, "update", Capability.UPDATE, "update")
    return global_argv(cfg, bundle) + ["update", "--resources", "-", id]


def criu_argv(criu: CriuOptions) -> list[str]:
    out: list[str] = []
    for flag, value in (("--image-path", criu.image_path), ("--work-path", criu.work_path),
                        ("--parent-path", criu.parent_path)):
        if value:
            out += [flag, _abs(flag[2:], value)]
    for flag, on in (("--tcp-established", criu.tcp_established), ("--ext-unix-sk", criu.ext_unix_sk),
                     ("--shell-job", criu.shell_job)):
        if on:
            out.append(flag)
    if criu.page_server:
        out += ["--page-server", criu.page_server]
    if criu.file_locks:
        out.append("--file-locks")
    if criu.manage_cgroups_mode:
        out += ["--manage-cgroups-mode", criu.manage_cgroups_mode]
    for ns in criu.empty_namespaces:
        out += ["--empty-ns", ns]
    if criu.lazy_pages:
        out.append("--lazy-pages")
    return out


def checkpoint_argv(cfg: OciConfig, id: str, bundle: str, spec: CheckpointSpec) -> list[str]:
    _need(cfg, "checkpoint", Capability.CHECKPOINT, "checkpoint")
    out = global_argv(cfg, bundle) + ["checkpoint"] + criu_argv(spec.criu)
    if spec.leave_running:
        out.append("--leave-running")
    return out + [id]


def restore_argv(cfg: OciConfig, spec: RestoreSpec) -> list[str]:
    _need(cfg, "restore", Capability.RESTORE, "restore")
    out = global_argv(cfg, spec.bundle) + ["restore"] + criu_argv(spec.criu)
    out += ["--detach", "--pid-file", _abs("pid file", spec.pid_file)]
    out += _console(cfg, "restore", spec.console_socket)
    if spec.no_pivot:
        _need(cfg, "restore", Capability.NO_PIVOT, "--no-pivot")
        out.append("--no-pivot")
    # single dash as go-runc writes it; runc (urfave/cli) and runsc (Go flag) accept both spellings
    return out + ["-no-subreaper", "--bundle", spec.bundle, spec.id]


def runtime_env(cfg: OciConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The runtime's environment: `environ` without the shim's own variables (runtime/environ.py), plus extra_env."""
    return for_runtime(environ, cfg.extra_env)
