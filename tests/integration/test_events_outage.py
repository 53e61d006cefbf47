"""Events across a containerd outage: containers exit (and one is OOM-killed) while containerd is down; once it
is back, every /tasks/exit and /tasks/oom reaches it, each once, the OOM before its exit.

How the events are seen: containerd keeps no events of its own, so a subscriber must be listening before a shim
delivers. The restarted containerd serves ttrpc on a new path, which no shim knows: every shim's publisher keeps
failing on the old path until ``ctr events`` has subscribed; then the old path becomes a symlink to the new one,
and the next retry (at most 2 s later) goes through. Nothing is delivered before the subscription, so every event
a shim still had is seen.

pyshim retries until delivered (shim/events.py), and drains its queue before it leaves: 5 s and 60 s outages run
here; a longer one by hand with PYSHIM_LONG_OUTAGE=<seconds> (docs/reliability.md has the 10-minute run). runc.v2's publisher gives up after six tries (~15 s), and
leaves at Shutdown without draining; containerd 1.7+ deletes and shuts down, while it loads, a shim whose task
has exited (its Pids are empty), so there runc.v2 loses the exits of an outage of any length. It runs beside
pyshim for 5 s on containerd 1.6.20, where it keeps them; docs/differences.md lists the rest.
On 1.7+ the loader's Delete also brings a /tasks/delete, after the exit.
"""
from __future__ import annotations

import os
import time

import pytest

from .conftest import _versions, new_id
from .e2e_helpers import PYSHIM, RUNC, EventStream, cleanup, wait_status, wait_until
from .harness import busybox, procs
from .test_stats_oom import MiB


LONG = [int(os.environ["PYSHIM_LONG_OUTAGE"])] if os.environ.get("PYSHIM_LONG_OUTAGE") else []  # by hand: 600


@pytest.mark.parametrize("outage", [5, 60, *LONG], ids=lambda o: f"{o}s")
def test_exits_and_ooms_during_an_outage_arrive_once(containerd_factory, pyshim_binary, busybox_artifacts,
                                                     tmp_path, outage):
    outage_scenario(containerd_factory(), busybox_artifacts, tmp_path, PYSHIM, outage)


@pytest.mark.parametrize("containerd_version", [v for v in _versions() if v == "1.6.20"], indirect=True,
                         ids=lambda v: f"containerd-{v}")
def test_runc_v2_beside_it_on_1_6(containerd_factory, busybox_artifacts, tmp_path):
    """The same 5 s outage with the Go shim, where it keeps its events too (containerd 1.6.20)."""
    outage_scenario(containerd_factory(), busybox_artifacts, tmp_path, RUNC, 5)


def outage_scenario(c, busybox_artifacts, tmp_path, runtime: str, outage: float) -> None:
    rootfs = busybox.copy_rootfs(busybox_artifacts.rootfs, tmp_path / "rootfs")
    quitters = [new_id("q") for _ in range(2)]
    oomed = new_id("oom")
    wait_gate = "while [ ! -e /tmp/go ]; do sleep 0.05; done"
    old_ttrpc = c.ttrpc_address
    try:
        for cid in quitters:
            c.ctr("run", "-d", "--runtime", runtime, "--rootfs", str(rootfs), cid, "/bin/sh", "-c",
                  f"{wait_gate}; exit 3")
        c.ctr("run", "-d", "--runtime", runtime, "--memory-limit", str(24 * MiB), "--rootfs", str(rootfs), oomed,
              "/bin/sh", "-c", f"{wait_gate}; tail /dev/zero")
        pids = [wait_status(c, cid, "RUNNING").pid for cid in [*quitters, oomed]]
        c.stop()
        (rootfs / "tmp" / "go").touch()
        wait_until("the containers to exit", lambda: not any(procs.alive(p) for p in pids), 60)
        time.sleep(outage)
        if os.path.lexists(old_ttrpc):  # 1.6-2.2 leave it behind (refused), 2.4 removes it (not found)
            os.unlink(old_ttrpc)
        c.ttrpc_address = str(tmp_path / "ttrpc-after.sock")
        c.start()
        with EventStream(c) as events:
            os.symlink(c.ttrpc_address, old_ttrpc)  # now the shims' next retry reaches the subscriber
            for cid in [*quitters, oomed]:
                wait_until(f"{cid}'s exit event", lambda cid=cid: any(
                    e.topic == "/tasks/exit" for e in events.about(cid)), 30)
            time.sleep(3)  # anything sent twice would be here by now
            seen = {cid: [(e.topic, e.payload.get("exit_status")) for e in events.about(cid)
                          if e.topic in ("/tasks/exit", "/tasks/oom")] for cid in [*quitters, oomed]}
        for cid in quitters:
            assert seen[cid] == [("/tasks/exit", 3)], (cid, seen[cid])
        topics = [t for t, _ in seen[oomed]]
        assert topics.count("/tasks/exit") == 1 and ("/tasks/exit", 137) in seen[oomed], seen[oomed]
        if runtime == PYSHIM:  # runc.v2 publishes its OOM from another goroutine, sometimes after the exit
            assert topics == ["/tasks/oom", "/tasks/exit"], seen[oomed]
    finally:
        if c.pid is None:
            c.start()
        cleanup(c, *quitters, oomed)
        if os.path.islink(old_ttrpc):
            os.unlink(old_ttrpc)
