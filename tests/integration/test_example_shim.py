"""The example shim of examples/chroot-shim (``io.containerd.pychroot.v1``) under real containerd and ``ctr``.

Rules:
- The shim is the console script ``containerd-shim-pychroot-v1`` installed beside the running interpreter
  (install.sh --dev installs it); missing, the tests are unavailable (skip, or fail under CI).
- The module runs its own private containerd per version, whose PATH has only that shim added, so everything it
  leaves behind is this module's: its teardown checks shims, mounts and sockets as every harness daemon does.
- Each test also checks, once its containers are gone, that no shim of its containerd runs, no socket of the
  container's group is left, nothing is mounted below the daemon's directories and no process is still rooted in
  the test's rootfs (the example has no cgroups, so the harness's cgroup check cannot see its processes).
"""
from __future__ import annotations

import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.prereq import unavailable

from .conftest import _finish, _start, import_image, new_id
from .e2e_helpers import EventStream, cleanup, ctr_bytes, finish, start, task_row, wait_status, wait_until
from .harness import ctrout, procs
from .harness.daemon import PrivateContainerd

RUNTIME = "io.containerd.pychroot.v1"
BINARY = "containerd-shim-pychroot-v1"


@pytest.fixture(scope="module")
def chroot_containerd(containerd_dist, containerd_log_dir, tmp_path_factory) -> Iterator[PrivateContainerd]:
    """A private containerd that finds the example shim first on its PATH (a directory holding only a link)."""
    script = Path(sys.executable).parent / BINARY
    if not script.exists():
        unavailable(f"{BINARY} not installed beside {sys.executable} (pip install examples/chroot-shim)")
    bin_dir = tmp_path_factory.mktemp("pychroot-bin")
    (bin_dir / BINARY).symlink_to(script)
    inst = _start(PrivateContainerd(containerd_dist, shim_dirs=[bin_dir], log_dir=containerd_log_dir))
    yield inst
    _finish(inst)  # fails the module's last test if anything was left behind


