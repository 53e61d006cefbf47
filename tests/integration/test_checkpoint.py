"""Checkpoint and restore (CRIU) through a real containerd, for pyshim and the Go runc shim side by side.

The proof is a busybox loop that appends 1, 2, 3, ... to a log file: after a restore the log continues with the
number after the one the checkpoint saw, not from 1 and not from where a still-running original got to.

How each containerd version lets a client do it (C16/C17/C21 ``cmd/ctr``, ``client/task.go``,
``services/tasks/local.go``, read for these tests):
- ``ctr task checkpoint`` pauses the task, checkpoints it and resumes it; 1.6/1.7 ctr send the options
  (``--exit``, ``--image-path``, ``--work-path``) only to runtimes named io.containerd.runc.v1/v2, and
  1.6/1.7 containerd read ``image_path`` only for io.containerd.runc.*: for pyshim the images go into
  containerd's content store as image ``containerd.io/checkpoint/<id>:<date>``.
- No ctr restores that image: ``ctr run`` has no ``--checkpoint`` flag in any version (run.go reads an
  undeclared flag) and ``ctr container restore`` needs the annotations only ``ctr container checkpoint``
  writes.  The restore here is what the client library does: a task Create carrying the checkpoint
  descriptor, into the same container (ctl_grpc.py).
- ``ctr container checkpoint --task`` + ``ctr container restore --live`` is ctr's own round trip.
Needs a working CRIU: on a host where ``criu check`` fails (this machine's 6.18 kernel, criu 3.17.1) the tests
are unavailable with criu's own words; they are marked ``vm`` and ``criu`` and run inside the VM
(tools/vm-test), where Debian's 6.1 kernel lets criu work.  The failure path needs no CRIU and runs anywhere.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from protos import runc_options_pb2

from tests.prereq import unavailable

from . import ctl_grpc
from .conftest import new_id
from .harness.daemon import ContainerdError
from .e2e_helpers import RUNC, cleanup, runtime, running, task_row, wait_status, wait_until  # noqa: F401

COUNT = "i=0; while true; do i=$((i+1)); echo $i >> {log}; sleep 0.2; done"
# The counter needs no network, and CRIU locks a container's own network namespace with iptables-restore
# (criu 3.17's default), which a minimal system may lack ("Locking network failed: iptables-restore returned -1"
# in the VM image): the containers join the host's network namespace, which CRIU leaves alone (runc declares it
# external).  Joined by path rather than --net-host, which would also bind-mount the host's /etc/hosts.
NET = ("--with-ns", "network:/proc/1/ns/net")
SLOW = 20  # TCG emulation in the VM is 10-20x slower than this machine


@pytest.fixture(scope="session")
def criu_works() -> None:
    try:
        res = subprocess.run(["criu", "check"], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        unavailable("criu is not installed (Debian's runc recommends it: apt-get install criu)")
    if res.returncode != 0:
        tail = " | ".join((res.stdout + res.stderr).strip().splitlines()[-3:])
        unavailable(f"criu check fails on this host (kernel {os.uname().release}): {tail}; checkpoint/restore "
                    f"run inside the VM instead (tools/vm-test: markers vm and criu)")


def criu_log(message: str) -> str:
    """The tail of the CRIU log a checkpoint failure names (``path= <bundle>/criu-dump.log``), for the report."""
    m = re.search(r"path= (\S+\.log)", message)
    if not m or not os.path.exists(m[1]):
        return ""
    return "\n--- " + m[1] + " (tail) ---\n" + "\n".join(Path(m[1]).read_text(errors="replace").splitlines()[-25:])


@contextmanager
def explained(c):
    """Re-raise a failed ctr/gRPC checkpoint with CRIU's own log attached."""
    try:
        yield
    except (ContainerdError, ctl_grpc.CallError) as e:
        raise AssertionError(f"{e}{criu_log(str(e))}") from None


