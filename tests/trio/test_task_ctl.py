"""Pause/Resume, Update, Pids, Checkpoint and restore-through-Create in the task service, over a fake backend.

What is checked: the protobuf requests are decoded into the backend calls upstream's runc shim makes (C16
pkg/process/init.go, init_state.go), the state machine and its refusals, the events, and that a backend
without a capability is refused with UNIMPLEMENTED before anything runs or changes state.
"""
from __future__ import annotations

import os

import pytest
import trio

from protos import runc_options_pb2, task_types_pb2
from protos import task_v2_pb2 as pb
from runtime.base import Capability
from runtime.errors import classify
from shim.errors import FailedPrecondition, InvalidArgument, NotFound, Unimplemented, Unknown

from .taskfakes import FakeBackend, harness, settle

CKPT_URL = "containerd.runc.v1.CheckpointOptions"
RESOURCES_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"


async def running(h, cid: str = "c1", *, terminal: bool = False, pid_ns: bool = True) -> int:
    bundle = h.bundle(cid, pid_ns)
    pid = (await h.service.create(None, pb.CreateTaskRequest(id=cid, bundle=bundle, terminal=terminal))).pid
    await h.service.start(None, pb.StartRequest(id=cid))
    return pid


async def status(h, cid: str = "c1", exec_id: str = "") -> int:
    return (await h.service.state(None, pb.StateRequest(id=cid, exec_id=exec_id))).status


def ckpt_request(cid: str = "c1", path: str = "", **opts) -> pb.CheckpointTaskRequest:
    r = pb.CheckpointTaskRequest(id=cid, path=path)
    if opts:
        r.options.type_url = CKPT_URL
        r.options.value = runc_options_pb2.CheckpointOptions(**opts).SerializeToString()
    return r


# -- pause / resume ------------------------------------------------------------------------------------------

async def test_pause_resume_states_and_events(tmp_path):
    async with harness(tmp_path) as h:
        await running(h)
        await h.service.pause(None, pb.PauseRequest(id="c1"))
        assert await status(h) == task_types_pb2.PAUSED
        with pytest.raises(FailedPrecondition, match="cannot pause a paused container"):
            await h.service.pause(None, pb.PauseRequest(id="c1"))
        await h.service.resume(None, pb.ResumeRequest(id="c1"))
        assert await status(h) == task_types_pb2.RUNNING
        with pytest.raises(FailedPrecondition, match="cannot resume a running process"):
            await h.service.resume(None, pb.ResumeRequest(id="c1"))
        assert h.backend.ops()[-2:] == ["pause", "resume"]
        assert h.events.names()[-2:] == ["paused", "resumed"]


async def test_exec_state_follows_a_paused_init_and_exec_is_refused(tmp_path):
    async with harness(tmp_path) as h:
        await running(h)
        await h.service.exec(None, pb.ExecProcessRequest(id="c1", exec_id="e1", spec=_spec()))
        await h.service.start(None, pb.StartRequest(id="c1", exec_id="e1"))
        await h.service.pause(None, pb.PauseRequest(id="c1"))
        assert await status(h, exec_id="e1") == task_types_pb2.PAUSED
        with pytest.raises(FailedPrecondition, match="cannot exec in a paused state"):
            await h.service.exec(None, pb.ExecProcessRequest(id="c1", exec_id="e2", spec=_spec()))


async def test_failed_pause_keeps_running(tmp_path):
    async with harness(tmp_path) as h:
        await running(h)
        h.backend.fail["pause"] = "freezer says no"
        with pytest.raises(Unknown, match="freezer says no"):
            await h.service.pause(None, pb.PauseRequest(id="c1"))
        assert await status(h) == task_types_pb2.RUNNING
        assert "paused" not in h.events.names()


async def test_init_exit_while_paused_resumes_the_cgroup(tmp_path):
    async with harness(tmp_path) as h:
        pid = await running(h)
        await h.service.pause(None, pb.PauseRequest(id="c1"))
        h.exit(pid, 137)
        await h.service.wait(None, pb.WaitRequest(id="c1"))
        assert h.backend.ops()[-2:] == ["pause", "resume"]
        assert await status(h) == task_types_pb2.STOPPED
        with pytest.raises(FailedPrecondition, match="cannot resume a stopped container"):
            await h.service.resume(None, pb.ResumeRequest(id="c1"))


