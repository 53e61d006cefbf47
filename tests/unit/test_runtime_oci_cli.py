"""OciCli against a fake Launcher that records argv/env/stdio and plays the runtime's part (pid file, log.json)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from runtime import builtin, oci_cli
from runtime.base import (
    CheckpointSpec,
    ContainerRef,
    CreateSpec,
    CriuOptions,
    ExecSpec,
    RestoreSpec,
    RunResult,
    Status,
    StdioFds,
)
from runtime.errors import ContainerNotFound, ProcessFinished, RuntimeFailed, Unsupported
from runtime.oci_cli import OciCli
from runtime.oci_config import configure

RUNC_BIN = "/opt/fake/runc"


class FakeLauncher:
    """Records every call; `script(call)` may write files and returns (status, output)."""

    def __init__(self, script=None):
        self.calls = []
        self.script = script or (lambda call: (0, b""))

    async def run(self, argv, *, cwd=None, env=None, stdin=None, stdout=None, stderr=None, pass_fds=()):
        call = {"argv": list(argv), "cwd": cwd, "env": dict(env), "stdin": stdin, "stdout": stdout,
                "stderr": stderr, "pass_fds": tuple(pass_fds), "fd_kinds": {}}
        for name in ("stdout", "stderr"):
            fd = call[name]
            if fd is not None:
                st = os.fstat(fd)
                call["fd_kinds"][name] = "null" if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat(
                    os.devnull).st_rdev else "other"
        if "--process" in argv:
            with open(argv[argv.index("--process") + 1], "rb") as f:
                call["process_json"] = f.read()
            call["process_mode"] = stat.S_IMODE(os.stat(argv[argv.index("--process") + 1]).st_mode)
        self.calls.append(call)
        status, output = self.script(call)
        return RunResult(pid=4242, status=status, output=output)


def _log_error(bundle, msg):
    with open(os.path.join(bundle, "log.json"), "a") as f:
        f.write(json.dumps({"level": "error", "msg": msg, "time": "t"}) + "\n")


def _write_pid(argv, pid):
    path = argv[argv.index("--pid-file") + 1]
    with open(path + ".tmp", "w") as f:
        f.write(str(pid))
    os.rename(path + ".tmp", path)


@pytest.fixture
def bundle(tmp_path):
    b = tmp_path / "bundle"
    b.mkdir()
    return str(b)


def _backend(launcher, cfg=builtin.RUNC, **options):
    return OciCli(configure(cfg, {"binary_name": RUNC_BIN, **options}, "ns"), launcher)


async def test_create_returns_pid_and_passes_stdio(bundle, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    fake = FakeLauncher(lambda call: (_write_pid(call["argv"], 1234), (0, b""))[1])
    r, w = os.pipe()
    try:
        pid = await _backend(fake, extra_env={"X": "1"}).create(
            CreateSpec("c1", bundle, f"{bundle}/init.pid", stdio=StdioFds(stdin=r, stdout=w)))
    finally:
        os.close(r), os.close(w)
    assert pid == 1234
    (call,) = fake.calls
    assert call["argv"] == [RUNC_BIN, "--root", "/run/containerd/runc/ns", "--log", f"{bundle}/log.json",
                            "--log-format", "json", "create", "--bundle", bundle, "--pid-file", f"{bundle}/init.pid",
                            "c1"]
    assert (call["stdin"], call["stdout"]) == (r, w)
    assert call["fd_kinds"] == {"stdout": "other", "stderr": "null"}   # missing stderr -> /dev/null
    assert "NOTIFY_SOCKET" not in call["env"] and call["env"]["X"] == "1"
    assert call["env"]["PATH"] == os.environ["PATH"]


async def test_terminal_mode_captures_runtime_output(bundle):
    fake = FakeLauncher(lambda call: (_write_pid(call["argv"], 7), (0, b""))[1])
    await _backend(fake).create(CreateSpec("c1", bundle, f"{bundle}/init.pid", console_socket="/tmp/pty1/pty.sock"))
    (call,) = fake.calls
    assert (call["stdin"], call["stdout"], call["stderr"]) == (None, None, None)
    assert call["argv"][-3:] == ["--console-socket", "/tmp/pty1/pty.sock", "c1"]


async def test_null_fds_are_closed_after_the_call(bundle):
    seen = []
    fake = FakeLauncher(lambda call: (seen.extend([call["stdout"], call["stderr"]]),
                                      _write_pid(call["argv"], 9), (0, b""))[2])
    await _backend(fake).create(CreateSpec("c1", bundle, f"{bundle}/init.pid"))
    assert fake.calls[0]["fd_kinds"] == {"stdout": "null", "stderr": "null"}
    for fd in seen:
        with pytest.raises(OSError):
            os.fstat(fd)


async def test_create_error_comes_from_what_this_call_appended_to_log_json(bundle):
    _log_error(bundle, "stale error from an earlier call")
    fake = FakeLauncher(lambda call: (_log_error(bundle, 'exec: "nosuch": executable file not found in $PATH'),
                                      (1, b""))[1])
    with pytest.raises(RuntimeFailed) as info:
        await _backend(fake).create(CreateSpec("c1", bundle, f"{bundle}/init.pid"))
    assert str(info.value) == 'OCI runtime create failed: exec: "nosuch": executable file not found in $PATH'
    assert info.value.status == 1 and info.value.op == "create"


async def test_error_falls_back_to_output_then_exit_status(bundle):
    _log_error(bundle, "stale")
    fake = FakeLauncher(lambda call: (1, b"something broke\n"))
    with pytest.raises(RuntimeFailed, match="^OCI runtime start failed: /opt/fake/runc did not terminate "
                                            "successfully: exit status 1: something broke$"):
        await _backend(fake).start(ContainerRef("c1", bundle))
    fake.script = lambda call: (137, b"")
    with pytest.raises(RuntimeFailed, match="^OCI runtime pause failed: /opt/fake/runc did not terminate "
                                            "successfully: exit status 137$"):
        await _backend(fake).pause(ContainerRef("c1", bundle))


async def test_unreadable_log_is_reported(bundle):
    os.mkdir(os.path.join(bundle, "log.json"))
    fake = FakeLauncher(lambda call: (1, b"out"))
    with pytest.raises(RuntimeFailed, match=r"^OCI runtime resume failed: unable to retrieve OCI runtime error "
                                            r"\(.*Is a directory.*\): .* exit status 1: out$"):
        await _backend(fake).resume(ContainerRef("c1", bundle))


@pytest.mark.parametrize(("msg", "kind", "text"), [
    ("container not running", ProcessFinished, "process already finished"),
    ("container does not exist", ContainerNotFound, "no such container"),
    ("permission denied", RuntimeFailed, "unknown error after kill: permission denied"),
])
async def test_kill_errors_are_classified(bundle, msg, kind, text):
    fake = FakeLauncher(lambda call: (_log_error(bundle, msg), (1, msg.encode()))[1])
    with pytest.raises(kind) as info:
        await _backend(fake).kill(ContainerRef("c1", bundle), 9, all=True)
    assert str(info.value) == text
    assert fake.calls[0]["argv"][-4:] == ["kill", "--all", "c1", "9"]


async def test_delete_of_unknown_container(bundle):
    fake = FakeLauncher(lambda call: (_log_error(bundle, "container does not exist"), (1, b""))[1])
    with pytest.raises(ContainerNotFound, match="^failed to delete task: container does not exist$"):
        await _backend(fake).delete(ContainerRef("c1", bundle), force=False)
    fake.script = lambda call: (0, b"")
    await _backend(fake).delete(ContainerRef("c1", bundle), force=True)
    assert fake.calls[1]["argv"][-3:] == ["delete", "--force", "c1"]


async def test_exec_writes_a_private_process_file_and_removes_it(bundle, tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    process = json.dumps({"args": ["sh"], "cwd": "/", "terminal": False}).encode()
    fake = FakeLauncher(lambda call: (_write_pid(call["argv"], 77), (0, b""))[1])
    spec = ExecSpec("c1", "e1", bundle, process, f"{bundle}/e1.pid")
    assert await _backend(fake).exec(spec) == 77
    (call,) = fake.calls
    path = call["argv"][call["argv"].index("--process") + 1]
    assert os.path.dirname(path) == str(xdg) and os.path.basename(path).startswith("runc-process")
    assert call["process_json"] == process and call["process_mode"] == 0o600
    assert not os.path.exists(path)
    assert call["argv"][-4:] == ["--detach", "--pid-file", f"{bundle}/e1.pid", "c1"]
    fake.script = lambda call: (_log_error(bundle, "cannot exec in a stopped container"), (1, b""))[1]
    with pytest.raises(RuntimeFailed, match="^OCI runtime exec failed: cannot exec in a stopped container$"):
        await _backend(fake).exec(spec)
    assert os.listdir(xdg) == []


async def test_missing_or_bad_pid_file(bundle):
    fake = FakeLauncher()
    with pytest.raises(RuntimeFailed, match="^OCI runtime create failed: unable to read pid file"):
        await _backend(fake).create(CreateSpec("c1", bundle, f"{bundle}/init.pid"))
    with open(f"{bundle}/init.pid", "w") as f:
        f.write("-3")
    with pytest.raises(RuntimeFailed, match="invalid pid '-3'"):
        await _backend(fake).create(CreateSpec("c1", bundle, f"{bundle}/init.pid"))


async def test_state_parses_runc_and_runsc_output(bundle):
    runc_out = json.dumps({"ociVersion": "1.0.2-dev", "id": "c1", "pid": 9002, "status": "running",
                           "bundle": bundle, "rootfs": f"{bundle}/rootfs", "created": "2024-01-02T03:04:05Z",
                           "annotations": {"a": "b"}, "owner": ""}, indent=2).encode()
    fake = FakeLauncher(lambda call: (0, runc_out))
    st = await _backend(fake).state(ContainerRef("c1", bundle))
    assert (st.id, st.pid, st.status, st.bundle, st.rootfs, dict(st.annotations)) == (
        "c1", 9002, Status.RUNNING, bundle, f"{bundle}/rootfs", {"a": "b"})
    # runsc: pid -1 when stopped, no rootfs/created; a warning line before the JSON
    fake.script = lambda call: (0, b"level=warning msg=x\n" + json.dumps(
        {"ociVersion": "1.0.2-dev", "id": "c1", "status": "stopped", "pid": -1, "bundle": bundle}).encode())
    st = await _backend(fake, builtin.RUNSC).state(ContainerRef("c1", bundle))
    assert (st.pid, st.status, st.rootfs, st.created) == (0, Status.STOPPED, "", "")
    fake.script = lambda call: (0, b"no json here")
    with pytest.raises(RuntimeFailed, match="cannot parse the runtime's output"):
        await _backend(fake).state(ContainerRef("c1", bundle))


async def test_ps(bundle):
    fake = FakeLauncher(lambda call: (0, b"[10365,10384]\n"))
    assert await _backend(fake).ps(ContainerRef("c1", bundle)) == (10365, 10384)
    assert fake.calls[0]["argv"][-4:] == ["ps", "--format", "json", "c1"]
    fake.script = lambda call: (0, b"null\n")  # runc 1.1.5 for a stopped container
    assert await _backend(fake).ps(ContainerRef("c1", bundle)) == ()
    fake.script = lambda call: (0, b'["a"]')
    with pytest.raises(RuntimeFailed, match="unexpected pid list"):
        await _backend(fake).ps(ContainerRef("c1", bundle))


async def test_update_feeds_resources_on_stdin(bundle):
    fake = FakeLauncher()
    doc = b'{"pids":{"limit":100}}'
    await _backend(fake).update(ContainerRef("c1", bundle), doc)
    assert fake.calls[0]["stdin"] == doc
    assert fake.calls[0]["argv"][-4:] == ["update", "--resources", "-", "c1"]


async def test_unsupported_operations_run_nothing(bundle):
    fake = FakeLauncher()
    backend = _backend(fake, builtin.RUNSC)
    with pytest.raises(Unsupported):
        await backend.update(ContainerRef("c1", bundle), b"{}")
    with pytest.raises(Unsupported):
        await backend.create(CreateSpec("c1", bundle, f"{bundle}/init.pid", no_pivot=True))
    assert fake.calls == []


async def test_binary_is_resolved_on_path(bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(oci_cli, "_ENVIRONMENTS", {})  # the environment is made once per process
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "runc"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    fake = FakeLauncher()
    backend = OciCli(configure(builtin.RUNC, {}, "ns"), fake)
    await backend.start(ContainerRef("c1", bundle))
    assert fake.calls[0]["argv"][0] == str(exe)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.setattr(oci_cli, "_ENVIRONMENTS", {})  # as a process started with that PATH would see it
    with pytest.raises(RuntimeFailed, match='^OCI runtime start failed: exec: "runc": executable file not found '
                                            r'in \$PATH$'):
        await backend.start(ContainerRef("c1", bundle))


async def test_launch_failure_becomes_runtime_failed(bundle):
    class Failing:
        async def run(self, argv, **kw):
            raise PermissionError(13, "Permission denied")
    with pytest.raises(RuntimeFailed, match='^OCI runtime start failed: exec: "/opt/fake/runc": Permission denied$'):
        await _backend(Failing()).start(ContainerRef("c1", bundle))


async def test_checkpoint_failure_keeps_criu_log(bundle, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "dump.log").write_text("criu says no\n")

    def fail(call):
        _log_error(bundle, "criu failed: type NOTIFY errno 0\nlog file: /var/lib/criu/dump.log")
        return 1, b""
    spec = CheckpointSpec(CriuOptions(image_path=str(tmp_path / "img"), work_path=str(work)), leave_running=True)
    with pytest.raises(RuntimeFailed) as info:
        await _backend(FakeLauncher(fail)).checkpoint(ContainerRef("c1", bundle), spec)
    assert str(info.value) == (f"OCI runtime checkpoint failed: criu failed: type NOTIFY errno 0 "
                               f"path= {bundle}/criu-dump.log")
    assert open(f"{bundle}/criu-dump.log").read() == "criu says no\n"


async def test_restore(bundle, tmp_path):
    fake = FakeLauncher(lambda call: (_write_pid(call["argv"], 555), (0, b""))[1])
    spec = RestoreSpec("c1", bundle, f"{bundle}/init.pid", CriuOptions(str(tmp_path / "img")))
    assert await _backend(fake).restore(spec) == 555
    assert fake.calls[0]["argv"][-10:] == ["restore", "--image-path", str(tmp_path / "img"), "--detach",
                                           "--pid-file", f"{bundle}/init.pid", "-no-subreaper", "--bundle", bundle,
                                           "c1"]
    assert fake.calls[0]["fd_kinds"] == {"stdout": "null", "stderr": "null"}


def test_rewrite_spec_only_when_needed(tmp_path):
    import json

    from runtime.oci_cli import rewrite_spec

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"ociVersion": "1.0.2", "annotations": {
        "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "sb"}}))
    keys = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")
    assert rewrite_spec(str(path), keys) is True
    assert json.loads(path.read_text())["annotations"] == {"io.kubernetes.cri.sandbox-id": "sb"}
    before = path.stat().st_mtime_ns
    assert rewrite_spec(str(path), keys) is False and path.stat().st_mtime_ns == before
    assert rewrite_spec(str(path), keys, "1.1.0") is True
    assert json.loads(path.read_text())["ociVersion"] == "1.1.0"
    assert rewrite_spec(str(path), (), "1.1.0") is False