def numbers(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def wait_count(log: Path, at_least: int, timeout: float = 10.0 * SLOW) -> list[int]:
    return wait_until(f"{at_least} numbers in {log}", lambda: (lambda n: n if len(n) >= at_least else None)(
        numbers(log)), timeout=timeout)


def assert_continues(seq: list[int], saved: int, after: int) -> None:
    """``seq`` is 1..after (the original), then saved+1, saved+2, ... (the restored process)."""
    assert seq[:after] == list(range(1, after + 1)), seq
    restored = seq[after:]
    assert restored and restored == list(range(saved + 1, saved + 1 + len(restored))), (saved, after, seq)


def task_gone(c, cid: str) -> None:
    """Delete the stopped task (its runtime state is gone after a checkpoint that stopped it)."""
    wait_status(c, cid, "STOPPED", timeout=30 * SLOW)
    c.ctr("task", "rm", cid, timeout=60 * SLOW)


def restore_from(c, api: ctl_grpc.Tasks, cid: str, descriptors: list, image_path: str = "") -> int:
    """A task for ``cid`` from a checkpoint: the content-store archive if containerd made one, else the
    directory (containerd reads runc Options.criu_image_path: 1.6/1.7 for io.containerd.runc.*, 2.x for all)."""
    if descriptors:
        api.create(cid, checkpoint=ctl_grpc.criu_descriptor(descriptors))
    else:
        api.create(cid, runc_options=runc_options_pb2.Options(criu_image_path=image_path))
    return api.start(cid)


@pytest.mark.vm
@pytest.mark.criu
@pytest.mark.parametrize("exit_", [True, False], ids=["exit", "leave-running"])
def test_checkpoint_with_options_then_restore(criu_works, containerd, runtime, busybox_rootfs, tmp_path, exit_):
    """Tasks.Checkpoint with CheckpointOptions {exit, image_path}, as the client library sends them."""
    ctl_grpc.require()
    api = ctl_grpc.Tasks(containerd, timeout=60 * SLOW)
    cid, log, images = new_id("ckopt"), busybox_rootfs / "count.log", tmp_path / "images"
    with running(containerd, runtime, cid, busybox_rootfs, "/bin/sh", "-c", COUNT.format(log="/count.log"),
                 extra=NET, timeout=15 * SLOW):
        wait_count(log, 3)
        containerd.ctr("task", "pause", cid)  # as the client does before a checkpoint; fixes the saved count
        saved = len(numbers(log))
        with explained(containerd):
            descriptors = api.checkpoint(cid, runc_options_pb2.CheckpointOptions(exit=exit_,
                                                                                 image_path=str(images)))
        assert (images / "inventory.img").is_file()  # the client's image_path, whatever containerd did
        if exit_:
            wait_status(containerd, cid, "STOPPED", timeout=30 * SLOW)
            assert len(numbers(log)) == saved
        else:
            containerd.ctr("task", "resume", cid)
            wait_count(log, saved + 3)  # the original went on counting
            containerd.ctr("task", "kill", "--signal", "SIGKILL", cid)
        task_gone(containerd, cid)
        after = len(numbers(log))
        pid = restore_from(containerd, api, cid, descriptors, str(images))
        assert task_row(containerd, cid).pid == pid
        wait_status(containerd, cid, "RUNNING", timeout=15 * SLOW)
        assert_continues(wait_count(log, after + 3), saved, after)


@pytest.mark.vm
@pytest.mark.criu
def test_ctr_task_checkpoint_then_restore(criu_works, containerd, runtime, busybox_rootfs):
    """``ctr task checkpoint`` (leave running, images in the content store), then a task Create from it."""
    ctl_grpc.require()
    api = ctl_grpc.Tasks(containerd, timeout=60 * SLOW)
    cid, log = new_id("ckctr"), busybox_rootfs / "count.log"
    with running(containerd, runtime, cid, busybox_rootfs, "/bin/sh", "-c", COUNT.format(log="/count.log"),
                 extra=NET, timeout=15 * SLOW):
        before = len(wait_count(log, 3))
        with explained(containerd):
            name = containerd.ctr("task", "checkpoint", cid, timeout=120 * SLOW).stdout.strip()
        assert name.startswith(f"containerd.io/checkpoint/{cid}:"), name
        within = len(numbers(log))  # the checkpoint saw a count in before..within
        assert task_row(containerd, cid).status == "RUNNING"  # ctr resumed it after the checkpoint
        wait_count(log, within + 2)
        containerd.ctr("task", "kill", "--signal", "SIGKILL", cid)
        task_gone(containerd, cid)
        after = len(numbers(log))
        restore_from(containerd, api, cid, image_descriptors(containerd, name))
        seq = wait_count(log, after + 3)
        saved = seq[after] - 1
        assert before <= saved <= within, (before, within, seq)
        assert_continues(seq, saved, after)
        containerd.ctr("images", "rm", name)


def image_descriptors(c, name: str) -> list:
    """The manifests of a checkpoint image's index (``ctr images ls`` for its digest, ``ctr content get``)."""
    rows = [line.split() for line in c.ctr("images", "ls").stdout.splitlines()[1:]]
    digest = next(r[2] for r in rows if r and r[0] == name)
    index = json.loads(c.ctr("content", "get", digest).stdout)
    return [ctl_grpc.M["Descriptor"](media_type=m["mediaType"], digest=m["digest"], size=m["size"])
            for m in index["manifests"]]


@pytest.mark.vm
@pytest.mark.criu
def test_ctr_container_checkpoint_and_restore_live(criu_works, containerd, runtime, busybox_image, tmp_path):
    """ctr's own round trip: ``ctr container checkpoint --task`` then ``ctr container restore --live``."""
    data = tmp_path / "data"
    data.mkdir()
    log = data / "count.log"
    cid, copy, ref = new_id("ckc"), new_id("ckr"), f"pyshim.test/checkpoint/{new_id('ref')}:latest"
    mount = ("--mount", f"type=bind,src={data},dst=/data,options=rbind:rw", *NET)
    try:
        with running(containerd, runtime, cid, busybox_image, "/bin/sh", "-c", COUNT.format(log="/data/count.log"),
                     extra=mount, timeout=15 * SLOW):
            before = len(wait_count(log, 3))
            with explained(containerd):
                containerd.ctr("container", "checkpoint", "--task", cid, ref, timeout=120 * SLOW)
            within = len(numbers(log))
            containerd.ctr("task", "kill", "--signal", "SIGKILL", cid)
            task_gone(containerd, cid)
        after = len(numbers(log))
        res = containerd.ctr("container", "restore", "--live", copy, ref, timeout=120 * SLOW, check=False)
        assert res.returncode == 0, res.stderr
        wait_status(containerd, copy, "RUNNING", timeout=30 * SLOW)
        info = json.loads(containerd.ctr("container", "info", copy).stdout)
        assert info["Runtime"]["Name"] == runtime  # restored with the runtime recorded in the checkpoint
        seq = wait_count(log, after + 3)
        saved = seq[after] - 1
        assert before <= saved <= within, (before, within, seq)
        assert_continues(seq, saved, after)
    finally:
        cleanup(containerd, copy)
        containerd.ctr("images", "rm", ref, check=False)


@pytest.mark.parametrize("runtime_", ["pyshim", "runc"])
def test_checkpoint_failure_reaches_ctr(containerd, busybox_rootfs, tmp_path, runtime_, request):
    """CRIU failing (a stand-in criu that refuses, so it fails alike on every host): runc's error reaches ctr,
    the task is resumed and keeps running. runc gets the stand-in through pyshim's config (criu_path) and,
    for runc.v2, a --runc-binary wrapper (containerd 1.7+'s runc shim no longer passes Options.criu_path)."""
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\necho 'stand-in criu: refusing' >&2\nexit 1\n")
    fake.chmod(0o755)
    if runtime_ == "pyshim":
        request.getfixturevalue("pyshim_binary")
        cfg = tmp_path / "pyshim.toml"
        cfg.write_text(f'[backends.runc]\ncriu_path = "{fake}"\n')
        rt, extra = "io.containerd.pyshim.v1", ("--runtime-config-path", str(cfg))
    else:
        wrapper = tmp_path / "runc-with-fake-criu"
        wrapper.write_text(f'#!/bin/sh\nexec runc --criu {fake} "$@"\n')
        wrapper.chmod(0o755)
        rt, extra = RUNC, ("--runc-binary", str(wrapper))
    cid = new_id("ckfail")
    with running(containerd, rt, cid, busybox_rootfs, "/bin/sleep", "600", extra=extra, timeout=15 * SLOW):
        res = containerd.ctr("task", "checkpoint", cid, check=False, timeout=120)
        assert res.returncode != 0
        assert "CRIU version check failed" in res.stderr, res.stderr  # runc's own words
        if runtime_ == "pyshim":
            assert res.stderr.startswith("ctr: OCI runtime checkpoint failed: "), res.stderr
        assert task_row(containerd, cid).status == "RUNNING"
        assert not (Path(containerd.bundle(cid)) / "work" / "criu-work").exists()
