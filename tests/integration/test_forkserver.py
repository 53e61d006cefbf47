"""The fork server as processes, without containerd: a real server and zygotes for this tree's code, real
daemons answering ttrpc, requests from processes with their own cgroup, limits, umask and nice value.

Rules: every server runs in a private directory (forkserver_helpers.private_dir) and is stopped at the end,
which also checks its zygotes are gone; daemons are shut down through ttrpc and their exit awaited.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from shim.forkserver import server as forkserver
from shim.forkserver import client
from shim.forkserver import protocol as proto
from shim.forkserver import zygote
from shim.runc.manager import MANAGER
from tests.prereq import unavailable

from .forkserver_helpers import BASE, FsDir, connect, daemon_request, private_dir, shutdown, start_server, wait_for
from .harness import procs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fs(integration_host):
    """(FsDir, our Popen children); daemons the server's log names are killed at the end if still alive."""
    d = FsDir(private_dir())
    children: list[subprocess.Popen] = []
    yield d, children
    problems = d.stop()
    for child in children:
        child.wait(timeout=30)
    left = [pid for pid in d.daemons() if procs.alive(pid)]
    for pid in left:
        os.kill(pid, 9)
    d.remove()
    assert not problems and not left, (problems, left)


def orphan_reaper() -> int:
    """Who adopts an orphan of ours: init, or the nearest subreaper."""
    out = subprocess.run(["sh", "-c", "sleep 30 & echo $!"], capture_output=True, text=True, check=True)
    pid = int(out.stdout)
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split("PPid:\t")[1].split()[0])
    finally:
        os.kill(pid, 9)


def serve(fs, root: str = str(REPO)) -> tuple[FsDir, proto.Location, int]:
    d, children = fs
    children.append(start_server(d.directory, root))
    pid = d.wait_serving(zygotes=forkserver.POOL)  # a full pool: tests compare zygote sets
    ref = MANAGER.forkserver
    return d, proto.Location(str(d.directory), proto.key(sys.executable, root, ref), ref), pid


def bundle(tmp_path: Path, name: str) -> Path:
    b = tmp_path / name
    b.mkdir()
    (b / "log").touch()  # a regular file instead of containerd's FIFO: the daemon logs into it
    return b