async def test_kill_of_a_paused_init_reaches_the_runtime(tmp_path):
    async with harness(tmp_path) as h:
        await running(h)
        await h.service.pause(None, pb.PauseRequest(id="c1"))
        await h.service.kill(None, pb.KillRequest(id="c1", signal=9))
        assert h.backend.calls[-1][0] == "kill" and h.backend.calls[-1][2:] == (9, False)


# -- update --------------------------------------------------------------------------------------------------

async def test_update_passes_the_resources_json(tmp_path):
    async with harness(tmp_path) as h:
        await running(h)
        doc = b'{"memory":{"limit":67108864},"cpu":{"quota":20000,"period":100000}}'
        await h.service.update(None, pb.UpdateTaskRequest(id="c1", resources={"type_url": RESOURCES_URL,
                                                                               "value": doc}))
        assert h.backend.calls[-1][0] == "update" and h.backend.calls[-1][2] == doc
        await h.service.pause(None, pb.PauseRequest(id="c1"))
        await h.service.update(None, pb.UpdateTaskRequest(id="c1", resources={"value": b"{}"}))  # paused: allowed


@pytest.mark.parametrize("value", [b"", b"[1]", b"{not json"])
async def test_update_refuses_what_is_not_linux_resources(tmp_path, value):
    async with harness(tmp_path) as h:
        await running(h)
        with pytest.raises(InvalidArgument, match="LinuxResources"):
            await h.service.update(None, pb.UpdateTaskRequest(id="c1", resources={"value": value}))
        assert "update" not in h.backend.ops()


async def test_update_of_a_stopped_container_is_refused(tmp_path):
    async with harness(tmp_path) as h:
        pid = await running(h)
        h.exit(pid, 0)
        await h.service.wait(None, pb.WaitRequest(id="c1"))
        with pytest.raises(FailedPrecondition, match="cannot update a stopped container"):
            await h.service.update(None, pb.UpdateTaskRequest(id="c1", resources={"value": b"{}"}))


# -- pids ----------------------------------------------------------------------------------------------------

async def test_pids_carry_exec_ids_as_process_details(tmp_path):
    async with harness(tmp_path) as h:
        init = await running(h)
        await h.service.exec(None, pb.ExecProcessRequest(id="c1", exec_id="e1", spec=_spec()))
        exec_pid = (await h.service.start(None, pb.StartRequest(id="c1", exec_id="e1"))).pid
        h.backend.ps_pids = (init, exec_pid, 99999)
        resp = await h.service.pids(None, pb.PidsRequest(id="c1"))
        assert [p.pid for p in resp.processes] == [init, exec_pid, 99999]
        assert not resp.processes[0].HasField("info") and not resp.processes[2].HasField("info")
        info = resp.processes[1].info
        assert info.type_url == "containerd.runc.v1.ProcessDetails"
        assert runc_options_pb2.ProcessDetails.FromString(info.value).exec_id == "e1"


# -- capabilities --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("missing,call", [
    (Capability.PAUSE, lambda s: s.pause(None, pb.PauseRequest(id="c1"))),
    (Capability.PAUSE, lambda s: s.resume(None, pb.ResumeRequest(id="c1"))),
    (Capability.UPDATE, lambda s: s.update(None, pb.UpdateTaskRequest(id="c1", resources={"value": b"{}"}))),
    (Capability.PS, lambda s: s.pids(None, pb.PidsRequest(id="c1"))),
    (Capability.CHECKPOINT, lambda s: s.checkpoint(None, ckpt_request(path="/ckpt"))),
])
async def test_missing_capability_is_unimplemented_and_runs_nothing(tmp_path, missing, call):
    backend = FakeBackend(frozenset(Capability) - {missing}, name="limited")
    async with harness(tmp_path, backend) as h:
        await running(h)
        before = list(backend.calls)
        with pytest.raises(Unimplemented, match="runtime 'limited' does not support"):
            await call(h.service)
        assert backend.calls == before
        assert await status(h) == task_types_pb2.RUNNING


