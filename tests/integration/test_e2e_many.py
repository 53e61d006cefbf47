"""End-to-end scenario 13 of the shim matrix: 20 containers started at once, all running, all killed and
removed.

Rules: the 20 ``ctr run -d`` (from the busybox image, one snapshot each), the kills and the task removals are
each issued concurrently, as an orchestrator would; every step is checked for every container (runc.v2's
behaviour, asserted for both runtimes on every containerd version).  ``cleanup`` runs whatever happens.
"""
from __future__ import annotations

import subprocess

from .conftest import new_id
from .e2e_helpers import cgroup_pids, cleanup, finish, runtime, start, wait_until  # noqa: F401  (runtime: fixture)
from .harness import ctrout

COUNT = 20


def _all(c, argvs: list[list[str]], timeout: float = 90) -> list[subprocess.CompletedProcess]:
    """Run the ctr commands concurrently; return their results in order."""
    procs = [start(c, *argv, text=True) for argv in argvs]
    return [finish(p, timeout) for p in procs]


def _tasks(c, cids) -> dict[str, ctrout.TaskRow]:
    return {t.id: t for t in ctrout.tasks(c.ctr("tasks", "ls").stdout) if t.id in cids}


def test_twenty_containers_at_once(containerd, runtime, busybox_image):
    cids = [new_id(f"many{i}") for i in range(COUNT)]
    try:
        started = _all(containerd, [["run", "-d", "--runtime", runtime, busybox_image, cid, "/bin/sleep", "600"]
                                    for cid in cids])
        assert [r.returncode for r in started] == [0] * COUNT, [r.stderr for r in started if r.returncode]
        rows = wait_until("all tasks RUNNING", lambda: (lambda t: t if len(t) == COUNT and all(
            r.status == "RUNNING" for r in t.values()) else None)(_tasks(containerd, cids)))
        assert len({r.pid for r in rows.values()}) == COUNT
        for cid, row in rows.items():
            assert cgroup_pids(containerd.namespace, cid) == {row.pid}

        killed = _all(containerd, [["task", "kill", "--signal", "SIGKILL", cid] for cid in cids])
        assert [r.returncode for r in killed] == [0] * COUNT, [r.stderr for r in killed if r.returncode]
        wait_until("all tasks STOPPED", lambda: all(r.status == "STOPPED" for r in _tasks(containerd, cids).values()))

        removed = _all(containerd, [["task", "rm", cid] for cid in cids])
        for cid, r in zip(cids, removed):
            assert r.returncode == 0 and f"task {cid} exit with non-zero exit code 137" in r.stderr, r
        containerd.ctr("containers", "rm", *cids)
        assert _tasks(containerd, cids) == {}
        left = set(containerd.ctr("containers", "ls", "--quiet").stdout.split()) & set(cids)
        assert not left
        assert not {s.key for s in ctrout.snapshots(containerd.ctr("snapshots", "ls").stdout)} & set(cids)
        assert not any(containerd.bundle(cid).exists() for cid in cids)
    finally:
        cleanup(containerd, *cids)
