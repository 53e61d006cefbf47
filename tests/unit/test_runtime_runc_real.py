"""OciCli driving the real runc: create/start/state/ps/exec/pause/resume/update/kill/delete of a busybox container.

Rules:
- Needs root, runc on $PATH and Debian's busybox-static. Outside CI a missing prerequisite skips with its reason;
  under CI=true it fails.
- Commands run through a tiny subprocess-based Launcher defined here (not the shim's reaper): no SIGCHLD reaper
  runs in the test process, so Popen may wait for its own children.
- Private everything: the bundle and runc's --root live in tmp_path, the container id is unique, and whatever is
  left is removed with `runc delete --force` at the end.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess
import uuid

import pytest
import trio

from runtime import builtin
from runtime.base import ContainerRef, CreateSpec, ExecSpec, RunResult, Status, StdioFds
from runtime.errors import ContainerNotFound, ProcessFinished, RuntimeFailed
from runtime.oci_cli import OciCli
from tests.prereq import unavailable
from runtime.oci_config import configure

pytestmark = pytest.mark.integration





class SubprocessLauncher:
    """runtime.base.Launcher on subprocess.Popen, run in a worker thread."""

    async def run(self, argv, *, cwd=None, env=None, stdin=None, stdout=None, stderr=None, pass_fds=()):
        def go() -> RunResult:
            feed = stdin if isinstance(stdin, bytes) else None
            p = subprocess.Popen(
                list(argv), cwd=cwd, env=env, pass_fds=tuple(pass_fds),
                stdin=subprocess.PIPE if feed is not None else (subprocess.DEVNULL if stdin is None else stdin),
                stdout=subprocess.PIPE if stdout is None else stdout,
                stderr=(subprocess.STDOUT if stdout is None else subprocess.PIPE) if stderr is None else stderr)
            out, err = p.communicate(feed)
            status = p.returncode if p.returncode >= 0 else 128 - p.returncode
            return RunResult(p.pid, status, (out or b"") + (err or b""))
        return await trio.to_thread.run_sync(go)


@pytest.fixture
def runc_bundle(tmp_path):
    if os.geteuid() != 0:
        unavailable("needs root to run runc")
    runc = shutil.which("runc", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if runc is None:
        unavailable("runc is not installed (Debian package runc)")
    from tests.integration.harness import busybox
    from tests.integration.harness.dist import Unavailable
    try:
        box = busybox.ensure()
    except Unavailable as e:
        unavailable(str(e))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    busybox.copy_rootfs(box.rootfs, bundle / "rootfs")
    subprocess.run([runc, "spec"], cwd=bundle, check=True)
    return runc, bundle


def _write_config(bundle, args):
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    config["process"]["args"] = args
    config["process"]["terminal"] = False
    path.write_text(json.dumps(config))
    return config


async def _wait_for(predicate, what, timeout=10.0):
    """Poll `predicate` (plain or async) until it returns something true; return that."""
    with trio.move_on_after(timeout):
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_real_runc_lifecycle(runc_bundle, tmp_path):
    runc, bundle = runc_bundle
    config = _write_config(bundle, ["sh", "-c", "echo hello-from-busybox; exec sleep 1000"])
    state_root = tmp_path / "state"
    backend = OciCli(configure(builtin.RUNC, {"binary_name": runc, "root": str(state_root)}, "pyshim-test"),
                     SubprocessLauncher())
    cid = f"pyshim-rt-{uuid.uuid4().hex[:12]}"
    ref = ContainerRef(cid, str(bundle))
    out_path = tmp_path / "out.txt"

    def output() -> str:
        return out_path.read_text()

    try:
        with trio.fail_after(60):
            out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                pid = await backend.create(CreateSpec(cid, str(bundle), f"{bundle}/init.pid",
                                                      StdioFds(stdout=out_fd, stderr=out_fd)))
                st = await backend.state(ref)
                assert (st.id, st.pid, st.status, st.bundle) == (cid, pid, Status.CREATED, str(bundle))
                assert os.path.isdir(state_root / "pyshim-test" / cid)

                await backend.start(ref)
                await _wait_for(lambda: "hello-from-busybox" in output(), "container output")
                assert (await backend.state(ref)).status is Status.RUNNING
                assert pid in await backend.ps(ref)

                process = dict(config["process"], args=["sh", "-c", "echo exec-ok"])
                exec_pid = await backend.exec(ExecSpec(cid, "e1", str(bundle), json.dumps(process).encode(),
                                                       f"{bundle}/e1.pid", StdioFds(stdout=out_fd, stderr=out_fd)))
                assert exec_pid > 0 and exec_pid != pid
                await _wait_for(lambda: "exec-ok" in output(), "exec output")
            finally:
                os.close(out_fd)

            await backend.pause(ref)
            assert (await backend.state(ref)).status is Status.PAUSED
            await backend.resume(ref)
            assert (await backend.state(ref)).status is Status.RUNNING
            await backend.update(ref, json.dumps({"pids": {"limit": 100}}).encode())

            await backend.kill(ref, signal.SIGKILL)
            st = await _wait_for(lambda: _stopped(backend, ref), "the init to stop")
            assert st.pid == 0
            with pytest.raises(ProcessFinished, match="^process already finished$"):
                await backend.kill(ref, signal.SIGTERM)

            await backend.delete(ref)
            with pytest.raises(ContainerNotFound, match="container does not exist"):
                await backend.state(ref)
            with pytest.raises(ContainerNotFound, match="^failed to delete task: container does not exist$"):
                await backend.delete(ref)
            await backend.delete(ref, force=True)       # runc: --force on a missing container succeeds

            # a failing create: the message is runc's own, read from what this call appended to log.json
            _write_config(bundle, ["nosuch-binary"])
            bad = f"{cid}-bad"
            with pytest.raises(RuntimeFailed) as info:
                await backend.create(CreateSpec(bad, str(bundle), f"{bundle}/bad.pid"))
            assert str(info.value).startswith("OCI runtime create failed: ")
            assert 'exec: "nosuch-binary": executable file not found in $PATH' in str(info.value)
    finally:
        for leftover in (cid, f"{cid}-bad"):
            subprocess.run([runc, "--root", str(state_root / "pyshim-test"), "delete", "--force", leftover],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _stopped(backend, ref):
    st = await backend.state(ref)
    return st if st.status is Status.STOPPED else None
