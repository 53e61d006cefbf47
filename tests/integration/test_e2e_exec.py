"""End-to-end scenarios 6-8 of the shim matrix: concurrent execs, kill and kill --all, ``ctr task ps``.

Rules: each test runs for pyshim and for the Go runc shim (``runtime`` fixture) on the session containerd
of every version, asserting what runc.v2 does.  Facts the assertions lean on (checked against runc.v2):
a pid namespace's init ignores signals it has no handler for, even from the host, except SIGKILL; ``ctr task
kill`` without ``--all`` signals the init only; ``--all`` signals every process of the container's cgroup;
the init's death kills every other process of its pid namespace.  Foreground ``ctr run`` / ``ctr task exec``
exit with the process's status, which is how the exit codes are read here.
"""
from __future__ import annotations

import time

from .conftest import new_id
from .e2e_helpers import (cgroup_pids, cleanup, finish, runtime, running, start, task_row,  # noqa: F401
                          wait_status, wait_until)
from .harness import ctrout


def test_concurrent_execs(containerd, runtime, busybox_rootfs):
    cid = new_id("exec")
    codes = (0, 3, 17, 42, 255)
    # The exec sleeps before writing: ctr opens its read end of each FIFO in a goroutine and cancels that open
    # when the process is deleted, so output of an exec that ends within a few ms of starting can be lost on
    # a loaded machine, with runc.v2 as with pyshim (seen here under load; containerd cio/fifo client race).
    with running(containerd, runtime, cid, busybox_rootfs, "/bin/sleep", "600"):
        execs = {code: start(containerd, "task", "exec", "--exec-id", f"e{code}", cid,
                              "/bin/sh", "-c", f"sleep 0.3; echo out-{code}; echo err-{code} >&2; exit {code}")
                 for code in codes}
        results = {code: finish(p) for code, p in execs.items()}
        for code, res in results.items():
            assert (res.returncode, res.stdout) == (code, f"out-{code}\n".encode()), (code, res.stderr)
            assert res.stderr.endswith(f"err-{code}\n".encode())
        assert task_row(containerd, cid).status == "RUNNING"


def test_kill_and_kill_all(containerd, runtime, busybox_rootfs):
    # One container: kill without --all reaches the init only, --all reaches the exec too.
    cid = new_id("kill")
    init = start(containerd, "run", "--runtime", runtime, "--rootfs", str(busybox_rootfs), cid, "/bin/sleep", "600")
    try:
        row = wait_status(containerd, cid, "RUNNING")
        ex = start(containerd, "task", "exec", "--exec-id", "sleeper", cid, "/bin/sleep", "600")
        wait_until("the exec to run", lambda: len(cgroup_pids(containerd.namespace, cid)) == 2)
        containerd.ctr("task", "kill", "--signal", "SIGTERM", cid)  # init has no handler: ignored
        time.sleep(0.3)
        assert ex.poll() is None and init.poll() is None
        assert len(cgroup_pids(containerd.namespace, cid)) == 2
        containerd.ctr("task", "kill", "--all", "--signal", "SIGTERM", cid)  # the exec dies, init ignores it
        assert finish(ex).returncode == 143
        assert task_row(containerd, cid) == row
        assert cgroup_pids(containerd.namespace, cid) == {row.pid}
        containerd.ctr("task", "kill", "--signal", "SIGKILL", cid)
        assert finish(init).returncode == 137
    finally:
        if init.poll() is None:
            finish(init, 1)
        cleanup(containerd, cid)

    # Another: kill --all SIGKILL ends the init and every exec at once.
    cid = new_id("killall")
    init = start(containerd, "run", "--runtime", runtime, "--rootfs", str(busybox_rootfs), cid,
                  "/bin/sh", "-c", "sleep 600 & sleep 600")
    try:
        wait_status(containerd, cid, "RUNNING")
        execs = [start(containerd, "task", "exec", "--exec-id", f"s{i}", cid, "/bin/sleep", "600") for i in range(2)]
        wait_until("init, its child and two execs", lambda: len(cgroup_pids(containerd.namespace, cid)) == 4)
        containerd.ctr("task", "kill", "--all", "--signal", "SIGKILL", cid)
        assert [finish(p).returncode for p in execs] == [137, 137]
        assert finish(init).returncode == 137
        assert task_row(containerd, cid) is None  # the foreground ctr run deleted the task after its exit
        assert cgroup_pids(containerd.namespace, cid) == set()
    finally:
        cleanup(containerd, cid)


def test_ps_lists_init_and_exec(containerd, runtime, busybox_rootfs):
    cid = new_id("ps")
    with running(containerd, runtime, cid, busybox_rootfs, "/bin/sleep", "600") as row:
        ex = start(containerd, "task", "exec", "--exec-id", "psexec", cid, "/bin/sleep", "600")
        try:
            pids = wait_until("the exec to run", lambda: (lambda s: s if len(s) == 2 else None)(
                cgroup_pids(containerd.namespace, cid)))
            listed = {p.pid: p.info for p in ctrout.task_processes(containerd.ctr("task", "ps", cid).stdout)}
            assert set(listed) == pids
            assert listed[row.pid] == "-"  # the init carries no details
            (exec_pid,) = pids - {row.pid}
            # the exec's ProcessDetails, as ctr 1.x (gogo) and 2.x (protobuf text) print them
            assert listed[exec_pid] in ("&ProcessDetails{ExecID:psexec,XXX_unrecognized:[],}", 'exec_id:"psexec"')
        finally:
            containerd.ctr("task", "kill", "--all", "--signal", "SIGKILL", cid)
            assert finish(ex).returncode == 137


FINISHED = "ctr: process already finished: not found\n"  # runc.v2's words, with the class, on every version


def test_kill_of_a_finished_process(containerd, runtime, busybox_rootfs):
    # A detached exec that ended, then the init after it ended: ``ctr task kill`` prints the same line for both
    # shims on every containerd version (2.x prints a NOT_FOUND message as the shim sent it: docs/differences.md).
    cid = new_id("gone")
    with running(containerd, runtime, cid, busybox_rootfs, "/bin/sleep", "600") as row:
        containerd.ctr("task", "exec", "--detach", "--exec-id", "quick", cid, "/bin/true")
        res = wait_until("the exec to end", lambda: (lambda r: r if r.returncode else None)(containerd.ctr(
            "task", "kill", "--exec-id", "quick", "--signal", "SIGTERM", cid, check=False)))
        assert res.stderr == FINISHED
        containerd.ctr("task", "kill", "--signal", "SIGKILL", cid)
        wait_status(containerd, cid, "STOPPED")
        res = containerd.ctr("task", "kill", cid, check=False)
        assert (res.returncode, res.stderr) == (1, FINISHED)
        assert task_row(containerd, cid).pid == row.pid