async def test_restore_without_the_capability_is_refused_at_create(tmp_path):
    backend = FakeBackend(frozenset(Capability) - {Capability.RESTORE}, name="limited")
    async with harness(tmp_path, backend) as h:
        with pytest.raises(Unimplemented, match="does not support restore"):
            await h.service.create(None, pb.CreateTaskRequest(id="c1", bundle=h.bundle("c1"), checkpoint="/ckpt"))
        assert backend.calls == [] and h.events.log == []
        with pytest.raises(NotFound):
            await status(h)


# -- checkpoint ----------------------------------------------------------------------------------------------

async def test_checkpoint_defaults_leave_running_with_a_temporary_work_dir(tmp_path):
    async with harness(tmp_path) as h:
        await running(h)
        images = tmp_path / "images"
        await h.service.checkpoint(None, ckpt_request(path=str(images)))
        op, ref, spec = h.backend.calls[-1]
        assert op == "checkpoint" and spec.leave_running
        work = os.path.join(ref.bundle, "work", "criu-work")
        assert (spec.criu.image_path, spec.criu.work_path) == (str(images), work)
        assert not os.path.exists(work)  # removed afterwards, as upstream
        assert await status(h) == task_types_pb2.RUNNING
        assert "checkpointed" not in h.events.names()  # the runc shim publishes no event either


async def test_checkpoint_options_become_criu_flags(tmp_path):
    async with harness(tmp_path) as h:
        await running(h)
        work = tmp_path / "work"
        work.mkdir()
        await h.service.checkpoint(None, ckpt_request(
            path=str(tmp_path / "img"), exit=True, open_tcp=True, external_unix_sockets=True, terminal=True,
            file_locks=True, empty_namespaces=["network"], cgroups_mode="soft", work_path=str(work)))
        spec = h.backend.calls[-1][2]
        c = spec.criu
        assert not spec.leave_running
        assert (c.tcp_established, c.ext_unix_sk, c.shell_job, c.file_locks) == (True, True, True, True)
        assert (c.empty_namespaces, c.manage_cgroups_mode, c.work_path) == (("network",), "soft", str(work))
        assert work.is_dir()  # a work dir the client chose is kept


async def test_checkpoint_image_path_option_is_honoured_beside_containerds_path(tmp_path):
    # containerd 1.6/1.7 hand runtimes not named io.containerd.runc.* a temporary path and ignore image_path
    async with harness(tmp_path) as h:
        await running(h)
        tmp, wanted = tmp_path / "ctrd-checkpoint123", tmp_path / "mine"
        await h.service.checkpoint(None, ckpt_request(path=str(tmp), image_path=str(wanted)))
        assert h.backend.calls[-1][2].criu.image_path == str(tmp)
        assert (wanted / "inventory.img").read_bytes() == (tmp / "inventory.img").read_bytes() == b"criu images"
        # no path from the caller (a raw ttrpc client): the image_path is the image directory
        await h.service.checkpoint(None, ckpt_request(image_path=str(tmp_path / "only")))
        assert h.backend.calls[-1][2].criu.image_path == str(tmp_path / "only")


@pytest.mark.parametrize("request_,match", [
    (pb.CheckpointTaskRequest(id="c1"), "no path and no image_path"),
    (pb.CheckpointTaskRequest(id="c1", path="relative/dir"), "must be an absolute path"),
    (ckpt_request(path="/p", work_path="w"), "work_path must be an absolute path"),
    (ckpt_request(path="/p", cgroups_mode="bogus"), "cgroups_mode"),
    (pb.CheckpointTaskRequest(id="c1", path="/p", options={"type_url": "containerd.linux.runc.CheckpointOptions",
                                                          "value": b""}), "unsupported checkpoint options type"),
    (pb.CheckpointTaskRequest(id="c1", path="/p", options={"type_url": CKPT_URL, "value": b"\xff"}),
     "cannot decode checkpoint options"),
])
async def test_checkpoint_bad_requests_are_invalid_arguments(tmp_path, request_, match):
    async with harness(tmp_path) as h:
        await running(h)
        with pytest.raises(InvalidArgument, match=match):
            await h.service.checkpoint(None, request_)
        assert "checkpoint" not in h.backend.ops()