def rooted_in(root: Path) -> list[int]:
    """Pids of live processes whose root directory is ``root`` (as the shim itself finds a container's)."""
    want = os.stat(root)
    found = []
    for entry in os.listdir("/proc"):
        try:
            st = os.stat(f"/proc/{entry}/root") if entry.isdigit() else None
        except OSError:
            continue
        if st is not None and (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            found.append(int(entry))
    return found


def shims(c: PrivateContainerd) -> list[procs.Proc]:
    """Shim processes of ``c`` (``procs.shims_of`` also matches ctr, which gets ``--address`` too)."""
    return [p for p in procs.shims_of(c.address) if "-id" in p.argv]


def assert_nothing_left(c: PrivateContainerd, rootfs: Path | None, *cids: str) -> None:
    wait_until("the shims to exit", lambda: not shims(c), timeout=10)
    for cid in cids:
        assert [p for p in c.computed_shim_sockets(cid) if p.exists()] == []
        assert not c.bundle(cid).exists()
    assert procs.mounts_under(c.root, c.run_dir) == []
    if rootfs is not None:
        assert rooted_in(rootfs) == []


def summary(event, cid: str) -> tuple[str, str, int, int]:
    """(topic, process id, pid, exit status) of a task event; the pid of an exec is shown as -1 (any)."""
    p = event.payload  # ctr 1.x prints proto field names, 2.x may print lowerCamelCase
    who = p.get("exec_id") or p.get("execId") or p.get("id") or cid
    pid = int(p.get("pid", 0))
    return event.topic, who, -1 if who != cid and pid else pid, int(p.get("exit_status", p.get("exitStatus", 0)))


def run(c: PrivateContainerd, rootfs: Path, cid: str, *argv: str, extra: tuple[str, ...] = (),
        input: bytes | None = None):
    return ctr_bytes(c, "run", "--rm", "--runtime", RUNTIME, *extra, "--rootfs", str(rootfs), cid, *argv,
                     input=input)


def test_output_and_exit_status(chroot_containerd, busybox_rootfs):
    cid = new_id("pychroot")
    res = run(chroot_containerd, busybox_rootfs, cid, "/bin/sh", "-c", "echo hello; echo oops >&2; exit 3")
    assert (res.returncode, res.stdout) == (3, b"hello\n"), res.stderr
    assert res.stderr.endswith(b"oops\n")
    assert_nothing_left(chroot_containerd, busybox_rootfs, cid)


def test_runs_chrooted_in_the_rootfs(chroot_containerd, busybox_rootfs):
    marker = secrets.token_hex(8)
    (busybox_rootfs / "marker").write_text(marker)
    cid = new_id("pychroot")
    script = "ls -1a /; echo ---; cat /marker; echo; pwd; id -u; echo $GREETING; readlink /proc/self/exe"
    res = run(chroot_containerd, busybox_rootfs, cid, "/bin/sh", "-c", script,
              extra=("--cwd", "/etc", "--env", "GREETING=hi there"))
    assert res.returncode == 0, res.stderr
    listing, rest = res.stdout.decode().split("---\n")
    assert set(listing.split()) == {".", "..", *os.listdir(busybox_rootfs)}  # the rootfs, not the host's /
    assert rest.splitlines() == [marker, "/etc", "0", "hi there", "/bin/busybox"]  # /proc: the shim mounted it
    assert_nothing_left(chroot_containerd, busybox_rootfs, cid)


def test_stdin_piped(chroot_containerd, busybox_rootfs):
    data = os.urandom(256 * 1024) + b"no newline at the end"
    cid = new_id("pychroot")
    res = run(chroot_containerd, busybox_rootfs, cid, "/bin/cat", input=data)
    assert res.returncode == 0, res.stderr
    assert res.stdout == data
    cid2 = new_id("pychroot")
    res = run(chroot_containerd, busybox_rootfs, cid2, "/bin/cat", input=b"data\n")
    assert (res.returncode, res.stdout) == (0, b"data\n"), res.stderr
    assert_nothing_left(chroot_containerd, busybox_rootfs, cid, cid2)


def test_detached_exec_ps_kill_delete(chroot_containerd, busybox_rootfs):
    c = chroot_containerd
    marker = secrets.token_hex(8)
    (busybox_rootfs / "marker").write_text(marker)
    # The shim mounts no /dev: the rootfs brings its devices. busybox sh needs /dev/null for a background job.
    os.mknod(busybox_rootfs / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    cid = new_id("pychroot")
    with EventStream(c) as events:
        try:
            # The init and its child ignore SIGTERM; an exec, started by the shim, does not inherit that.
            c.ctr("run", "-d", "--runtime", RUNTIME, "--rootfs", str(busybox_rootfs), cid,
                  "/bin/sh", "-c", "trap '' TERM; sleep 600 & exec sleep 601")
            row = wait_status(c, cid, "RUNNING")
            wait_until("the init and its child in the rootfs", lambda: len(rooted_in(busybox_rootfs)) == 2)
            assert row.pid in rooted_in(busybox_rootfs)
            # The exec waits before writing: ctr may lose the output of an exec that ends within milliseconds
            # (its FIFO open races the process's deletion; tests/integration/test_e2e_exec.py says more).
            res = c.ctr("task", "exec", "--exec-id", "x", cid, "/bin/sh", "-c", "sleep 0.3; echo hi", check=False)
            assert (res.returncode, res.stdout) == (0, "hi\n"), res.stderr
            # another user and directory, inside the rootfs (ctr 1.6 run has no --user; exec has)
            res = c.ctr("task", "exec", "--exec-id", "y", "--user", "65534:65534", "--cwd", "/etc", cid,
                        "/bin/sh", "-c", "sleep 0.3; echo $(id -u):$(id -g) $(pwd) $(cat /marker); exit 7",
                        check=False)
            assert (res.returncode, res.stdout) == (7, f"65534:65534 /etc {marker}\n"), res.stderr

            ex = start(c, "task", "exec", "--exec-id", "sleeper", cid, "/bin/sleep", "600")
            wait_until("the exec in the rootfs", lambda: len(rooted_in(busybox_rootfs)) == 3)
            listed = {p.pid: p.info for p in ctrout.task_processes(c.ctr("task", "ps", cid).stdout)}
            assert set(listed) == set(rooted_in(busybox_rootfs))
            assert listed[row.pid] == "-"
            assert sorted(listed.values()).count("-") == 2  # the init and its child carry no details
            assert any("sleeper" in info for info in listed.values())

            c.ctr("task", "kill", "--all", "--signal", "SIGTERM", cid)  # reaches the exec too
            assert finish(ex).returncode == 143
            assert task_row(c, cid) == row and len(rooted_in(busybox_rootfs)) == 2
            c.ctr("task", "kill", "--signal", "SIGKILL", cid)  # the init only: the shim ends the rest
            wait_status(c, cid, "STOPPED")
            assert rooted_in(busybox_rootfs) == []
            res = c.ctr("task", "kill", "--signal", "SIGKILL", cid, check=False)
            assert res.returncode != 0 and "process already finished" in res.stderr
            res = c.ctr("task", "delete", cid)  # ctr reports the status as a warning
            assert "exit with non-zero exit code 137" in res.stderr, res.stderr
            c.ctr("containers", "rm", cid)
        finally:
            cleanup(c, cid)
        wait_until("the delete event", lambda: any(e.topic == "/tasks/delete" for e in events.about(cid)))
        seen = events.about(cid)
    assert [summary(e, cid) for e in seen] == [
        ("/tasks/create", cid, 0, 0), ("/tasks/start", cid, row.pid, 0),
        *(step for exec_id, status in (("x", 0), ("y", 7), ("sleeper", 143)) for step in (
            ("/tasks/exec-added", exec_id, 0, 0), ("/tasks/exec-started", exec_id, -1, 0),
            ("/tasks/exit", exec_id, -1, status))),
        ("/tasks/exit", cid, row.pid, 137), ("/tasks/delete", cid, row.pid, 137),
    ], [f"{e.topic} {e.payload}" for e in seen]
    assert_nothing_left(c, busybox_rootfs, cid)


def test_two_containers_on_one_rootfs_are_apart(chroot_containerd, busybox_rootfs):
    """Processes are the container's by root and mount namespace: ps and kill --all of one spare the other."""
    c = chroot_containerd
    first, second = new_id("pychroot"), new_id("pychroot")
    try:
        for cid in (first, second):
            c.ctr("run", "-d", "--runtime", RUNTIME, "--rootfs", str(busybox_rootfs), cid, "/bin/sleep", "600")
        rows = {cid: wait_status(c, cid, "RUNNING") for cid in (first, second)}
        wait_until("both inits chrooted", lambda: len(rooted_in(busybox_rootfs)) == 2)
        for cid in (first, second):
            listed = ctrout.task_processes(c.ctr("task", "ps", cid).stdout)
            assert [p.pid for p in listed] == [rows[cid].pid]
        c.ctr("task", "kill", "--all", "--signal", "SIGKILL", first)
        wait_status(c, first, "STOPPED")
        assert task_row(c, second) == rows[second] and rooted_in(busybox_rootfs) == [rows[second].pid]
    finally:
        cleanup(c, first, second)
    assert_nothing_left(c, busybox_rootfs, first, second)


def test_image_rootfs_is_mounted_and_unmounted(chroot_containerd, busybox_artifacts):
    c = chroot_containerd
    image = import_image(c, busybox_artifacts)
    cid = new_id("pychroot")
    rootfs = c.bundle(cid) / "rootfs"
    try:
        c.ctr("run", "-d", "--runtime", RUNTIME, image, cid, "/bin/sleep", "600")
        wait_status(c, cid, "RUNNING")
        assert str(rootfs) in procs.mounts_under(c.bundle(cid))  # Create mounted the snapshot there
        wait_until("the init chrooted in the mounted rootfs", lambda: rooted_in(rootfs))
        res = c.ctr("task", "exec", "--exec-id", "ls", cid, "/bin/sh", "-c", "sleep 0.3; ls /bin/busybox",
                    check=False)
        assert (res.returncode, res.stdout) == (0, "/bin/busybox\n"), res.stderr
        c.ctr("task", "kill", "--signal", "SIGKILL", cid)
        wait_status(c, cid, "STOPPED")
        assert "exit code 137" in c.ctr("task", "delete", cid).stderr
        assert procs.mounts_under(c.bundle(cid)) == []
    finally:
        cleanup(c, cid)
    assert_nothing_left(c, None, cid)


def test_shim_killed_then_cleaned_up_by_delete(chroot_containerd, busybox_rootfs):
    """A dead daemon: containerd runs the shim's ``delete`` command, whose cleanup kills the container."""
    c = chroot_containerd
    cid = new_id("pychroot")
    try:
        c.ctr("run", "-d", "--runtime", RUNTIME, "--rootfs", str(busybox_rootfs), cid, "/bin/sleep", "600")
        row = wait_status(c, cid, "RUNNING")
        wait_until("the init chrooted", lambda: rooted_in(busybox_rootfs) == [row.pid])
        (daemon,) = shims(c)
        os.kill(daemon.pid, 9)
        wait_until("the container killed by the shim's delete",
                   lambda: not rooted_in(busybox_rootfs) and not shims(c), timeout=20)
        wait_until("containerd to drop the task of the dead shim", lambda: task_row(c, cid) is None)
        c.ctr("containers", "rm", cid)
    finally:
        cleanup(c, cid)
    # A SIGKILLed daemon cannot unlink its socket: the library's delete command removes it once nobody listens.
    assert_nothing_left(c, busybox_rootfs, cid)
