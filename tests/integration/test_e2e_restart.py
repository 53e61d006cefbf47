"""End-to-end scenarios 10-11 of the shim matrix: containerd restarted under a running container, and a
container that exits while containerd is down.

Rules: each test has its own containerd (``containerd_factory``) because it stops the daemon; stopping is
the harness's SIGTERM to containerd alone, so shims and containers live on exactly as in a real restart.
The exit code after the fact is read as a client would: ``ctr task attach`` (Wait on the reloaded task;
attach deletes the task when it ends) or the warning of ``ctr task rm``.  Both runtimes, every containerd
version; the expected values are runc.v2's, which differ between 1.6 and 1.7+ where noted.
"""
from __future__ import annotations

import time

from .conftest import new_id, session_idle_timeout
from .e2e_helpers import cleanup, finish, runtime, start, task_row, wait_status, wait_until  # noqa: F401
from .harness import procs


def _gone(c, cid: str, shim: procs.Proc) -> None:
    """Remove the container; then nothing of it may remain, and its shim exits at once (runc.v2's has
    always exited by the time ``ctr containers rm`` returns; 0.5 s is slack for a loaded machine). A daemon
    shared by unrelated containers (PYSHIM_SHARING) leaves after its idle time instead, not at once."""
    c.ctr("containers", "rm", cid)
    assert task_row(c, cid) is None and not c.bundle(cid).exists()
    wait_until(f"shim {shim.pid} to exit after its container was removed", lambda: not procs.alive(shim.pid),
               timeout=0.5 + session_idle_timeout(), every=0.01)


DOWN = 2.0  # seconds containerd stays down after the container exited (restarts take seconds in real life)


def test_restart_under_running_container(containerd_factory, runtime, busybox_rootfs):
    c = containerd_factory()
    cid = new_id("rs")
    try:
        c.ctr("run", "-d", "--runtime", runtime, "--rootfs", str(busybox_rootfs), cid, "/bin/sleep", "600")
        before = wait_status(c, cid, "RUNNING")
        shims = procs.shims_of(c.address)
        (shim,) = [p for p in shims if cid in p.argv]

        c.restart()

        assert task_row(c, cid) == before
        assert procs.shims_of(c.address) == shims
        res = c.ctr("task", "exec", "--exec-id", "after", cid, "/bin/sh", "-c", "echo still here; exit 5",
                    check=False)
        assert (res.returncode, res.stdout) == (5, "still here\n"), \
            f"{res.stderr!r}; shims alive now: {procs.shims_of(c.address)}; before: {shims}; log: {c.log_path}"
        waiter = start(c, "task", "attach", cid)  # Wait answers the exit status before or after the kill
        try:
            c.ctr("task", "kill", "--signal", "SIGKILL", cid)
            res = finish(waiter)
            assert res.returncode == 137, res.stderr
        finally:
            finish(waiter, 5)
        _gone(c, cid, shim)
    finally:
        cleanup(c, cid)


def test_exit_while_containerd_down(containerd_factory, runtime, busybox_rootfs):
    c = containerd_factory()
    cid = new_id("down")
    go = busybox_rootfs / "tmp" / "go"
    try:
        c.ctr("run", "-d", "--runtime", runtime, "--rootfs", str(busybox_rootfs), cid,
              "/bin/sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 5")
        before = wait_status(c, cid, "RUNNING")
        (shim,) = [p for p in procs.shims_of(c.address) if cid in p.argv]

        c.stop()
        go.touch()
        wait_until("the container to exit", lambda: not procs.alive(before.pid))
        time.sleep(DOWN)  # the shim reaps the exit and cannot publish it: it must live on regardless
        shim_survived = procs.alive(shim.pid)
        c.start()
        assert shim_survived, "the shim died while containerd was down (its log went to a FIFO nobody read)"

        if c.dist.version.startswith("1.6."):
            after = wait_status(c, cid, "STOPPED", timeout=5)  # containerd loads its tasks before it serves
            assert after.pid == before.pid
            res = c.ctr("task", "rm", cid)
            assert "exit with non-zero exit code 5" in res.stderr
            _gone(c, cid, shim)
        else:
            # 1.7.24 and 2.1.9 ask a reloaded shim for Pids; none (the init has exited) marks the shim as
            # leaked: containerd deletes and shuts it down while loading, and drops the task without events.
            assert task_row(c, cid) is None
            wait_until("the leaked shim to be shut down", lambda: not procs.alive(shim.pid), timeout=10)
            _gone(c, cid, shim)
    finally:
        if c.pid is None:
            c.start()  # failed while containerd was down: bring it back so cleanup can remove the task
        cleanup(c, cid)