async def test_checkpoint_refused_when_created_or_stopped_and_unknown_container(tmp_path):
    async with harness(tmp_path) as h:
        await h.service.create(None, pb.CreateTaskRequest(id="c1", bundle=h.bundle("c1")))
        with pytest.raises(FailedPrecondition, match="cannot checkpoint a task in created state"):
            await h.service.checkpoint(None, ckpt_request(path="/p"))
        pid = (await h.service.start(None, pb.StartRequest(id="c1"))).pid
        h.exit(pid, 0)
        await h.service.wait(None, pb.WaitRequest(id="c1"))
        with pytest.raises(FailedPrecondition, match="cannot checkpoint a stopped container"):
            await h.service.checkpoint(None, ckpt_request(path="/p"))
        with pytest.raises(NotFound):
            await h.service.checkpoint(None, ckpt_request(cid="nope", path="/p"))


async def test_checkpoint_of_a_paused_container_and_runtime_failure(tmp_path):
    async with harness(tmp_path) as h:
        await running(h)
        await h.service.pause(None, pb.PauseRequest(id="c1"))  # what the containerd client does first
        h.backend.fail["checkpoint"] = "criu failed: type NOTIFY errno 0 path= /b/criu-dump.log"
        with pytest.raises(Unknown) as info:
            await h.service.checkpoint(None, ckpt_request(path=str(tmp_path / "img")))
        assert info.value.message == ("OCI runtime checkpoint failed: criu failed: type NOTIFY errno 0 "
                                      "path= /b/criu-dump.log")
        assert await status(h) == task_types_pb2.PAUSED
        del h.backend.fail["checkpoint"]
        await h.service.checkpoint(None, ckpt_request(path=str(tmp_path / "img")))
        await h.service.resume(None, pb.ResumeRequest(id="c1"))


async def test_checkpoint_with_exit_then_the_init_exit(tmp_path):
    async with harness(tmp_path) as h:
        pid = await running(h)
        await h.service.pause(None, pb.PauseRequest(id="c1"))
        await h.service.checkpoint(None, ckpt_request(path=str(tmp_path / "img"), exit=True))
        h.exit(pid, 137)  # runc checkpoint without --leave-running kills the container
        h.backend.fail["resume"] = "container does not exist"  # runc deleted it after the dump
        resp = await h.service.wait(None, pb.WaitRequest(id="c1"))
        assert resp.exit_status == 137
        assert await status(h) == task_types_pb2.STOPPED
        h.backend.fail["delete"] = "container does not exist"
        await h.service.delete(None, pb.DeleteRequest(id="c1"))


# -- restore through Create ----------------------------------------------------------------------------------

async def test_create_from_checkpoint_restores_at_start(tmp_path):
    async with harness(tmp_path) as h:
        bundle = h.bundle("c1")
        resp = await h.service.create(None, pb.CreateTaskRequest(id="c1", bundle=bundle, checkpoint="/ckpt",
                                                                 stdout="/fifo/out"))
        assert resp.pid == 0 and h.backend.calls == []
        assert h.events.log[-1][0] == "create" and h.events.log[-1][-2:] == ("/ckpt", 0)
        assert await status(h) == task_types_pb2.CREATED
        with pytest.raises(FailedPrecondition, match="cannot exec in a created state"):
            await h.service.exec(None, pb.ExecProcessRequest(id="c1", exec_id="e1", spec=_spec()))
        with pytest.raises(FailedPrecondition, match="cannot pause task in created state"):
            await h.service.pause(None, pb.PauseRequest(id="c1"))
        pid = (await h.service.start(None, pb.StartRequest(id="c1"))).pid
        op, spec = h.backend.calls[-1]
        assert op == "restore" and pid == h.backend.next_pid
        assert (spec.id, spec.bundle, spec.pid_file) == ("c1", bundle, f"{bundle}/init.pid")
        assert (spec.criu.image_path, spec.criu.work_path, spec.criu.parent_path) == ("/ckpt", f"{bundle}/work", "")
        assert spec.console_socket is None and h.ios[0].started
        assert h.events.log[-1] == ("start", "c1", pid)
        assert await status(h) == task_types_pb2.RUNNING
        assert (await h.service.connect(None, pb.ConnectRequest(id="c1"))).task_pid == pid
        h.exit(pid, 3)
        assert (await h.service.wait(None, pb.WaitRequest(id="c1"))).exit_status == 3
        assert h.events.log[-1][:3] == ("exit", "c1", "c1")


