"""Security properties of docs/security.md with real processes: a real daemon answers no other user even when
its socket file lets one in; and a container run by a real containerd, pyshim and runc.v2 side by side: the
runtime's environment, the shim's socket and the files in the bundle.

Each test fails when its property is broken (checked against a copy of the code with the check removed).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from protos import task_v2_pb2, ttrpc_pb2
from ttrpc.codec import encode_frame

from .conftest import new_id
from .e2e_helpers import PYSHIM, runtime, running  # noqa: F401
from .forkserver_helpers import BASE, connect, shutdown, wait_for
from .harness import procs

REPO = Path(__file__).resolve().parents[2]

# Connects, sends one ttrpc request, prints what came back (nothing: closed unanswered). Runs as uid 65534 with
# the standard library only (-I: nothing of this tree is importable for that user anyway).
IMPOSTOR = r"""
import socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.settimeout(10)
sock.connect(sys.argv[1])
try:
    sock.sendall(bytes.fromhex(sys.argv[2]))
    print(len(sock.recv(65536)))
except (BrokenPipeError, ConnectionResetError):  # closed unread, maybe before we were done sending
    print(0)
"""


def connect_request() -> bytes:
    request = ttrpc_pb2.Request(service="containerd.task.v2.Task", method="Connect",
                                payload=task_v2_pb2.ConnectRequest(id="x").SerializeToString())
    return encode_frame(1, 1, request.SerializeToString())


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_daemon_answers_no_other_user(integration_host, tmp_path: Path) -> None:
    """The ttrpc server's SO_PEERCRED check (same uid and gid), on the daemon pyshim really runs."""
    directory = Path(tempfile.mkdtemp(prefix="sec-", dir=BASE))  # short: sun_path
    path = directory / "s"
    (tmp_path / "log").touch()  # the bundle's log FIFO, as a file
    env = dict(os.environ, PYTHONPATH=str(REPO))
    daemon = subprocess.Popen([sys.executable, "-m", "shim", "-namespace", "sec", "-id", "peer", "-address",
                               str(directory / "none.sock"), "-socket", str(path)], cwd=tmp_path, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("the daemon to listen", lambda: path.exists() and procs.alive(daemon.pid), 30)
        assert connect(str(path)).shim_pid == daemon.pid
        assert mode(path) == 0o600 and mode(directory) == 0o700  # the first fence ...
        os.chmod(directory, 0o711)  # ... opened, to reach the second
        os.chmod(path, 0o666)
        seen = subprocess.run([sys.executable, "-I", "-c", IMPOSTOR, str(path), connect_request().hex()],
                              user=65534, group=65534, extra_groups=[], capture_output=True, text=True, timeout=30)
        assert (seen.returncode, seen.stdout) == (0, "0\n"), seen
        assert "refusing connection: credential check failed" in (tmp_path / "log").read_text()
        assert connect(str(path)).shim_pid == daemon.pid  # root still is answered
    finally:
        shutdown(str(path))
        try:
            daemon.wait(timeout=30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
            for leftover in directory.iterdir():
                leftover.unlink()
            directory.rmdir()


# A "runc" that records its environment, then runs the real one.
RECORDER = """#!{python} -I
import json, os, sys
with open(os.path.join({out!r}, "%d.json" % os.getpid()), "w") as f:
    json.dump({{"argv": sys.argv, "env": dict(os.environ)}}, f)
os.execv({runc!r}, [{runc!r}, *sys.argv[1:]])
"""
SHIM_ONLY = {"TTRPC_ADDRESS", "GRPC_ADDRESS", "NAMESPACE", "MAX_SHIM_VERSION", "NOTIFY_SOCKET", "SCHED_CORE"}


def test_the_runtime_socket_and_bundle_of_a_real_container(containerd, runtime, busybox_rootfs, tmp_path: Path):
    """pyshim: the runtime gets no variable of the shim's own (runc.v2 passes containerd's TTRPC_ADDRESS and
    the rest: docs/differences.md); both: the shim's socket is a 0600 path socket in a private directory, and
    nothing in the bundle is writable by others."""
    runc = shutil.which("runc")
    out = tmp_path / "calls"
    out.mkdir()
    recorder = tmp_path / "runc-recorder"
    recorder.write_text(RECORDER.format(python=sys.executable, out=str(out), runc=runc))
    recorder.chmod(0o755)
    if runtime == PYSHIM:
        cfg = tmp_path / "pyshim.toml"
        cfg.write_text(f'[backends.runc]\nbinary_name = "{recorder}"\n')
        extra = ("--runtime-config-path", str(cfg))
    else:
        extra = ("--runc-binary", str(recorder))
    cid = new_id("sec")
    with running(containerd, runtime, cid, busybox_rootfs, "/bin/sleep", "600", extra=extra):
        calls = [json.loads(p.read_text()) for p in sorted(out.iterdir())]
        assert any("create" in c["argv"] for c in calls), [c["argv"] for c in calls]
        for call in calls:
            env = call["env"]
            assert env.get("PATH"), call["argv"]
            leaked = sorted(k for k in env if k in SHIM_ONLY or k.startswith("PYSHIM_"))
            if runtime == PYSHIM:
                assert leaked == [], call["argv"]
            else:  # the reference passes containerd's shim variables on (kept here to prove the difference)
                assert "TTRPC_ADDRESS" in leaked, leaked
        address, _ = containerd.shim_endpoint(cid)
        assert address.startswith("unix:///"), address  # a path, never an abstract socket (CVE-2020-15257)
        socket_path = Path(address[len("unix://"):])
        assert stat.S_ISSOCK(os.stat(socket_path).st_mode) and mode(socket_path) == 0o600
        assert os.stat(socket_path.parent).st_uid == 0 and mode(socket_path.parent) & 0o077 == 0
        bundle = containerd.bundle(cid)
        written = {p.name: mode(p) for p in bundle.iterdir() if p.is_file() and not p.is_symlink()}
        assert {name: m for name, m in written.items() if m & 0o022} == {}, written
        if runtime == PYSHIM:
            assert written["pyshim.json"] == 0o600
