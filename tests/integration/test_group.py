"""A grouped shim under concurrent starts: containers carrying one ``io.kubernetes.cri.sandbox-id`` annotation
share one shim process, all run, each answers exec with its own exit code, and the shim leaves with the last one; for pyshim and
the Go runc shim alike. (That creates inside one pyshim run in parallel is shown in
tests/trio/test_task_group_creates.py; CRI's own grouping in tests/cri.)
"""
from __future__ import annotations

import uuid

from .conftest import import_image, new_id
from .e2e_helpers import cleanup, finish, runtime, start, wait_status, wait_until  # noqa: F401
from .harness import procs

SIZE = 6


def test_grouped_containers_share_one_shim(containerd, runtime, busybox_artifacts):
    c = containerd
    ref = import_image(c, busybox_artifacts)
    group = f"grp-{uuid.uuid4().hex[:8]}"
    cids = [new_id("g") for _ in range(SIZE)]
    try:
        runs = [start(c, "run", "-d", "--runtime", runtime, "--annotation", f"io.kubernetes.cri.sandbox-id={group}",
                      ref, cid, "/bin/sleep", "600") for cid in cids]
        for cid, run in zip(cids, runs):
            res = finish(run, timeout=60)
            assert res.returncode == 0, (cid, res.stderr)
        for cid in cids:
            wait_status(c, cid, "RUNNING")
        shims = [p for p in procs.shims_of(c.address) if "-id" in p.argv]
        ours = [p for p in shims if p.argv[p.argv.index("-id") + 1] in cids]
        assert len(ours) == 1, ours  # one daemon for the whole group
        for i, cid in enumerate(cids):  # each container of the group answers for itself
            out = c.ctr("task", "exec", "--exec-id", "e", cid, "/bin/sh", "-c", f"exit {10 + i}", check=False)
            assert out.returncode == 10 + i, (cid, out)
        for cid in cids:
            c.ctr("task", "kill", "--signal", "SIGKILL", cid)
            wait_status(c, cid, "STOPPED")
            c.ctr("task", "rm", cid)
            c.ctr("containers", "rm", cid)
        wait_until("the group's shim to exit", lambda: not procs.alive(ours[0].pid), 30)
    finally:
        cleanup(c, *cids)
