"""start / delete / -info / -v: socket logic with a stand-in daemon program, real entry point runs, imports.

The stand-in daemon (FAKE_DAEMON) is spawned through the real ``spawn_daemon`` and reports what it inherited,
so the fd 3 / stdio / session / oom rules are checked on a real process. The real daemon is exercised by the
integration tests. Root is needed (sockets under a tmp dir are fine, but oom_score_adj, cgroups and mounts are
not); without it these tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.prereq import unavailable

from google.protobuf import any_pb2

from protos import bootstrap_pb2, introspection_pb2, runc_options_pb2, task_v2_pb2
from shim import address as addr
from shim.commands import bootstrap, start
from shim.runc.manager import MANAGER, shim_cgroup
from ttrpc import wire
from shim.flags import ShimFlags
from shim.linux.mount import Mount, mount_all, mounts_under, unmount_all
from shim.linux.mountinfo import cgroup_mounts

REPO = Path(__file__).resolve().parents[2]
FAKE_DAEMON = r"""
import json, os, socket, stat, sys
report = {"argv": sys.argv[1:], "cwd": os.getcwd(), "sid": os.getsid(0) == os.getpid(),
          "stdio": [os.path.realpath(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)],
          "fd3_is_socket": stat.S_ISSOCK(os.fstat(3).st_mode)}
listener = socket.socket(fileno=3)
report["listening"] = listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
with open("daemon-report.json.tmp", "w") as f:
    json.dump(report, f)
os.rename("daemon-report.json.tmp", "daemon-report.json")
while True:  # the liveness probe of a second start connects too
    conn, _ = listener.accept()
    try:
        conn.sendall(b"hello from the daemon")
    except OSError:
        pass
    conn.close()
