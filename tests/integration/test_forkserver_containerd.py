"""Containers started through the fork server on each containerd version, and what a SIGKILLed server does
(nothing to running containers; the next start falls back to a fresh daemon and revives the server).

Rules: each test has its own containerd (``containerd_factory``) whose environment carries a private
PYSHIM_FORKSERVER_DIR, so its starts find only the fork server the test observes; that server is stopped
after containerd's teardown (the ``forkserver_dir`` fixture is set up first, so it is torn down last).
The rest of the e2e suite runs with the default fork server on (/run/pyshim), as containerd would.
"""
from __future__ import annotations

import os
import signal

import pytest

from .conftest import import_image, new_id
from .e2e_helpers import PYSHIM, cleanup, task_row, wait_status
from .forkserver_helpers import FsDir, private_dir, wait_for
from .harness import procs


@pytest.fixture
def forkserver_dir(integration_host, pyshim_binary, monkeypatch: pytest.MonkeyPatch):
    d = FsDir(private_dir())
    monkeypatch.setenv("PYSHIM_FORKSERVER_DIR", str(d.directory))
    monkeypatch.delenv("PYSHIM_FORKSERVER", raising=False)
    yield d
    problems = d.stop()
    d.remove()
    assert not problems, problems


def shim_pid(c, cid: str) -> int:
    shims = [p for p in procs.shims_of(c.address) if "-id" in p.argv and p.argv[p.argv.index("-id") + 1] == cid]
    assert len(shims) == 1, shims
    return shims[0].pid


def cmdline(pid: int) -> tuple[str, ...]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return tuple(a.decode() for a in f.read().split(b"\0") if a)


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def run_detached(c, ref: str, cid: str) -> int:
    c.ctr("run", "-d", "--runtime", PYSHIM, ref, cid, "/bin/sleep", "600")
    wait_status(c, cid, "RUNNING")
    return shim_pid(c, cid)


def test_containers_run_through_the_fork_server(forkserver_dir: FsDir, containerd_factory, busybox_artifacts):
    d = forkserver_dir
    c = containerd_factory(log_level="info")
    ref = import_image(c, busybox_artifacts)
    first, second, third = new_id("fs1"), new_id("fs2"), new_id("fs3")
    try:
        out = c.ctr("run", "--rm", "--runtime", PYSHIM, ref, first, "/bin/echo", "fresh")
        assert out.stdout == "fresh\n"
        d.wait_serving()  # the first start found no server, spawned a fresh daemon and revived it
        assert d.daemons() == {}

        pid = run_detached(c, ref, second)
        assert d.daemons() == {pid: (c.namespace, second)}
        out = c.ctr("task", "exec", "--exec-id", "e1", second, "/bin/sh", "-c", "echo exec; exit 3", check=False)
        assert (out.returncode, out.stdout) == (3, "exec\n")
        out = c.ctr("run", "--rm", "--runtime", PYSHIM, ref, third, "/bin/sh", "-c", "echo forked; exit 42",
                    check=False)
        assert (out.returncode, out.stdout) == (42, "forked\n")
        assert (c.namespace, third) in d.daemons().values()
        c.ctr("task", "kill", "--signal", "SIGKILL", second)
        wait_status(c, second, "STOPPED")
        c.ctr("task", "rm", second)
        wait_for("the forked shim to exit", lambda: not procs.alive(pid), 30)
    finally:
        cleanup(c, second)


def test_sigkill_of_the_fork_server_spares_containers(forkserver_dir: FsDir, containerd_factory,
                                                      busybox_artifacts):
    d = forkserver_dir
    c = containerd_factory(log_level="info")
    ref = import_image(c, busybox_artifacts)
    fresh, forked, after, again = new_id("k1"), new_id("k2"), new_id("k3"), new_id("k4")
    try:
        fresh_pid = run_detached(c, ref, fresh)
        server = d.wait_serving()
        forked_pid = run_detached(c, ref, forked)
        assert forked_pid in d.daemons() and fresh_pid not in d.daemons()
        # a forked daemon looks like a fresh one: the same command line (but its id) and name
        as_seen = {pid: [a if a != cid else "ID" for a in cmdline(pid)]
                   for pid, cid in ((fresh_pid, fresh), (forked_pid, forked))}
        assert as_seen[fresh_pid] == as_seen[forked_pid], as_seen
        assert comm(fresh_pid) == comm(forked_pid)

        os.kill(server, signal.SIGKILL)
        wait_for("the zygotes to follow their server", lambda: not d.servers() and not d.zygotes(), 30)
        assert procs.alive(forked_pid)
        assert task_row(c, forked).status == "RUNNING"
        out = c.ctr("task", "exec", "--exec-id", "e1", forked, "/bin/echo", "still here")
        assert out.stdout == "still here\n"

        after_pid = run_detached(c, ref, after)  # no server: a fresh daemon, and the server is revived
        revived = d.wait_serving()
        assert revived != server and after_pid not in d.daemons()
        again_pid = run_detached(c, ref, again)
        assert d.daemons()[again_pid] == (c.namespace, again)
        for cid in (fresh, forked, after, again):
            c.ctr("task", "kill", "--signal", "SIGKILL", cid)
            wait_status(c, cid, "STOPPED")
            c.ctr("task", "rm", cid)
    finally:
        for cid in (fresh, forked, after, again):
            cleanup(c, cid)
