"""The OOM watcher (shim/runc/cgroups/oom.py): one report per kill-count increase, drain before the exit event,
fds owned and closed, on fake memory.events files (inotify works on any file) and on a real cgroup whose
process the kernel OOM-kills (v1 eventfd here, v2 inotify in the VM)."""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import trio

from shim.runc.cgroups import paths
from shim.runc.cgroups.oom import OomWatcher
from shim.runc.cgroups.oomsource import V1Source, V2Source
from shim.runc.cgroups.paths import CgroupPaths
from tests.prereq import unavailable


def _open_fds() -> set[int]:
    """Open fds (the listing's own directory fd is gone by the time we check each)."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:
            continue
        out.add(int(name))
    return out


def _events(group: Path, oom: int, kills: int) -> None:
    (group / "memory.events").write_text(f"low 0\nhigh 0\nmax 5\noom {oom}\noom_kill {kills}\noom_group_kill 0\n")


async def _until(what, check, timeout=2.0):
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.005)


@pytest.fixture
def group(tmp_path) -> Path:
    g = tmp_path / "grp"
    g.mkdir()
    _events(g, 0, 0)
    return g


async def test_v2_one_report_per_increase_and_fd_closed(group):
    before = _open_fds()
    reports = []
    async with trio.open_nursery() as nursery:
        w = OomWatcher("c1", V2Source(str(group)), lambda: reports.append(trio.current_time()))
        await nursery.start(w.run)
        fd = w.fd
        assert fd is not None and fd not in before
        _events(group, 1, 1)
        await _until("first report", lambda: len(reports) == 1)
        _events(group, 4, 1)  # more OOM episodes, no new kill: nothing to report
        await trio.sleep(0.1)
        assert len(reports) == 1
        _events(group, 6, 3)  # two kills seen in one look: one report, as upstream
        await _until("second report", lambda: len(reports) == 2)
        await trio.sleep(0.1)
        assert len(reports) == 2
        nursery.cancel_scope.cancel()
    assert _open_fds() == before


async def test_kill_before_the_watch_is_reported_at_start(group):
    _events(group, 1, 1)
    reports = []
    async with trio.open_nursery() as nursery:
        await nursery.start(OomWatcher("c1", V2Source(str(group)), lambda: reports.append(1)).run)
        assert reports == [1]
        nursery.cancel_scope.cancel()


async def test_drain_reports_before_the_loop_and_never_twice(group):
    reports = []
    async with trio.open_nursery() as nursery:
        w = OomWatcher("c1", V2Source(str(group)), lambda: reports.append("oom"))
        await nursery.start(w.run)
        _events(group, 1, 1)
        await w.drain(killed=True)  # the inotify event is still queued: drain reports it itself
        reports.append("exit")
        await trio.sleep(0.1)  # now the loop sees the event: no second report
        assert reports == ["oom", "exit"]
        nursery.cancel_scope.cancel()


async def test_drain_waits_for_a_kill_in_flight_only_after_sigkill(group, autojump_clock):
    reports = []
    w = OomWatcher("c1", V2Source(str(group)), lambda: reports.append(trio.current_time()))
    _events(group, 1, 0)  # an OOM episode whose kill the kernel has not counted yet
    t0 = trio.current_time()
    await w.drain(killed=False)
    assert reports == [] and trio.current_time() == t0  # a normal exit never waits

    async def kernel_counts_the_kill():
        await trio.sleep(0.05)
        _events(group, 1, 1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(kernel_counts_the_kill)
        await w.drain(killed=True)
    assert len(reports) == 1 and 0.05 <= reports[0] - t0 < 0.1
    _events(group, 3, 1)  # episodes without a kill: the drain waits, bounded, and reports nothing
    await w.drain(killed=True)
    assert len(reports) == 1 and trio.current_time() - t0 < 0.4


async def test_group_removed_ends_the_watch_and_closes_the_fd(group):
    before = _open_fds()
    async with trio.open_nursery() as nursery:
        w = OomWatcher("c1", V2Source(str(group)), lambda: None)
        await nursery.start(w.run)
        assert w.fd is not None
        (group / "memory.events").unlink()
        await _until("watch ended", lambda: w.fd is None)
    assert _open_fds() == before


async def test_unwatchable_cgroup_is_logged_not_raised(tmp_path, caplog):
    before = _open_fds()
    w = OomWatcher("c1", V2Source(str(tmp_path / "absent")), lambda: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(w.run)
    assert "cannot watch for OOM kills" in caplog.text
    w1 = OomWatcher("c1", V1Source(str(tmp_path)), lambda: None)  # not a memory cgroup
    async with trio.open_nursery() as nursery:
        await nursery.start(w1.run)
    assert _open_fds() == before


def test_no_memory_controller_no_watcher():
    assert OomWatcher.for_cgroup("c1", CgroupPaths(1, {"cpu": "/x"}), lambda: None) is None


# -- the real kernel --------------------------------------------------------------------------


def _real_group():
    """A fresh memory cgroup of this host's kind: (CgroupPaths, directory to remove)."""
    if os.geteuid() != 0:
        unavailable("a real OOM kill needs root (cgroup creation)")
    mounts = paths.host_mounts()
    name = f"pyshim-oomtest-{uuid.uuid4().hex[:8]}"
    if mounts.version == 2:
        root = Path(mounts.unified.point)
        if "memory" not in (root / "cgroup.subtree_control").read_text().split():
            unavailable("the memory controller is not enabled for the root's children")
        d = root / name
        d.mkdir()
        (d / "memory.max").write_text(str(16 << 20))
        if (d / "memory.swap.max").exists():
            (d / "memory.swap.max").write_text("0")
        return CgroupPaths(2, {}, str(d)), d
    mem = mounts.v1.get("memory")
    if mem is None:
        unavailable("no v1 memory hierarchy")
    d = Path(mem.point) / name
    d.mkdir()
    (d / "memory.limit_in_bytes").write_text(str(16 << 20))
    if (d / "memory.memsw.limit_in_bytes").exists():
        (d / "memory.memsw.limit_in_bytes").write_text(str(16 << 20))
    return CgroupPaths(1, {"memory": str(d)}, ""), d


