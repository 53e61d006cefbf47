"""Fork server pieces without processes: the request/reply bytes, the location, cgroup paths, the argv area,
and the zygote's checks of a request.

The processes themselves (server, zygotes, daemons, fallback, restart, refusal of non-root peers) are tested
in test_forkserver_process.py and, through containerd, in tests/integration/test_forkserver.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prereq import unavailable

from shim.linux import cgroup_join as cg
from shim.linux.mountinfo import MountInfo, cgroup_mounts
from shim.forkserver import child
from shim.forkserver import protocol as proto
from shim.forkserver import zygote
from shim.runc.manager import MANAGER
from ttrpc import wire

REPO = Path(__file__).resolve().parents[2]
ARGV = ("-namespace", "k8s.io", "-id", "c1", "-address", "/run/containerd/containerd.sock", "-debug")


def request(**changes: object) -> proto.Request:
    base = proto.Request(argv=ARGV, env=(b"PATH=/usr/bin", b"TTRPC_ADDRESS=/run/c.sock.ttrpc", b"EMPTY="),
                         cwd=b"/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1", umask=0o022,
                         program=("/usr/local/bin/containerd-shim-pyshim-v1",))
    return base.replace(**changes)


# -- request and reply ----------------------------------------------------------------------------------

@pytest.mark.parametrize("changes", [{}, {"umask": 0}, {"umask": 0o777}, {"argv": ("-namespace", "", "-id", "x")},
                                     {"comm": "containerd-shim"},
                                     {"env": ()}, {"env": (b"A=b=c", b"\xff=\xfe")},
                                     {"program": (sys.executable, "-m", "shim")}])
def test_request_round_trip(changes: dict) -> None:
    req = request(**changes)
    assert proto.decode_request(proto.encode_request(req)) == req


@pytest.mark.parametrize("data, match", [
    (b"", "version 0"),
    (wire.uint_field(1, 2), "version 2"),
    (proto.encode_request(request(cwd=b"relative")), "absolute cwd"),
    (proto.encode_request(request(program=())), "program"),
    (proto.encode_request(request(env=(b"NOEQUALS",))), "NAME=value"),
    (proto.encode_request(request(env=(b"A=\0",))), "NAME=value"),
    (b"\x0a\x50", "length"),
])
def test_bad_requests_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        proto.decode_request(data)


def test_umask_survives_zero_omission() -> None:
    data = proto.encode_request(request(umask=0))
    assert wire.fields(data)[5] == 1  # stored as umask + 1
    assert proto.decode_request(data).umask == 0


@pytest.mark.parametrize("data, expected", [
    (proto.encode_reply(pid=4242), (4242, "")),
    (proto.encode_reply(error="no"), (0, "no")),
    (b"", (0, "empty reply")),
    (proto.encode_reply(pid=1, error="both"), (0, "both")),
    (b"\x08", (0, "malformed reply: truncated varint")),
])
def test_replies(data: bytes, expected: tuple[int, str]) -> None:
    assert proto.decode_reply(data) == expected


@pytest.mark.parametrize("value, on", [("", True), ("1", True), ("on", True), ("0", False), ("off", False),
                                       ("False", False), (" no ", False)])
def test_switch(value: str, on: bool) -> None:
    assert proto.enabled({proto.SWITCH_ENV: value}) is on
    assert proto.enabled({}) is True


def test_location_is_per_interpreter_package_and_manager() -> None:
    assert proto.key("/a/python", "/x") == proto.key("/a/python", "/x")
    keys = {proto.key("/a/python", "/x"), proto.key("/b/python", "/x"), proto.key("/a/python", "/y"),
            proto.key("/a/python", "/x", "other.shim:MANAGER")}
    assert len(keys) == 4
    assert proto.package_root() == str(REPO)
    loc = proto.Location.of({proto.DIR_ENV: "/tmp/fs"}, MANAGER.forkserver)
    assert loc.path("sock") == f"/tmp/fs/fs-{proto.key(manager=MANAGER.forkserver)}.sock"
    assert loc.manager == "shim.runc.manager:MANAGER"
    assert proto.Location.of({}, MANAGER.forkserver).directory == proto.DEFAULT_DIR


def test_start_side_modules_stay_lean() -> None:
    """start imports the client: it must load nothing slow (shim/stdlib_lite.py) and nothing third-party."""
    code = ("import sys; before = set(sys.modules); import shim.forkserver.client; "
            "slow = {'enum', 're', 'dataclasses', 'inspect', 'typing', 'json', 'socket', 'signal', 'subprocess', "
            "'collections'}; "
            "new = set(sys.modules) - before; bad = new & slow | {m for m in new if m.startswith(('trio', 'google'))}; "
            "assert not bad, sorted(bad)")
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr.decode()


# -- cgroups --------------------------------------------------------------------------------------------

def _cg(point: str, root: str, fstype: str, options: str) -> MountInfo:
    return MountInfo(1, 0, root, point, "rw", fstype, "cgroup", options)


HYBRID = [_cg("/sys/fs/cgroup/cpu", "/", "cgroup", "rw,cpu"),
          _cg("/sys/fs/cgroup/cpu,cpuacct", "/", "cgroup", "rw,cpu,cpuacct"),
          _cg("/sys/fs/cgroup/systemd", "/", "cgroup", "rw,name=systemd"),
          _cg("/sys/fs/cgroup/memory", "/docker/abc", "cgroup", "rw,memory"),
          _cg("/sys/fs/cgroup/unified", "/", "cgroup2", "rw")]


@pytest.mark.parametrize("controllers, path, expected", [
    ("cpu", "/a/b", "/sys/fs/cgroup/cpu/a/b"),
    ("cpu,cpuacct", "/a", "/sys/fs/cgroup/cpu,cpuacct/a"),
    ("name=systemd", "/system.slice/containerd.service", "/sys/fs/cgroup/systemd/system.slice/containerd.service"),
    ("", "/x", "/sys/fs/cgroup/unified/x"),
    ("memory", "/docker/abc/sub", "/sys/fs/cgroup/memory/sub"),
    ("memory", "/docker/abc", "/sys/fs/cgroup/memory/"),
])
def test_hierarchy_dir(controllers: str, path: str, expected: str) -> None:
    assert cg.hierarchy_dir(controllers, path, HYBRID) == expected


@pytest.mark.parametrize("controllers, path", [("pids", "/a"), ("memory", "/elsewhere")])
def test_hierarchy_dir_refuses_what_is_not_mounted_here(controllers: str, path: str) -> None:
    with pytest.raises(OSError, match="not mounted here"):
        cg.hierarchy_dir(controllers, path, HYBRID)


def test_join_writes_nothing_when_nothing_differs(tmp_path: Path) -> None:
    text = "12:pids:/a\n1:name=systemd:/b\n0::/c\n"
    assert cg.parse_proc_cgroup(text) == {"12": ("pids", "/a"), "1": ("name=systemd", "/b"), "0": ("", "/c")}
    assert cg.join_like(text, text, os.getpid()) == []


def mounted_hierarchies() -> set[frozenset[str]]:
    """The cgroup hierarchies /proc/mounts lists (read independently of shim.linux.mountinfo): controller sets,
    the empty set for cgroup2."""
    found = set()
    with open("/proc/mounts") as f:
        for line in f:
            _, _, fstype, options, *_ = line.split()
            if fstype == "cgroup2":
                found.add(frozenset())
            elif fstype == "cgroup":
                found.add(frozenset(o for o in options.split(",") if o not in ("rw", "ro", "relatime", "nosuid",
                                                                               "nodev", "noexec")))
    return found


def test_mountinfo_lists_this_hosts_cgroup_mounts() -> None:
    """Every hierarchy we are in that is mounted is found, and we are in it; one that exists unmounted (a v1
    hierarchy after its umount keeps its tasks) is refused as not mounted."""
    table = cgroup_mounts()
    mounted = mounted_hierarchies()
    with open("/proc/self/cgroup") as f:
        mine = cg.parse_proc_cgroup(f.read())
    for controllers, path in mine.values():
        wanted = frozenset(c for c in controllers.split(",") if c)
        if not any(wanted <= m if wanted else not m for m in mounted):
            with pytest.raises(OSError, match="not mounted here"):
                cg.hierarchy_dir(controllers, path, table)
            continue
        directory = cg.hierarchy_dir(controllers, path, table)
        with open(os.path.join(directory, "cgroup.procs")) as f:
            assert str(os.getpid()) in f.read().split()


# -- argv area, title -----------------------------------------------------------------------------------

def test_title_is_the_fresh_command_line_start_computed(tmp_path: Path) -> None:
    prefix = ("/opt/pyshim/venv/bin/python", "-IS", "/usr/local/bin/containerd-shim-pyshim-v1")
    assert child.title(request(program=prefix)) == [*prefix, *ARGV]
    script = tmp_path / "shimscript"
    script.write_text(f"import json, os, sys\nsys.path.insert(0, {str(REPO)!r})\nfrom shim.commands import start\n"
                      "print(json.dumps([start.fresh_command_line([os.path.abspath(sys.argv[0])]),\n"
                      "                  start.fresh_command_line([sys.executable, '-m', 'shim'])]))\n")
    done = subprocess.run([sys.executable, "-S", "-E", str(script), "-namespace", "ns", "start"],
                          capture_output=True, text=True, timeout=30, check=True)
    as_script, as_module = json.loads(done.stdout)
    assert as_script == [sys.executable, "-S", "-E", str(script)]  # what the kernel would run for #!python -SE
    assert as_module == [sys.executable, "-m", "shim"]


def test_argv_area_rewrites_the_command_line() -> None:
    code = ("import sys; from shim.forkserver.child import ArgvArea\n"
            "a = ArgvArea.of_self(); print(a.size, flush=True)\n"
            "assert a.fits(['x' * (a.size - 1)]) and not a.fits(['x' * a.size])\n"
            "a.write(['daemon', '-id', 'c1'])\n"
            "print(open('/proc/self/cmdline', 'rb').read().rstrip(b'\\0').decode())")
    done = subprocess.run([sys.executable, "-c", code, "p" * 200], cwd=REPO, capture_output=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr.decode()
    size, cmdline = done.stdout.decode().splitlines()
    assert int(size) >= 200
    assert cmdline == "daemon\0-id\0c1"


# -- the zygote's checks --------------------------------------------------------------------------------

class FakeWatch:
    def __init__(self, changed: bool = False) -> None:
        self._changed = changed

    def changed(self, full: bool = False) -> bool:
        return self._changed


@pytest.fixture
def a_socket():
    with socket.socket(socket.AF_UNIX) as s:
        yield s.fileno()


def gate(changed: bool = False, size: int = 4096) -> zygote.Gate:
    return zygote.Gate(MANAGER, FakeWatch(changed), child.ArgvArea(0, size))


def test_gate_accepts_a_daemon_request(a_socket: int) -> None:
    data = proto.encode_request(request())
    assert gate().check(data, 0, [a_socket], os.getpid()) == ("", request())


@pytest.mark.parametrize("kwargs, match", [
    ({"msg_flags": socket.MSG_CTRUNC}, "truncated"),
    ({"fds": []}, "one socket descriptor"),
    ({"fds": "two"}, "one socket descriptor"),
    ({"fds": "file"}, "one socket descriptor"),
    ({"data": b"junk"}, "bad request"),
    ({"data": proto.encode_request(request(argv=ARGV + ("start",)))}, "not a daemon command line"),
    ({"data": proto.encode_request(request(argv=("-socket", "/s", *ARGV)))}, "not a daemon command line"),
    ({"data": proto.encode_request(request(argv=("-id", "x")))}, "not a daemon command line"),
    ({"data": proto.encode_request(request(argv=("-namespace", "../ns", "-id", "x")))}, "must match"),
    ({"data": proto.encode_request(request(argv=("-namespace", "ns", "-id", "a/../b")))}, "must match"),
    ({"gate": gate(changed=True)}, zygote.CODE_CHANGED),
    ({"peer": "other-uts"}, "other namespaces"),
    ({"gate": gate(size=40)}, "too long"),
])
def test_gate_refusals(a_socket: int, tmp_path: Path, kwargs: dict, match: str) -> None:
    fds = kwargs.get("fds", [a_socket])
    if fds == "two":
        fds = [a_socket, a_socket]
    elif fds == "file":
        fds = [os.open(tmp_path, os.O_RDONLY)]
    g = kwargs.get("gate", gate())
    peer, other = kwargs.get("peer", os.getpid()), None
    if peer == "other-uts":
        if os.geteuid() != 0:
            unavailable("a process in another UTS namespace needs root (unshare)")
        other = subprocess.Popen(["unshare", "--uts", "sh", "-c", "echo ready; exec sleep 30"],
                                 stdout=subprocess.PIPE)
        assert other.stdout.readline() == b"ready\n"
        peer = other.pid
    try:
        error, req = g.check(kwargs.get("data", proto.encode_request(request())), kwargs.get("msg_flags", 0),
                             fds, peer)
    finally:
        if other is not None:
            other.kill()
            other.wait()
        if kwargs.get("fds") == "file":
            os.close(fds[0])
    assert match in error and req is None


# -- preload and the code watch -------------------------------------------------------------------------

def test_preload_covers_the_library_and_the_managers_packages() -> None:
    from shim.forkserver import preload

    names = preload.modules(preload.packages(MANAGER))
    for expected in ("shim.daemon", "shim.runc.backend_factory", "shim.runc.task.tasks", "shim.io.process_io",
                     "ttrpc.server", "runtime.registry", "protos.task_v2_pb2", "shim.forkserver.zygote"):
        assert expected in names
    assert "shim.forkserver.__main__" not in names and "shim.__main__" not in names


def test_preload_leaves_out_shim_runc_for_other_managers() -> None:
    from shim.forkserver import preload
    from shim.manager import Manager

    names = preload.modules(preload.packages(Manager()))
    assert "shim.daemon" in names and "ttrpc.server" in names
    assert not [n for n in names if n.startswith(("shim.runc", "runtime"))]


def test_watch_sees_a_changed_or_vanished_module_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shim.forkserver import preload

    pkg = tmp_path / "watchedpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.import_module("watchedpkg.mod")
    try:
        watch = preload.Watch([str(pkg)])
        assert str(pkg / "mod.py") in watch.quick and str(tmp_path) in watch.quick
        assert not watch.changed() and not watch.changed(full=True)
        os.utime(pkg / "mod.py", ns=(1, 1))
        assert watch.changed() and watch.changed(full=True)
        watch = preload.Watch([str(pkg)])
        (pkg / "mod.py").unlink()
        assert watch.changed()
        watch = preload.Watch([str(pkg)])
        (tmp_path / "new_distribution.dist-info").mkdir()  # an install: the sys.path directory changes
        assert watch.changed()
    finally:
        for name in ("watchedpkg.mod", "watchedpkg"):
            sys.modules.pop(name, None)
