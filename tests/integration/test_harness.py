"""Smoke tests proving the integration harness: each containerd version runs busybox with the Go runc shim,
from a rootfs directory and from the imported OCI image, survives a restart under a running container, and
the leftover check really sees what a daemon leaves behind.

Rules: real containerd, runc and ctr only; unique container ids; every assertion compares with what the
harness or ctr observed, never with a constant that could not fail.
"""
from __future__ import annotations

import time

import pytest

from .conftest import import_image, new_id
from .e2e_helpers import task_row, wait_status
from .harness import ctrout, procs
from .harness.daemon import PrivateContainerd

pytestmark = pytest.mark.integration
RUNC = "io.containerd.runc.v2"


def test_private_daemon_is_isolated(containerd: PrivateContainerd) -> None:
    assert containerd.pid is not None
    server = containerd.ctr("version").stdout.split("Server:")[1]
    assert f"Version:  {containerd.dist.version}" in server
    assert containerd.ctr("namespaces", "ls", "--quiet").stdout.split() in ([], [containerd.namespace])
    rows = [ln.split() for ln in containerd.ctr("plugins", "ls").stdout.splitlines()[1:]]
    status = {f"{r[0]}.{r[1]}": r[-1] for r in rows}
    assert status["io.containerd.snapshotter.v1.overlayfs"] == "ok"
    assert status["io.containerd.runtime.v2.task"] == "ok"
    assert "io.containerd.grpc.v1.cri" not in status  # disabled plugins are not even listed
    assert "io.containerd.nri.v1.nri" not in status


def test_run_rootfs_echo(containerd: PrivateContainerd, busybox_rootfs) -> None:
    cid = new_id()
    res = containerd.ctr("run", "--rm", "--runtime", RUNC, "--rootfs", str(busybox_rootfs), cid, "/bin/echo", "hi")
    assert res.stdout == "hi\n"
    assert cid not in containerd.ctr("containers", "ls", "--quiet").stdout.split()
    assert not containerd.bundle(cid).exists()


def test_run_image_echo(containerd: PrivateContainerd, busybox_image: str) -> None:
    cid = new_id()
    res = containerd.ctr("run", "--rm", "--runtime", RUNC, busybox_image, cid, "/bin/sh", "-c", "echo hi from $0")
    assert res.stdout == "hi from /bin/sh\n"
    assert cid not in [s.key for s in ctrout.snapshots(containerd.ctr("snapshots", "ls").stdout)]


def test_restart_under_running_container(containerd_factory, busybox_artifacts) -> None:
    c = containerd_factory()
    ref = import_image(c, busybox_artifacts)
    cid = new_id()
    c.ctr("run", "-d", "--runtime", RUNC, ref, cid, "/bin/sleep", "600")
    before = wait_status(c, cid, "RUNNING")
    shims = procs.shims_of(c.address)
    assert len(shims) == 1, shims
    sock, debug_sock = c.computed_shim_sockets(cid)
    assert c.shim_endpoint(cid)[0] == f"unix://{sock}" and sock.exists()
    old_pid = c.pid

    c.restart()

    assert c.pid is not None and c.pid != old_pid
    after = task_row(c, cid)
    assert after == before  # same pid, still RUNNING, reconnected to the same shim
    assert procs.shims_of(c.address) == shims
    c.ctr("tasks", "kill", "--signal", "SIGKILL", cid)
    wait_status(c, cid, "STOPPED")
    c.ctr("tasks", "rm", cid)
    c.ctr("containers", "rm", cid)
    assert task_row(c, cid) is None
    deadline = time.monotonic() + 10
    while procs.shims_of(c.address) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs.shims_of(c.address) == []
    assert not sock.exists() and not debug_sock.exists()  # the Go shim unlinks its sockets on exit


def test_leftover_check_sees_abandoned_container(containerd_dist, busybox_artifacts, shim_bin_dir,
                                                 containerd_log_dir) -> None:
    c = PrivateContainerd(containerd_dist, shim_dirs=[shim_bin_dir], log_dir=containerd_log_dir)
    try:
        c.start()
        ref = import_image(c, busybox_artifacts)
        cid = new_id()
        c.ctr("run", "-d", "--runtime", RUNC, ref, cid, "/bin/sleep", "600")
        wait_status(c, cid, "RUNNING")
        c.stop()  # abandon the container: containerd gone, shim and container still there
        left = c.leftovers()
        assert any(x.startswith("shim process") for x in left), left
        assert any(x.startswith("process ") and "sleep" in x for x in left), left
        assert any(x.startswith("mount left:") and cid in x for x in left), left
        problems = c.teardown()  # must report them, then clean them up by force
        assert problems[:len(left)] == left
    finally:
        c.teardown()
    assert c.leftovers() == []