async def test_real_oom_kill_is_reported_once_within_a_second():
    where, d = _real_group()
    before = _open_fds()
    reports = []
    proc = None
    try:
        async with trio.open_nursery() as nursery:
            w = OomWatcher.for_cgroup("real", where, lambda: reports.append(trio.current_time()))
            await nursery.start(w.run)
            assert w.fd is not None
            proc = subprocess.Popen(["/bin/sh", "-c", f"echo $$ > {d}/cgroup.procs && exec tail /dev/zero"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t0 = trio.current_time()
            status = await trio.to_thread.run_sync(proc.wait)
            assert status == -9, f"expected an OOM SIGKILL, got {status}"
            await _until("OOM report", lambda: reports, timeout=1.0)
            await w.drain(killed=True)
            await trio.sleep(0.2)
            assert len(reports) == 1
            nursery.cancel_scope.cancel()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for _ in range(50):
            try:
                d.rmdir()
                break
            except OSError:
                await trio.sleep(0.05)
    assert _open_fds() == before


async def test_unexpected_errors_end_the_watch_quietly(group, caplog):
    """An EIO-like failure must not cancel the container's nursery, and drain must never raise."""
    class Failing(V2Source):
        fail = False

        def counters(self):
            if self.fail:
                raise OSError(5, "Input/output error")
            return super().counters()

    source = Failing(str(group))
    before = _open_fds()
    async with trio.open_nursery() as nursery:
        w = OomWatcher("c1", source, lambda: None)
        await nursery.start(w.run)
        source.fail = True
        await w.drain(killed=True)
        _events(group, 1, 1)
        await _until("watch ended", lambda: w.fd is None)
    assert "OOM watch failed" in caplog.text and "OOM drain failed" in caplog.text
    assert _open_fds() == before