"""


@pytest.fixture(autouse=True)
def need_root() -> None:
    if os.geteuid() != 0:
        unavailable("start/delete tests need root")


def run_shim(args: list[str], cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "shim", *args], cwd=cwd, input=stdin, capture_output=True,
                          env=env, timeout=30, check=False)


def make_bundle(path: Path, annotations: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "rootfs").mkdir()
    (path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "annotations": annotations or {}}))
    return path


def runc_options_any(**fields: object) -> bytes:
    value = runc_options_pb2.Options(**fields).SerializeToString()
    return wire.any_message("containerd.runc.v1.Options", value)


# -- imports --------------------------------------------------------------------------------------------

def test_critical_path_imports_only_the_standard_library() -> None:
    code = ("import shim.runc.main, shim.commands.start, shim.commands.delete, shim.commands.info, shim.runc.cleanup, "
            "shim.runc.features, shim.linux.mount, shim.linux.unmount; import sys; "
            "assert not any(m.startswith(('trio', 'google', 'protos')) for m in sys.modules), "
            "sorted(m for m in sys.modules if m.startswith(('trio', 'google', 'protos')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr.decode()


def test_start_and_delete_avoid_slow_stdlib_modules() -> None:
    """The slow stdlib imports (enum/re/inspect/...) stay off start and delete (record.py, stdlib_lite.py)."""
    code = ("import sys; before = set(sys.modules); import shim.runc.main, shim.commands.start, shim.commands.delete, "
            "shim.commands.info, shim.runc.cleanup, shim.runc.features; "
            "slow = {'enum', 're', 'dataclasses', 'inspect', 'typing', 'json', 'socket', 'signal', 'subprocess', "
            "'collections'}; "
            "loaded = (set(sys.modules) - before) & slow; assert not loaded, sorted(loaded)")
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.parametrize("args", [["-v"], ["-info"], ["-namespace", "ns", "-id", "c", "delete"]])
def test_actions_load_no_third_party_module(tmp_path: Path, args: list[str]) -> None:
    bundle = make_bundle(tmp_path / "b")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    traced = subprocess.run([sys.executable, "-X", "importtime", "-m", "shim", *args], cwd=bundle, env=env,
                            capture_output=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    assert traced.returncode == 0, traced.stderr
    modules = [line.rsplit("|", 1)[-1].strip() for line in traced.stderr.decode().splitlines()
               if line.startswith("import time:")]
    assert "shim.commands.run" in modules and "shim.runc.manager" in modules
    assert not [m for m in modules if m.startswith(("trio", "google", "protos"))]


# -- socket logic ---------------------------------------------------------------------------------------

def test_bind_creates_a_private_listening_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "s" / "abc")
    sock = addr.bind_or_reuse(path)
    assert sock is not None
    try:
        assert os.stat(tmp_path / "s").st_mode & 0o777 == 0o700
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert addr.is_alive(path)
        assert addr.bind_or_reuse(path) is None  # live: reuse
    finally:
        sock.close()


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "stale")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens
    assert not addr.is_alive(path)
    sock = addr.bind_or_reuse(path)
    assert sock is not None
    sock.close()


def test_full_backlog_counts_as_alive(tmp_path: Path) -> None:
    path = str(tmp_path / "busy")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(0)
    clients = []
    try:
        while True:
            c = socket.socket(socket.AF_UNIX)
            c.setblocking(False)
            clients.append(c)
            try:
                c.connect(path)
            except BlockingIOError:
                break
        assert addr.is_alive(path)
        assert addr.bind_or_reuse(path) is None
    finally:
        for c in clients:
            c.close()
        server.close()


def test_concurrent_starts_settle_on_one_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "s" / "group")
    results: list[socket.socket | None] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        results.append(addr.bind_or_reuse(path))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [s for s in results if s is not None]
    assert len(results) == 8 and len(winners) == 1
    winners[0].close()


# -- start with a stand-in daemon -----------------------------------------------------------------------

@pytest.fixture
def socket_dir():
    """A short directory for sockets (tmp_path is too long for sun_path once 64 hex digits are added)."""
    parent = tempfile.mkdtemp(prefix="pys")
    yield os.path.join(parent, "s")
    shutil.rmtree(parent)


@pytest.fixture
def fake_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    script = tmp_path / "fake_daemon.py"
    script.write_text(FAKE_DAEMON)
    monkeypatch.setenv("PYSHIM_FORKSERVER", "off")  # the stand-in must be spawned, not forked
    monkeypatch.setattr(start, "daemon_program", lambda: [sys.executable, str(script)])
    spawned: list[int] = []
    real_spawn = start.spawn_daemon

    def recording_spawn(manager, flags: ShimFlags, listen_sock: socket.socket, forkserver: bool = True) -> int:
        spawned.append(real_spawn(manager, flags, listen_sock, forkserver))
        return spawned[-1]

    monkeypatch.setattr(start, "spawn_daemon", recording_spawn)
    yield spawned
    for pid in spawned:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def wait_for(path: Path) -> dict:
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    return json.loads(path.read_text())


def test_start_spawns_the_daemon_and_reuses_it_for_the_group(
        tmp_path: Path, socket_dir: str, fake_daemon: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    group = {"io.kubernetes.cri.sandbox-id": "pod1"}
    first = make_bundle(tmp_path / "pod1", group)
    flags = ShimFlags(namespace="k8s.io", id="pod1", address="/run/ctrd.sock", debug=True, action="start")
    monkeypatch.chdir(first)
    address = start.start(MANAGER, flags, (), socket_dir=socket_dir)
    assert address == addr.socket_address("/run/ctrd.sock", "k8s.io", "pod1", socket_dir)
    assert (first / "address").read_bytes() == address.encode()
    report = wait_for(first / "daemon-report.json")
    assert report == {"argv": ["-namespace", "k8s.io", "-id", "pod1", "-address", "/run/ctrd.sock", "-debug"],
                      "cwd": str(first), "sid": True, "stdio": ["/dev/null"] * 3, "fd3_is_socket": True,
                      "listening": True}
    with open(f"/proc/{os.getppid()}/oom_score_adj") as f:
        expected = min(1000, int(f.read()) + 1)
    with open(f"/proc/{fake_daemon[0]}/oom_score_adj") as f:
        assert int(f.read()) == expected

    second = make_bundle(tmp_path / "app1", group)
    monkeypatch.chdir(second)
    assert start.start(MANAGER, ShimFlags(namespace="k8s.io", id="app1", address="/run/ctrd.sock"), (),
                       socket_dir=socket_dir) == address
    assert (second / "address").read_bytes() == address.encode()
    assert len(fake_daemon) == 1  # no second daemon
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(addr.socket_path(address))
        assert client.recv(100) == b"hello from the daemon"


def test_start_moves_the_daemon_into_shim_cgroup(
        tmp_path: Path, socket_dir: str, fake_daemon: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    mounts = {m.fstype: m.point for m in cgroup_mounts()}
    hierarchy = "/sys/fs/cgroup" if mounts.get("cgroup2") == "/sys/fs/cgroup" else mounts.get("cgroup")
    if hierarchy is None:
        unavailable("no cgroup hierarchy mounted")
    name = f"pyshim-test-{os.getpid()}"
    os.mkdir(os.path.join(hierarchy, name))
    try:
        bundle = make_bundle(tmp_path / "c1")
        monkeypatch.chdir(bundle)
        start.start(MANAGER, ShimFlags(namespace="ns", id="c1", address="/a.sock"),
                    (runc_options_any(shim_cgroup=name),), socket_dir=socket_dir)
        with open(f"/proc/{fake_daemon[0]}/cgroup") as f:
            assert f"/{name}\n" in f.read()
    finally:
        for pid in fake_daemon:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        fake_daemon.clear()
        os.rmdir(os.path.join(hierarchy, name))


def test_failure_after_spawn_kills_the_daemon_and_cleans_up(
        tmp_path: Path, socket_dir: str, fake_daemon: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = make_bundle(tmp_path / "c1")
    monkeypatch.chdir(bundle)
    flags = ShimFlags(namespace="ns", id="c1", address="/a.sock")
    with pytest.raises(OSError, match="no such cgroup"):
        start.start(MANAGER, flags, (runc_options_any(shim_cgroup="/does/not/exist"),), socket_dir=socket_dir)
    assert len(fake_daemon) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(fake_daemon[0], os.WNOHANG)  # killed and reaped
    assert os.listdir(socket_dir) == []
    assert not (bundle / "address").exists()


def test_undecodable_options_fail_before_spawning(
        tmp_path: Path, socket_dir: str, fake_daemon: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = make_bundle(tmp_path / "c1")
    monkeypatch.chdir(bundle)
    with pytest.raises(start.StartError, match="cannot decode the runtime options"):
        start.start(MANAGER, ShimFlags(namespace="ns", id="c1", address="/a.sock"), (b"\x0a\x50",),
                    socket_dir=socket_dir)
    assert fake_daemon == [] and os.listdir(socket_dir) == []


def bootstrap_params_bytes(instance_id: str, namespace: str, socket_dir: str | None, *extensions: bytes) -> bytes:
    params = bootstrap_pb2.BootstrapParams(
        instance_id=instance_id, namespace=namespace, log_level=bootstrap_pb2.LOG_LEVEL_DEBUG,
        containerd_version="2.4.2", containerd_ttrpc_address="/run/containerd/containerd.sock.ttrpc",
        containerd_grpc_address="/run/containerd/containerd.sock", containerd_binary="/usr/bin/containerd",
        extensions=[bootstrap_pb2.Extension(value=any_pb2.Any.FromString(e)) for e in extensions])
    if socket_dir is not None:
        params.socket_dir = socket_dir
    return params.SerializeToString()


def test_bootstrap_params_are_recognised_like_upstream() -> None:
    flags = ShimFlags(namespace="k8s.io", id="c1", action="start")
    runc = runc_options_any(shim_cgroup="/pods/x")
    other = wire.any_message("runtimeoptions.v1.Options", b"")
    params = bootstrap.params(bootstrap_params_bytes("c1", "k8s.io", "/run/ctrd/s", other, runc), "c1", "k8s.io")
    assert params == bootstrap.Bootstrap(options=(other, runc), socket_dir="/run/ctrd/s")
    assert bootstrap.params(bootstrap_params_bytes("c1", "k8s.io", None), "c1", "k8s.io") == bootstrap.Bootstrap()
    for stdin in (b"", runc, bootstrap_params_bytes("c2", "k8s.io", None), bootstrap_params_bytes("c1", "x", None),
                  b"\xff\xff"):
        assert bootstrap.params(stdin, flags.id, flags.namespace) is None
    # A legacy Any decodes as BootstrapParams too (type_url -> instance_id, value -> namespace): the id check
    # is what tells them apart.
    assert bootstrap.params(wire.any_message("c1", b"k8s.io"), flags.id, flags.namespace) is not None


def test_bootstrap_result_decodes_and_does_not_end_in_whitespace() -> None:
    data = bootstrap.result("unix:///run/containerd/s/abc")
    result = bootstrap_pb2.BootstrapResult.FromString(data)
    assert (result.version, result.address, result.protocol) == (3, "unix:///run/containerd/s/abc", "ttrpc")
    assert data == data.rstrip()


def test_start_answers_a_bootstrap_handshake_in_kind(
        tmp_path: Path, socket_dir: str, fake_daemon: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = make_bundle(tmp_path / "c1")
    monkeypatch.chdir(bundle)
    flags = ShimFlags(namespace="ns", id="c1", address="/run/ctrd.sock", action="start")
    output = start.run(MANAGER, flags, bootstrap_params_bytes("c1", "ns", socket_dir))
    result = bootstrap_pb2.BootstrapResult.FromString(output)
    assert result.address == addr.socket_address("/run/ctrd.sock", "ns", "c1", socket_dir)
    assert (result.version, result.protocol) == (3, "ttrpc") and len(fake_daemon) == 1
    assert (bundle / "address").read_bytes() == result.address.encode()


def test_start_entry_point_errors_go_to_stderr(tmp_path: Path) -> None:
    done = run_shim(["-namespace", "ns", "-id", "c1", "-address", str(tmp_path / "a.sock"), "start"], tmp_path)
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.startswith(b"io.containerd.pyshim.v1: start: ") and b"config.json" in done.stderr


# -- delete ---------------------------------------------------------------------------------------------

def decode_delete(stdout: bytes) -> task_v2_pb2.DeleteResponse:
    response = task_v2_pb2.DeleteResponse.FromString(stdout)
    assert response.exit_status == 137 and abs(response.exited_at.seconds - time.time()) < 60
    return response


def test_delete_unmounts_rootfs_and_reports_the_init_pid(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "c1")
    (bundle / "init.pid").write_text("4242")
    try:
        mount_all([Mount("tmpfs", "tmpfs", options=("size=1m",))], str(bundle / "rootfs"))
        (bundle / "rootfs" / "proc").mkdir()
        mount_all([Mount("tmpfs", "tmpfs", options=("size=1m",))], str(bundle / "rootfs" / "proc"))
        args = ["-namespace", "pyshim-test-none", "-id", "c1", "-address", "/a.sock", "-bundle", str(bundle),
                "delete"]
        done = run_shim(args, tmp_path)
        assert (done.returncode, done.stderr) == (0, b"")
        assert decode_delete(done.stdout).pid == 4242
        assert mounts_under(str(bundle / "rootfs")) == []
        (bundle / "init.pid").unlink()
        again = run_shim(args, tmp_path)  # idempotent; no pid file -> pid 0
        assert (again.returncode, again.stderr) == (0, b"")
        assert decode_delete(again.stdout).pid == 0
    finally:
        unmount_all(str(bundle / "rootfs"))


def fake_runtime(tmp_path: Path, status: int) -> Path:
    script = tmp_path / "fake-runtime"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/calls"\necho "boom" >&2\nexit {status}\n')
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("status", [0, 1])
def test_delete_calls_the_runtime_only_when_it_has_state(tmp_path: Path, status: int) -> None:
    bundle = make_bundle(tmp_path / "c1")
    binary, root = fake_runtime(tmp_path, status), tmp_path / "state"
    (bundle / "pyshim.json").write_text(json.dumps({"runtime": {
        "binary": str(binary), "root": str(root), "global_args": ["--systemd-cgroup"]}}))
    args = ["-namespace", "ns", "-id", "c1", "-bundle", str(bundle), "delete"]
    done = run_shim(args, tmp_path)
    assert (done.returncode, done.stderr) == (0, b"") and not (tmp_path / "calls").exists()
    (root / "c1").mkdir(parents=True)
    done = run_shim(args, tmp_path)
    assert done.returncode == 0
    decode_delete(done.stdout)
    assert (tmp_path / "calls").read_text() == f"--root {root} --systemd-cgroup delete --force c1\n"
    assert (b"boom" in done.stderr) == bool(status)


def test_delete_kills_a_hung_runtime_with_its_process_group(tmp_path: Path) -> None:
    """A runtime ``delete --force`` that hangs in a child of its own is killed with that child at the deadline."""
    from shim.runc import cleanup

    script = tmp_path / "hung-runtime"
    script.write_text(f'#!/bin/sh\nsleep 300 &\necho $! > "{tmp_path}/child"\nwait\n')
    script.chmod(0o755)
    began = time.monotonic()
    problem = cleanup.runtime_delete(cleanup.RuntimeConfig(str(script), str(tmp_path)), "c1", timeout=0.5)
    assert problem == f"{script} --root {tmp_path} delete --force c1: killed after 0.5 s"
    assert time.monotonic() - began < 2
    child = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:  # reparented to init, which reaps it
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{child}"), "the runtime's child outlived the killed runtime"


def test_delete_kills_the_runtime_calls_a_dead_daemon_left(tmp_path: Path) -> None:
    """A daemon SIGKILLed during a runtime call leaves that command running: delete kills it with its process
    group before the force-delete, and spares calls for other containers."""
    bundle = make_bundle(tmp_path / "c1")
    binary, root = tmp_path / "hung-runtime", tmp_path / "state"
    binary.write_text(f'#!/bin/sh\ncase "$*" in *"delete --force"*) exit 0 ;; esac\n'
                      f'sleep 300 &\necho $! > "{tmp_path}/child-$$"\nwait\n')
    binary.chmod(0o755)
    (root / "c1").mkdir(parents=True)
    (bundle / "pyshim.json").write_text(json.dumps({"runtime": {"binary": str(binary), "root": str(root)}}))
    left = [subprocess.Popen([str(binary), "--root", str(root), "--log", f"{bundle}/log.json", *argv],
                             process_group=0) for argv in (["exec", "--detach", "c1"], ["kill", "c2", "9"])]
    try:
        for p in left:
            while not (tmp_path / f"child-{p.pid}").exists():
                time.sleep(0.01)
        done = run_shim(["-namespace", "ns", "-id", "c1", "-bundle", str(bundle), "delete"], tmp_path)
        assert done.returncode == 0
        assert f"killed runtime commands a dead shim left running: [{left[0].pid}]".encode() in done.stderr
        assert left[0].wait(timeout=5) == -signal.SIGKILL and left[1].poll() is None
        child = int((tmp_path / f"child-{left[0].pid}").read_text())
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:  # init reaps it
            time.sleep(0.02)
        assert not os.path.exists(f"/proc/{child}"), "the killed command's child lived on"
    finally:
        for p in left:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_delete_with_unusable_config_warns_and_uses_defaults(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "c1")
    (bundle / "pyshim.json").write_text("{not json")
    done = run_shim(["-namespace", "pyshim-test-none", "-id", "c1", "-bundle", str(bundle), "delete"], tmp_path)
    assert done.returncode == 0 and b"assuming runc defaults" in done.stderr
    decode_delete(done.stdout)


# -- main -----------------------------------------------------------------------------------------------

def test_version_and_namespace_rules(tmp_path: Path) -> None:
    version = run_shim(["-v"], tmp_path)
    assert version.returncode == 0 and b"Version:  0." in version.stdout and b"Python version" in version.stdout
    missing = run_shim(["-id", "c1", "start"], tmp_path)
    assert missing.returncode == 1 and b"shim namespace cannot be empty" in missing.stderr
    unknown = run_shim(["-namespace", "ns", "-future", "value", "start"], tmp_path)
    assert unknown.returncode == 1 and b"unknown action 'value'" in unknown.stderr
    bad = run_shim(["-namespace"], tmp_path)
    assert bad.returncode == 2 and b"flag needs an argument" in bad.stderr


def test_daemon_without_a_listener_refuses(tmp_path: Path) -> None:
    done = run_shim(["-namespace", "ns", "-id", "c1", "-address", "/a.sock"], tmp_path)
    assert done.returncode == 1 and b"fd 3 is not a socket" in done.stderr


def test_info_reports_runtime_features_and_echoes_options(tmp_path: Path) -> None:
    features = {"ociVersionMin": "1.0.0", "linux": {"mountExtensions": {"idmap": {"enabled": True}}}}
    runtime = tmp_path / "my-runtime"
    runtime.write_text(f"#!/bin/sh\n[ \"$1\" = features ] && echo '{json.dumps(features)}'\n")
    runtime.chmod(0o755)
    options = runc_options_any(binary_name=str(runtime))
    done = run_shim(["-info"], tmp_path, stdin=options)
    assert done.returncode == 0, done.stderr
    info = introspection_pb2.RuntimeInfo.FromString(done.stdout)
    assert info.name == "io.containerd.pyshim.v1" and info.version.version
    assert info.options.SerializeToString() == options
    assert info.features.type_url == "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    assert json.loads(info.features.value) == features

    runtime.write_text("#!/bin/sh\necho 'unknown command' >&2\nexit 1\n")
    without = introspection_pb2.RuntimeInfo.FromString(run_shim(["-info"], tmp_path, stdin=options).stdout)
    assert not without.HasField("features")
    broken = run_shim(["-info"], tmp_path, stdin=b"\x0a\x50")
    assert broken.returncode == 1 and broken.stdout == b"" and b"-info" in broken.stderr


def test_spawn_daemon_asks_the_fork_server_first_and_falls_back(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from shim.forkserver import client as forkserver_client

    asked: list = []
    done: list[str] = []
    answer = [(4242, "")]
    monkeypatch.setattr(forkserver_client, "request_daemon",
                        lambda location, req, fd: asked.append((location, req, fd)) or answer[0])
    monkeypatch.setattr(forkserver_client, "revive", lambda location, env: done.append("revive") or 0)
    monkeypatch.setattr(start, "spawn_fresh", lambda *args: done.append("fresh") or 99)
    monkeypatch.setenv("PYSHIM_FORKSERVER_DIR", str(tmp_path))
    monkeypatch.setenv("FS_MARK", "x=y")
    monkeypatch.delenv("PYSHIM_FORKSERVER", raising=False)
    monkeypatch.chdir(tmp_path)
    flags = ShimFlags(namespace="ns", id="c1", address="/a.sock", debug=True)
    with socket.socket(socket.AF_UNIX) as listener:
        assert start.spawn_daemon(MANAGER, flags, listener) == 4242 and done == []
        location, req, fd = asked[0]
        assert location.directory == str(tmp_path) and fd == listener.fileno()
        assert req.argv == ("-namespace", "ns", "-id", "c1", "-address", "/a.sock", "-debug")
        assert req.cwd == os.fsencode(str(tmp_path)) and b"FS_MARK=x=y" in req.env
        program = start.daemon_program()
        assert req.program == tuple(start.fresh_command_line(program))
        assert req.comm == os.path.basename(program[0])

        answer[0] = (0, "fork server unavailable: ENOENT")
        assert start.spawn_daemon(MANAGER, flags, listener) == 99 and done == ["fresh", "revive"]

        monkeypatch.setenv("PYSHIM_FORKSERVER", "off")
        done.clear()
        asked.clear()
        assert start.spawn_daemon(MANAGER, flags, listener) == 99 and done == ["fresh"] and asked == []


def test_shim_cgroup_from_runc_options_and_legacy_create_options() -> None:
    from protos import runctypes_pb2

    assert shim_cgroup(runc_options_any(shim_cgroup="/a")) == "/a"
    legacy = wire.any_message("containerd.linux.runc.CreateOptions",
                              runctypes_pb2.CreateOptions(shim_cgroup="/b", io_uid=7).SerializeToString())
    assert shim_cgroup(legacy) == "/b"   # what 1.6/1.7 clients send for io.containerd.pyshim.v1
    assert shim_cgroup(wire.any_message("runtimeoptions.v1.Options", b"\x12\x02/c")) == ""
    assert shim_cgroup(b"") == ""