def listening(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen(16)
    return s


def stop_daemon(path: str, pid: int) -> None:
    shutdown(path)
    wait_for(f"daemon {pid} to exit", lambda: not procs.alive(pid), 30)


REQUESTER = """
import json, os, resource, socket, sys
sys.path.insert(0, {repo!r})
from shim.forkserver import client as forkserver_client
from shim.forkserver import protocol as proto
directory, key, cgroup_procs, sock_path, cwd = sys.argv[1:6]
if cgroup_procs:
    with open(cgroup_procs, "w") as f:
        f.write(str(os.getpid()))
os.umask(0o027)
os.nice(3)
resource.setrlimit(resource.RLIMIT_NOFILE, (777, 777))
os.environ["FS_TEST_MARK"] = "yes"
listener = socket.socket(socket.AF_UNIX)
listener.bind(sock_path)
listener.listen(16)
req = proto.Request(argv=("-namespace", "fs-test", "-id", "attrs", "-address", "/run/pyshim-test/none.sock"),
                    env=tuple(os.fsencode(k) + b"=" + os.fsencode(v) for k, v in os.environ.items()),
                    cwd=os.fsencode(cwd), umask=0o027, program=(sys.executable, "-m", "shim"))
location = proto.Location(directory, key, "shim.runc.manager:MANAGER")
pid, why = forkserver_client.request_daemon(location, req, listener.fileno())
print(json.dumps({{"pid": pid, "why": why, "cgroup": open("/proc/self/cgroup").read(), "me": os.getpid()}}))
"""


def test_a_daemon_is_forked_with_the_requesters_attributes(fs, tmp_path: Path) -> None:
    d, location, server = serve(fs)
    pool_before = set(d.zygotes())
    cgroup = fresh_cgroup()
    sock_path = tmp_path / "d.sock"
    cwd = bundle(tmp_path, "attrs")
    pid = 0
    try:
        out = subprocess.run([sys.executable, "-c", REQUESTER.format(repo=str(REPO)), str(d.directory), location.key,
                              str(cgroup / "cgroup.procs"), str(sock_path), str(cwd)],
                             capture_output=True, text=True, timeout=60, check=True)
        got = json.loads(out.stdout)
        pid = got["pid"]
        assert pid and not got["why"], got
        assert pid in pool_before  # a zygote, forked before the request, became the daemon
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":\t" in line)
        assert status["Umask"].strip() == "0027"
        assert int(status["PPid"]) == orphan_reaper() not in (server, got["me"])
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[16]) == os.getpriority(os.PRIO_PROCESS, 0) + 3  # nice, field 19
        assert int(stat[3]) == pid  # session leader (field 6, session id)
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert [line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files")] == \
            [["777", "777"]]
        assert Path(f"/proc/{pid}/cgroup").read_text() == got["cgroup"]
        argv = procs.Proc(pid, tuple(a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a))
        assert argv.argv == (sys.executable, "-m", "shim", "-namespace", "fs-test", "-id", "attrs", "-address",
                             "/run/pyshim-test/none.sock")
        assert Path(f"/proc/{pid}/comm").read_text().strip() == os.path.basename(sys.executable)[:15]
        fds = {int(n): os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
        assert [fds[0], fds[1], fds[2]] == ["/dev/null", "/dev/null", str(cwd / "log")]  # the daemon's own log
        assert fds[3].startswith("socket:")
        assert Path(f"/proc/{pid}/cwd").resolve() == cwd

        assert connect(str(sock_path)).shim_pid == pid
        assert f"daemon {pid} fs-test attrs" in d.log()
        log = (cwd / "log").read_text()
        assert "starting io.containerd.pyshim.v1 daemon" in log and "TTRPC_ADDRESS is empty" in log  # the requester had none
        stop_daemon(str(sock_path), pid)
        wait_for("the pool to be refilled", lambda: len(d.zygotes()) == 2 and set(d.zygotes()) != pool_before)
    finally:
        if pid and procs.alive(pid):
            os.kill(pid, 9)
        wait_for("the test cgroup to empty", lambda: not (cgroup / "cgroup.procs").read_text().strip(), 30)
        cgroup.rmdir()


def test_code_change_restarts_the_server(fs, tmp_path: Path) -> None:
    root = tmp_path / "code"
    for package in ("shim", "ttrpc", "runtime", "protos"):
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    d, location, server = serve(fs, str(root))
    listener = listening(tmp_path / "a.sock")
    cwd = bundle(tmp_path, "a")

    os.utime(root / "shim" / "flags.py")  # as an upgrade would: a file of ours changes
    pid, why = client.request_daemon(location, daemon_request("a", cwd), listener.fileno())
    assert (pid, why) == (0, zygote.CODE_CHANGED)
    wait_for("the restart", lambda: "restarting: installed code changed" in d.log(), 30)
    assert d.wait_serving(zygotes=forkserver.POOL) == server  # re-executed in place
    pid, why = client.request_daemon(location, daemon_request("a", cwd), listener.fileno())
    assert pid and not why
    stop_daemon(str(tmp_path / "a.sock"), pid)

    restarts = d.log().count("restarting:")
    (root / "runtime" / "new_plugin.py").write_text("")  # a new module: the timer's full check sees the directory
    os.utime(root / "runtime" / "base.py")
    wait_for("the timer's restart", lambda: d.log().count("restarting:") > restarts, 30)
    d.wait_serving()


def test_non_root_peers_get_no_daemon(fs, tmp_path: Path) -> None:
    d, location, _ = serve(fs)
    for directory in (BASE, d.directory):  # let an unprivileged process reach the socket at all (test only)
        os.chmod(directory, os.stat(directory).st_mode | 0o111)
    os.chmod(location.path("sock"), 0o666)
    pool = set(d.zygotes())
    listener = listening(tmp_path / "n.sock")
    req = daemon_request("n", bundle(tmp_path, "n"))
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            # sent raw: our own client would not even ask a server of another uid (client.request_daemon)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            sock.settimeout(10)
            try:
                sock.connect(location.path("sock"))
                socket.send_fds(sock, [proto.encode_request(req)], [listener.fileno()])
                data = sock.recv(4096)
                why = f"answered with {len(data)} bytes" if data else "closed unanswered"
            except OSError as exc:
                why = str(exc)
            os.write(writer, why.encode())
        finally:
            os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    with os.fdopen(reader) as f:
        why = f.read()
    # dropped unread: the peer sees a reset, or a broken pipe if it was not done sending
    assert "Connection reset" in why or "Broken pipe" in why or why == "closed unanswered", why
    assert set(d.zygotes()) == pool and d.daemons() == {}
    assert "fs-test" not in d.log()
    pid, why = client.request_daemon(location, req, listener.fileno())  # root still gets one
    assert pid and not why
    stop_daemon(str(tmp_path / "n.sock"), pid)


def test_the_servers_files_are_private(fs) -> None:
    """0600 files in a 0700 directory, which the server tightens if it finds it open (docs/security.md)."""
    d, children = fs
    os.chmod(d.directory, 0o755)
    children.append(start_server(d.directory, str(REPO)))
    d.wait_serving()
    assert stat.S_IMODE(os.stat(d.directory).st_mode) == 0o700
    files = {p.suffix: stat.S_IMODE(p.stat().st_mode) for p in d.directory.iterdir()}
    assert files == {".sock": 0o600, ".lock": 0o600, ".pid": 0o600, ".log": 0o600}, files


def test_the_server_leaves_with_its_socket_file_and_on_sigterm(fs) -> None:
    d, location, server = serve(fs)
    os.unlink(location.path("sock"))
    wait_for("the server to notice", lambda: not d.servers() and not d.zygotes(), 30)
    assert "socket file removed or replaced: exiting" in d.log()
    d.files("pid")  # left as it was: the socket was not ours any more, so nothing else is touched
    fs[1].append(start_server(d.directory, str(REPO)))
    d.wait_serving()
    assert d.stop() == []
    assert not d.files("sock") and not d.files("pid")


def test_an_unused_server_leaves(fs) -> None:
    d, children = fs
    children.append(start_server(d.directory, str(REPO), env={"PYSHIM_FORKSERVER_IDLE": "3"}))
    d.wait_serving()
    wait_for("the idle server to leave", lambda: not d.servers() and not d.zygotes(), 30)
    assert "no daemon asked for in 3 s: exiting" in d.log()
    assert not d.files("sock") and not d.files("pid")


def test_a_start_without_a_server_falls_back_and_revives_it(fs, tmp_path: Path) -> None:
    d, _ = fs
    b = bundle(tmp_path, "rev")
    (b / "config.json").write_text("{}")
    env = dict(os.environ, PYTHONPATH=str(REPO), PYSHIM_FORKSERVER_DIR=str(d.directory))
    socket_dir = tempfile.mkdtemp(prefix="pyfs")  # short: sun_path
    code = ("import sys; from shim.commands import start; from shim.flags import ShimFlags; "
            "from shim.runc.manager import MANAGER; "
            "print(start.start(MANAGER, ShimFlags(namespace='fs-test', id='rev', address='/run/pyshim-test/none.sock'), "
            f"(), socket_dir={socket_dir!r}))")
    try:
        t = time.monotonic()
        out = subprocess.run([sys.executable, "-c", code], cwd=b, env=env, capture_output=True, text=True,
                             timeout=60, check=True).stdout.strip()
        took = time.monotonic() - t
        path = out[len("unix://"):]
        pid = connect(path).shim_pid
        assert pid not in d.daemons()  # a fresh daemon
        assert took < 10
        d.wait_serving()  # and the server came back in the background
        stop_daemon(path, pid)  # the revived server was start's child, now init's: the fixture stops it
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def fresh_cgroup() -> Path:
    """A new cgroup in the ``pids`` v1 hierarchy, or in the unified one on a cgroup2 host."""
    from shim.linux.mountinfo import cgroup_mounts

    table = cgroup_mounts()
    v1 = [m.point for m in table if m.fstype == "cgroup" and "pids" in m.super_option_set()]
    v2 = [m.point for m in table if m.fstype == "cgroup2"]
    if not v1 and not v2:
        unavailable("no pids or unified cgroup hierarchy mounted")
    d = Path((v1 or v2)[0]) / f"pyshim-fs-{os.getpid()}-{time.monotonic_ns()}"
    d.mkdir()
    return d
