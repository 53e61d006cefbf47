"""Argv tables for every command of the OCI-CLI builders, for each built-in runtime config (no binary needed).

Expected lists are written out by hand from go-runc's argument order (``runc.go`` of go-runc v1.0.0).
"""

from __future__ import annotations

import pytest

from runtime import builtin, oci_argv
from runtime.base import Capability, CheckpointSpec, CreateSpec, CriuOptions, ExecSpec, RestoreSpec
from runtime.errors import Unsupported
from runtime.oci_config import configure

B = "/run/b/c1"
LOG = ["--log", f"{B}/log.json", "--log-format", "json"]
RUNC = configure(builtin.RUNC, {}, "ns")
CRUN = configure(builtin.CRUN, {}, "ns")
RUNSC = configure(builtin.RUNSC, {}, "ns")

GLOBAL = {
    "runc": ["runc", "--root", "/run/containerd/runc/ns", *LOG],
    "crun": ["crun", "--root", "/run/containerd/crun/ns", *LOG],
    "runsc": ["runsc", "--root", "/run/containerd/runsc/ns", *LOG, "--network=none"],
}
CONFIGS = {"runc": RUNC, "crun": CRUN, "runsc": RUNSC}

CREATE = CreateSpec("c1", B, f"{B}/init.pid")
EXEC = ExecSpec("c1", "e1", B, b"{}", f"{B}/e1.pid")
CRIU = CriuOptions(image_path="/img", work_path="/work")


def _cases():
    """(runtime, builder call, argv after the global options) for commands every built-in supports."""
    for rt in CONFIGS:
        yield rt, lambda c: oci_argv.create_argv(c, CREATE), \
            ["create", "--bundle", B, "--pid-file", f"{B}/init.pid", "c1"]
        yield rt, lambda c: oci_argv.create_argv(c, CreateSpec("c1", B, f"{B}/init.pid", console_socket="/tmp/p/s")), \
            ["create", "--bundle", B, "--pid-file", f"{B}/init.pid", "--console-socket", "/tmp/p/s", "c1"]
        yield rt, lambda c: oci_argv.start_argv(c, "c1", B), ["start", "c1"]
        yield rt, lambda c: oci_argv.exec_argv(c, EXEC, "/tmp/runc-process1"), \
            ["exec", "--process", "/tmp/runc-process1", "--detach", "--pid-file", f"{B}/e1.pid", "c1"]
        yield rt, lambda c: oci_argv.exec_argv(c, ExecSpec("c1", "e1", B, b"{}", f"{B}/e1.pid",
                                                           console_socket="/tmp/p/s"), "/tmp/rp"), \
            ["exec", "--process", "/tmp/rp", "--console-socket", "/tmp/p/s", "--detach", "--pid-file",
             f"{B}/e1.pid", "c1"]
        yield rt, lambda c: oci_argv.kill_argv(c, "c1", B, 15), ["kill", "c1", "15"]
        yield rt, lambda c: oci_argv.kill_argv(c, "c1", B, 9, all=True), ["kill", "--all", "c1", "9"]
        yield rt, lambda c: oci_argv.delete_argv(c, "c1", B), ["delete", "c1"]
        yield rt, lambda c: oci_argv.delete_argv(c, "c1", B, force=True), ["delete", "--force", "c1"]
        yield rt, lambda c: oci_argv.state_argv(c, "c1", B), ["state", "c1"]
        yield rt, lambda c: oci_argv.ps_argv(c, "c1", B), ["ps", "--format", "json", "c1"]
        yield rt, lambda c: oci_argv.pause_argv(c, "c1", B), ["pause", "c1"]
        yield rt, lambda c: oci_argv.resume_argv(c, "c1", B), ["resume", "c1"]
    for rt in ("runc", "crun"):
        yield rt, lambda c: oci_argv.create_argv(c, CreateSpec("c1", B, f"{B}/init.pid", console_socket="/s",
                                                               no_pivot=True, no_new_keyring=True)), \
            ["create", "--bundle", B, "--pid-file", f"{B}/init.pid", "--console-socket", "/s", "--no-pivot",
             "--no-new-keyring", "c1"]
        yield rt, lambda c: oci_argv.update_argv(c, "c1", B), ["update", "--resources", "-", "c1"]
    yield "runc", lambda c: oci_argv.checkpoint_argv(c, "c1", B, CheckpointSpec(CRIU)), \
        ["checkpoint", "--image-path", "/img", "--work-path", "/work", "c1"]
    yield "runc", lambda c: oci_argv.checkpoint_argv(c, "c1", B, CheckpointSpec(CriuOptions(
        image_path="/img", work_path="/work", parent_path="/parent", tcp_established=True, ext_unix_sk=True,
        shell_job=True, file_locks=True, page_server="10.0.0.1:27", manage_cgroups_mode="soft",
        empty_namespaces=("network", "ipc"), lazy_pages=True), leave_running=True)), \
        ["checkpoint", "--image-path", "/img", "--work-path", "/work", "--parent-path", "/parent",
         "--tcp-established", "--ext-unix-sk", "--shell-job", "--page-server", "10.0.0.1:27", "--file-locks",
         "--manage-cgroups-mode", "soft", "--empty-ns", "network", "--empty-ns", "ipc", "--lazy-pages",
         "--leave-running", "c1"]
    yield "runc", lambda c: oci_argv.restore_argv(c, RestoreSpec("c1", B, f"{B}/init.pid", CRIU)), \
        ["restore", "--image-path", "/img", "--work-path", "/work", "--detach", "--pid-file", f"{B}/init.pid",
         "-no-subreaper", "--bundle", B, "c1"]
    yield "runc", lambda c: oci_argv.restore_argv(c, RestoreSpec("c1", B, f"{B}/init.pid", CriuOptions("/img"),
                                                                 console_socket="/s", no_pivot=True)), \
        ["restore", "--image-path", "/img", "--detach", "--pid-file", f"{B}/init.pid", "--console-socket", "/s",
         "--no-pivot", "-no-subreaper", "--bundle", B, "c1"]


