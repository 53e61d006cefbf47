"""``sharing = "namespace"``: unrelated containers share pyshim daemons, in shards of ``max_tasks_per_daemon``.

What is proven, with real containerd, runc and ctr (pyshim only: the Go shim has no such mode):
- containers of one namespace and one configuration land in one daemon until it is full, then in the next;
- each still runs, execs, streams its own output and reports its own exit code;
- concurrent starts never make two daemons for one shard nor put more than ``max_tasks_per_daemon`` in one;
- containers whose runtime options differ (another config file here) never share a daemon;
- a daemon without tasks stays ``idle_timeout`` seconds for the next container, then exits;
- SIGKILL of one shared daemon takes down exactly its shard: containerd reports every task of it exited (137) and
  cleans it up, while the other shard's containers and new containers are unaffected, and nothing leaks.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import import_image, new_id
from .e2e_helpers import PYSHIM, EventStream, cleanup, ctr_bytes, finish, start, wait_status, wait_until
from .harness import procs
from .harness.churn import write_sharing_config
from .harness.daemon import PrivateContainerd


def started_daemons(c: PrivateContainerd) -> int:
    """How many pyshim daemons have started for this containerd (each logs it once into containerd's log)."""
    return c.log_path.read_text(errors="replace").count("starting io.containerd.pyshim.v1 daemon")


def run_detached(c: PrivateContainerd, ref: str, cfg: Path, cid: str, *argv: str):
    return start(c, "run", "-d", "--runtime", PYSHIM, "--runtime-config-path", str(cfg), ref, cid, *argv)


@pytest.fixture
def ref(containerd, pyshim_binary, busybox_artifacts) -> str:
    return import_image(containerd, busybox_artifacts)


def test_containers_fill_one_daemon_then_the_next(containerd, ref, tmp_path):
    c = containerd
    cfg = write_sharing_config(tmp_path / "shared.toml", max_tasks=3)
    cids = [new_id("sh") for _ in range(4)]
    try:
        for cid in cids:  # one at a time: shard 0 fills first
            res = finish(run_detached(c, ref, cfg, cid, "/bin/sleep", "600"), timeout=60)
            assert res.returncode == 0, (cid, res.stderr)
            wait_status(c, cid, "RUNNING")
        daemons = [c.shim_daemon(cid) for cid in cids]
        assert daemons[0] == daemons[1] == daemons[2] != daemons[3], daemons
        for i, cid in enumerate(cids):  # each answers for itself through the shared daemon
            out = ctr_bytes(c, "task", "exec", "--exec-id", "e", cid, "/bin/sh", "-c", f"echo from {cid}; exit {20 + i}")
            assert (out.returncode, out.stdout) == (20 + i, f"from {cid}\n".encode()), out
        c.ctr("task", "kill", "--signal", "SIGKILL", cids[1])
        wait_status(c, cids[1], "STOPPED")
        assert c.ctr("task", "ls").returncode == 0
        rows = {cid: wait_status(c, cid, "RUNNING") for cid in (cids[0], cids[2])}  # its neighbours run on
        assert all(rows.values())
    finally:
        cleanup(c, *cids)


def test_foreground_runs_stream_and_exit_in_a_shared_daemon(containerd, ref, tmp_path):
    c = containerd
    cfg = write_sharing_config(tmp_path / "shared.toml", max_tasks=8)
    cid_keep = new_id("keep")
    try:
        res = finish(run_detached(c, ref, cfg, cid_keep, "/bin/sleep", "600"), timeout=60)
        assert res.returncode == 0, res.stderr
        keeper = c.shim_daemon(cid_keep)
        daemons_started = started_daemons(c)
        for code, lines in ((0, 20000), (3, 1), (7, 5000)):
            cid = new_id("fg")
            out = ctr_bytes(c, "run", "--rm", "--runtime", PYSHIM, "--runtime-config-path", str(cfg), ref, cid,
                            "/bin/sh", "-c", f"seq 1 {lines}; exit {code}", timeout=60)
            assert out.returncode == code, out.stderr
            assert out.stdout == "".join(f"{i}\n" for i in range(1, lines + 1)).encode()
        assert procs.alive(keeper) and c.shim_daemon(cid_keep) == keeper
        assert started_daemons(c) == daemons_started  # all served by the keeper's daemon: none was started
    finally:
        cleanup(c, cid_keep)


def test_concurrent_starts_never_overfill_a_shard(containerd, ref, tmp_path):
    c = containerd
    size, total = 4, 14
    cfg = write_sharing_config(tmp_path / "shared.toml", max_tasks=size)
    cids = [new_id("cc") for _ in range(total)]
    try:
        runs = [run_detached(c, ref, cfg, cid, "/bin/sleep", "600") for cid in cids]
        for cid, run in zip(cids, runs):
            res = finish(run, timeout=120)
            assert res.returncode == 0, (cid, res.stderr)
        for cid in cids:
            wait_status(c, cid, "RUNNING")
        by_daemon: dict[int, list[str]] = {}
        for cid in cids:
            by_daemon.setdefault(c.shim_daemon(cid), []).append(cid)
        sizes = sorted(len(v) for v in by_daemon.values())
        assert max(sizes) <= size and sum(sizes) == total, by_daemon
        assert len(by_daemon) == -(-total // size), sizes  # as few daemons as the shards need: no duplicate shard
    finally:
        cleanup(c, *cids)


def test_other_runtime_options_never_share(containerd, ref, tmp_path):
    c = containerd
    a, b = write_sharing_config(tmp_path / "a.toml", max_tasks=10), write_sharing_config(tmp_path / "b.toml", max_tasks=10)
    cids = [new_id("oa"), new_id("oa"), new_id("ob")]
    try:
        for cid, cfg in zip(cids, (a, a, b)):
            res = finish(run_detached(c, ref, cfg, cid, "/bin/sleep", "600"), timeout=60)
            assert res.returncode == 0, res.stderr
        daemons = [c.shim_daemon(cid) for cid in cids]
        assert daemons[0] == daemons[1] != daemons[2]
    finally:
        cleanup(c, *cids)


def test_an_idle_daemon_waits_for_the_next_container_then_exits(containerd, ref, tmp_path):
    c = containerd
    cfg = write_sharing_config(tmp_path / "shared.toml", max_tasks=4, idle=3.0)
    first, second = new_id("i1"), new_id("i2")
    out = ctr_bytes(c, "run", "--rm", "--runtime", PYSHIM, "--runtime-config-path", str(cfg), ref, first,
                    "/bin/true", timeout=60)
    assert out.returncode == 0, out.stderr
    daemons = [p.pid for p in procs.shims_of(c.address) if "start" not in p.argv and "delete" not in p.argv
               and first in p.argv]
    assert len(daemons) == 1  # no task left, but the daemon stays for the idle time
    before = started_daemons(c)
    out = ctr_bytes(c, "run", "--rm", "--runtime", PYSHIM, "--runtime-config-path", str(cfg), ref, second,
                    "/bin/echo", "again", timeout=60)
    assert (out.returncode, out.stdout) == (0, b"again\n"), out.stderr
    assert procs.alive(daemons[0]) and started_daemons(c) == before  # the same daemon took the second one
    started = time.monotonic()
    wait_until("the idle daemon to exit", lambda: not procs.alive(daemons[0]), 30)
    assert time.monotonic() - started >= 1.5  # ... after its idle time, not at once


def test_sigkill_of_a_shared_daemon_takes_down_only_its_shard(containerd_factory, pyshim_binary, busybox_artifacts,
                                                               tmp_path):
    c = containerd_factory()
    ref = import_image(c, busybox_artifacts)
    cfg = write_sharing_config(tmp_path / "shared.toml", max_tasks=3)
    cids = [new_id("k") for _ in range(5)]  # shard 0: three, shard 1: two
    try:
        for cid in cids:
            res = finish(run_detached(c, ref, cfg, cid, "/bin/sleep", "600"), timeout=60)
            assert res.returncode == 0, res.stderr
            wait_status(c, cid, "RUNNING")
        victim = c.shim_daemon(cids[0])
        shard0 = [cid for cid in cids if c.shim_daemon(cid) == victim]
        others = [cid for cid in cids if cid not in shard0]
        assert len(shard0) == 3 and len(others) == 2
        with EventStream(c) as events:
            os.kill(victim, signal.SIGKILL)
            for cid in shard0:  # containerd notices each task's connection closing and cleans it up
                wait_until(f"{cid}'s exit event",
                           lambda cid=cid: any(e.topic == "/tasks/exit" for e in events.about(cid)), 30)
            exits = {cid: [e for e in events.about(cid) if e.topic == "/tasks/exit"] for cid in shard0}
        for cid, evs in exits.items():
            assert len(evs) == 1 and evs[0].payload.get("exit_status") == 137, (cid, evs)
        for cid in others:  # the other shard goes on
            wait_status(c, cid, "RUNNING")
            out = ctr_bytes(c, "task", "exec", "--exec-id", "x", cid, "/bin/echo", "alive")
            assert (out.returncode, out.stdout) == (0, b"alive\n")
        fresh = new_id("after")
        out = ctr_bytes(c, "run", "--rm", "--runtime", PYSHIM, "--runtime-config-path", str(cfg), ref, fresh,
                        "/bin/echo", "fresh", timeout=60)
        assert (out.returncode, out.stdout) == (0, b"fresh\n"), out.stderr
        for cid in shard0:  # containerd deleted the killed shard's tasks: nothing of them runs
            wait_until(f"{cid} gone from the task list", lambda cid=cid: cid not in c.ctr("task", "ls").stdout, 30)
    finally:
        cleanup(c, *cids)