async def test_restore_options_parent_work_path_no_pivot_and_terminal(tmp_path):
    async with harness(tmp_path) as h:
        opts = runc_options_pb2.Options(criu_work_path="/var/criu-work", no_pivot_root=True)
        await h.service.create(None, pb.CreateTaskRequest(
            id="c1", bundle=h.bundle("c1"), checkpoint="/ckpt", parent_checkpoint="/parent", terminal=True,
            options={"type_url": "containerd.runc.v1.Options", "value": opts.SerializeToString()}))
        await h.service.start(None, pb.StartRequest(id="c1"))
        spec = h.backend.calls[-1][1]
        assert (spec.criu.work_path, spec.criu.parent_path, spec.no_pivot) == ("/var/criu-work", "/parent", True)
        assert spec.console_socket == "/run/fake/pty.sock"


async def test_failed_restore_stays_created_and_can_be_deleted(tmp_path):
    async with harness(tmp_path) as h:
        await h.service.create(None, pb.CreateTaskRequest(id="c1", bundle=h.bundle("c1"), checkpoint="/ckpt"))
        h.backend.fail["restore"] = "criu failed: type RESTORE errno 0"
        with pytest.raises(Unknown, match="OCI runtime restore failed"):
            await h.service.start(None, pb.StartRequest(id="c1"))
        assert await status(h) == task_types_pb2.CREATED
        assert "start" not in h.events.names()
        h.backend.fail["delete"] = "container does not exist"
        resp = await h.service.delete(None, pb.DeleteRequest(id="c1"))
        assert resp.pid == 0 and h.ios[0].closed


async def test_restored_init_that_exits_at_once_is_not_lost(tmp_path):
    async with harness(tmp_path) as h:
        await h.service.create(None, pb.CreateTaskRequest(id="c1", bundle=h.bundle("c1"), checkpoint="/ckpt"))
        h.backend.on_restore = lambda pid: h.exit(pid, 9)  # reaped before Start read the pid file
        pid = (await h.service.start(None, pb.StartRequest(id="c1"))).pid
        assert (await h.service.wait(None, pb.WaitRequest(id="c1"))).exit_status == 9
        await settle()
        assert h.events.names()[-2:] == ["start", "exit"] and h.events.log[-1][3] == pid


async def test_relative_checkpoint_path_is_invalid(tmp_path):
    async with harness(tmp_path) as h:
        with pytest.raises(InvalidArgument, match="absolute"):
            await h.service.create(None, pb.CreateTaskRequest(id="c1", bundle=h.bundle("c1"), checkpoint="ckpt"))


def _spec():
    return {"type_url": "types.containerd.io/opencontainers/runtime-spec/1/Process",
            "value": b'{"args":["/bin/true"],"cwd":"/"}'}


# -- an init exit while an exec is being started (containerd 2.1's TestIssue10589) -----------------------------

class SlowExecBackend(FakeBackend):
    """exec blocks until `release` is set, then fails like a runc exec into a dead container."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = trio.Event()
        self.release = trio.Event()

    async def exec(self, spec):
        self._call("exec", spec)
        self.entered.set()
        await self.release.wait()
        raise classify("exec", "container not running", 1)


async def test_init_exit_is_held_while_an_exec_is_starting(tmp_path):
    backend = SlowExecBackend()
    async with harness(tmp_path, backend) as h, trio.open_nursery() as nursery:
        init = await running(h)
        await h.service.exec(None, pb.ExecProcessRequest(id="c1", exec_id="e1", spec=_spec()))

        async def start_e1():
            with pytest.raises(Unknown):
                await h.service.start(None, pb.StartRequest(id="c1", exec_id="e1"))
        nursery.start_soon(start_e1)
        await backend.entered.wait()
        h.exit(init, 137)                      # the init is SIGKILLed from outside meanwhile
        await settle()
        assert await status(h) == task_types_pb2.RUNNING   # its exit is held: still running, exec allowed
        await h.service.exec(None, pb.ExecProcessRequest(id="c1", exec_id="e2", spec=_spec()))
        assert "exit" not in h.events.names()
        backend.release.set()                  # e1's start fails; now the init's exit goes through
        await settle()
        assert await status(h) == task_types_pb2.STOPPED
        assert h.events.names().count("exit") == 1
