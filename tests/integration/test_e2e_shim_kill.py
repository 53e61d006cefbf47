"""End-to-end scenario 12 of the shim matrix: the shim is SIGKILLed under a running container.

Rules: the test has its own containerd (``containerd_factory``) so the only shim of its address is the one it
kills.  What runc.v2 shows and both runtimes must match: containerd notices the dead shim, runs the shim
binary's ``delete`` (which must kill the container and remove its runtime state and rootfs mount), publishes
``/tasks/exit`` (137) and ``/tasks/delete`` and drops the task, so ``ctr task rm -f`` finds no task and
``ctr c rm`` works; afterwards no shim, container process, runc state, mount, bundle or socket is left.
"""
from __future__ import annotations

import os
import signal

from .conftest import import_image, new_id
from .e2e_helpers import EventStream, cleanup, cgroup_pids, runtime, task_row, wait_status, wait_until  # noqa: F401
from .harness import procs


def _shims(c):
    """Shim processes of ``c`` (``procs.shims_of`` also matches ctr, which gets ``--address`` too)."""
    return [p for p in procs.shims_of(c.address) if "-id" in p.argv]


def test_shim_sigkill_then_remove(containerd_factory, runtime, busybox_artifacts):
    c = containerd_factory()
    ref = import_image(c, busybox_artifacts)
    cid = new_id("shimkill")
    try:
        with EventStream(c) as stream:
            c.ctr("run", "-d", "--runtime", runtime, ref, cid, "/bin/sleep", "600")
            row = wait_status(c, cid, "RUNNING")
            shims = _shims(c)
            assert len(shims) == 1, shims
            assert procs.mounts_under(c.root, c.run_dir), "the image rootfs should be mounted while running"
            os.kill(shims[0].pid, signal.SIGKILL)

            wait_until("containerd to drop the task", lambda: task_row(c, cid) is None)
            wait_until("/tasks/delete", lambda: any(e.topic == "/tasks/delete" for e in stream.about(cid)))
            seen = [(e.topic, e.payload.get("exit_status", 0)) for e in stream.about(cid)]
        assert seen[-2:] == [("/tasks/exit", 137), ("/tasks/delete", 137)], seen

        res = c.ctr("task", "rm", "--force", cid, check=False)
        assert res.returncode != 0 and "not found" in res.stderr, res
        c.ctr("containers", "rm", cid)

        assert not procs.alive(row.pid)
        assert cgroup_pids(c.namespace, cid) == set()
        assert _shims(c) == []
        assert not (c.runc_root / cid).exists(), sorted(os.listdir(c.runc_root))
        assert procs.mounts_under(c.root, c.run_dir) == []
        assert not c.bundle(cid).exists()
        assert c.shim_sockets() == []
    finally:
        cleanup(c, cid)