@pytest.mark.parametrize(("rt", "build", "tail"), list(_cases()))
def test_argv_table(rt, build, tail):
    assert build(CONFIGS[rt]) == GLOBAL[rt] + tail


@pytest.mark.parametrize(("rt", "build", "feature"), [
    ("runsc", lambda c: oci_argv.create_argv(c, CreateSpec("c1", B, f"{B}/init.pid", no_pivot=True)), "--no-pivot"),
    ("runsc", lambda c: oci_argv.create_argv(c, CreateSpec("c1", B, f"{B}/p", no_new_keyring=True)),
     "--no-new-keyring"),
    ("runsc", lambda c: oci_argv.update_argv(c, "c1", B), "update"),
    ("runsc", lambda c: oci_argv.checkpoint_argv(c, "c1", B, CheckpointSpec(CRIU)), "checkpoint"),
    ("runsc", lambda c: oci_argv.restore_argv(c, RestoreSpec("c1", B, f"{B}/p", CRIU)), "restore"),
    ("crun", lambda c: oci_argv.checkpoint_argv(c, "c1", B, CheckpointSpec(CRIU)), "checkpoint"),
    ("crun", lambda c: oci_argv.restore_argv(c, RestoreSpec("c1", B, f"{B}/p", CRIU)), "restore"),
])
def test_unsupported_flags_and_commands_raise_before_running(rt, build, feature):
    with pytest.raises(Unsupported) as info:
        build(CONFIGS[rt])
    assert info.value.feature == feature
    assert str(info.value) == f"runtime {rt!r} does not support {feature}"


def test_optional_global_options_in_go_runc_order():
    cfg = configure(builtin.RUNC, {"debug": True, "criu_path": "/opt/criu", "systemd_cgroup": True,
                                   "global_flags": ["--rootless=false"], "binary_name": "/opt/runc"}, "k8s.io")
    assert oci_argv.start_argv(cfg, "c1", B) == [
        "/opt/runc", "--root", "/run/containerd/runc/k8s.io", "--debug", *LOG, "--criu", "/opt/criu",
        "--systemd-cgroup", "--rootless=false", "start", "c1"]


def test_capabilities_gate_terminal_exec_kill_all():
    bare = configure(builtin.RUNC, {"capabilities": []}, "ns")
    for build, feature in [
        (lambda: oci_argv.create_argv(bare, CreateSpec("c1", B, f"{B}/p", console_socket="/s")),
         "terminals (--console-socket)"),
        (lambda: oci_argv.exec_argv(bare, EXEC, "/tmp/p"), "exec"),
        (lambda: oci_argv.kill_argv(bare, "c1", B, 9, all=True), "kill --all"),
        (lambda: oci_argv.ps_argv(bare, "c1", B), "ps"),
        (lambda: oci_argv.pause_argv(bare, "c1", B), "pause"),
        (lambda: oci_argv.resume_argv(bare, "c1", B), "resume"),
    ]:
        with pytest.raises(Unsupported) as info:
            build()
        assert info.value.feature == feature
    # the mandatory commands never depend on capabilities
    assert oci_argv.kill_argv(bare, "c1", B, 9)[-3:] == ["kill", "c1", "9"]


@pytest.mark.parametrize("build", [
    lambda: oci_argv.start_argv(RUNC, "c1", "relative/bundle"),
    lambda: oci_argv.create_argv(RUNC, CreateSpec("c1", B, "init.pid")),
    lambda: oci_argv.exec_argv(RUNC, EXEC, "process.json"),
    lambda: oci_argv.checkpoint_argv(RUNC, "c1", B, CheckpointSpec(CriuOptions("img"))),
])
def test_relative_paths_are_rejected(build):
    with pytest.raises(ValueError, match="absolute"):
        build()


def test_builtin_capabilities():
    assert RUNC.capabilities == frozenset(Capability)
    assert CRUN.capabilities == frozenset(Capability) - {Capability.CHECKPOINT, Capability.RESTORE}
    assert RUNSC.capabilities == {Capability.EXEC, Capability.TERMINAL, Capability.PAUSE, Capability.PS,
                                  Capability.KILL_ALL}


def test_runtime_env_drops_notify_socket_and_adds_extra_env():
    cfg = configure(builtin.RUNC, {"extra_env": {"RUNC_X": "1", "PATH": "/opt/bin"}}, "ns")
    env = oci_argv.runtime_env(cfg, {"PATH": "/usr/bin", "NOTIFY_SOCKET": "/run/n", "HOME": "/root"})
    assert env == {"PATH": "/opt/bin", "HOME": "/root", "RUNC_X": "1"}
