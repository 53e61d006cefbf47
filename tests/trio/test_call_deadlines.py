"""Every backend call has a deadline (shim/runc/deadlines.py): a hung call fails with DEADLINE_EXCEEDED naming the
call, the container and the deadline, the container stays manageable, and a hung runtime command is stopped with
its whole process group (shim/reaper.py)."""
from __future__ import annotations

import signal
import time
from types import MappingProxyType

import pytest
import trio
from google.protobuf import any_pb2

from protos import task_v2_pb2 as pb
from runtime import base as rt
from runtime.errors import CallTimedOut
from runtime.oci_cli import OciCli
from runtime.oci_config import OciConfig
from shim.errors import DeadlineExceeded
from shim.reaper import Reaper, ReaperLauncher
from shim.runc.config import CALL_TIMEOUTS
from shim.runc.deadlines import Deadlined

from .taskfakes import FakeBackend, harness
from .test_reaper import process_state
from .test_task_isolation import exits_cleanly

SOURCE = "/etc/pyshim-test.toml"


class Hanging(FakeBackend):
    """A FakeBackend whose call ``op`` hangs the first time."""

    def __init__(self, op: str) -> None:
        super().__init__()
        real = getattr(self, op)

        async def hang_once(*args, **kwargs):
            setattr(self, op, real)
            self.calls.append((f"{op} (hangs)",))
            await trio.sleep_forever()
        setattr(self, op, hang_once)


def deadlined(backend, **seconds: float) -> Deadlined:
    return Deadlined(backend, MappingProxyType({**CALL_TIMEOUTS, **seconds}), SOURCE)


def test_the_wrapper_shows_the_backend_through():
    fake = FakeBackend(name="fakeish")
    fake.cfg = object()
    d = deadlined(fake)
    assert (d.name, d.capabilities, d.cfg, d.inner) == ("fakeish", fake.capabilities, fake.cfg, fake)
    assert all(callable(getattr(d, m)) for m in rt.REQUIRED_METHODS)


async def test_a_call_within_its_deadline_returns_its_value(autojump_clock):
    fake = FakeBackend()
    assert await deadlined(fake, exec=1).exec(rt.ExecSpec("c", "e", "/b", b"{}", "/b/e.pid")) == 4001
    assert fake.ops() == ["exec"]


@pytest.mark.parametrize("op", ["start", "exec", "kill", "pause", "resume", "update", "ps"])
async def test_a_hung_call_fails_with_its_deadline_and_the_container_goes_on(tmp_path, autojump_clock, op):
    backend = deadlined(Hanging(op), **{op: 7})
    async with harness(tmp_path, backend) as h:
        bundle = h.bundle("c1")
        pid = (await h.service.create(None, pb.CreateTaskRequest(id="c1", bundle=bundle))).pid
        requests = {
            "start": lambda: h.service.start(None, pb.StartRequest(id="c1")),
            "exec": lambda: h.service.start(None, pb.StartRequest(id="c1", exec_id="e1")),
            "kill": lambda: h.service.kill(None, pb.KillRequest(id="c1", signal=15)),
            "pause": lambda: h.service.pause(None, pb.PauseRequest(id="c1")),
            "resume": lambda: h.service.resume(None, pb.ResumeRequest(id="c1")),
            "update": lambda: h.service.update(None, pb.UpdateTaskRequest(id="c1", resources=_any("LinuxResources",
                                                                                                   b"{}"))),
            "ps": lambda: h.service.pids(None, pb.PidsRequest(id="c1")),
        }
        if op != "start":
            await requests["start"]()
        if op == "exec":
            await h.service.exec(None, pb.ExecProcessRequest(id="c1", exec_id="e1",
                                                             spec=_any("Process", b'{"args": ["x"]}')))
        if op == "resume":
            await requests["pause"]()
        began = trio.current_time()
        with pytest.raises(DeadlineExceeded) as failed:
            await requests[op]()
        assert trio.current_time() - began == pytest.approx(7)
        assert str(failed.value) == (f"runtime call {op!r} for container c1 did not finish within 7 s and was "
                                     f"stopped (call_timeouts.{op} in pyshim config {SOURCE})")
        again = await requests[op]()  # the same call again: it no longer hangs
        if op == "exec":
            h.exit(again.pid, 0)
            assert (await h.service.wait(None, pb.WaitRequest(id="c1", exec_id="e1"))).exit_status == 0
        await h.service.kill(None, pb.KillRequest(id="c1", signal=9))
        await exits_cleanly(h, "c1", pid, 137)
        assert h.tasks.containers == {}


async def test_a_hung_create_fails_and_leaves_no_container(tmp_path, autojump_clock):
    async with harness(tmp_path, deadlined(Hanging("create"), create=3)) as h:
        with pytest.raises(DeadlineExceeded, match="'create' for container c1 did not finish within 3 s"):
            await h.service.create(None, pb.CreateTaskRequest(id="c1", bundle=h.bundle("c1")))
        assert h.tasks.containers == {} and h.ios[0].closed
        assert h.backend.inner.ops()[-1] == "delete"  # the failed create was force-deleted in the runtime


async def test_a_hung_delete_fails_and_a_second_delete_works(tmp_path, autojump_clock):
    async with harness(tmp_path, deadlined(Hanging("delete"), delete=5)) as h:
        pid = (await h.service.create(None, pb.CreateTaskRequest(id="c1", bundle=h.bundle("c1")))).pid
        await h.service.start(None, pb.StartRequest(id="c1"))
        h.exit(pid, 3)
        await h.service.wait(None, pb.WaitRequest(id="c1"))
        with pytest.raises(DeadlineExceeded, match="'delete' for container c1 did not finish within 5 s"):
            await h.service.delete(None, pb.DeleteRequest(id="c1"))
        assert (await h.service.delete(None, pb.DeleteRequest(id="c1"))).exit_status == 3


def _any(kind: str, value: bytes) -> any_pb2.Any:
    return any_pb2.Any(type_url=f"types.containerd.io/opencontainers/runtime-spec/1/{kind}", value=value)


HUNG_RUNTIME = """#!/bin/sh
# a runtime whose every command hangs in a child that would outlive a TERM to this shell alone
sleep 300 &
echo $! > {pidfile}
wait
"""


async def test_a_hung_runtime_command_is_stopped_with_its_process_group(tmp_path):
    """A real OciCli on a real launcher: the hung command and the child it forked are both gone when the call
    fails, within the deadline and the launcher's TERM."""
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "runtime"
    script.write_text(HUNG_RUNTIME.format(pidfile=pidfile))
    script.chmod(0o755)
    cfg = OciConfig(name="hung", binary=str(script), root=str(tmp_path / "root"), capabilities=frozenset())
    reaper = Reaper()
    async with trio.open_nursery() as nursery:
        await nursery.start(reaper.run)
        backend = deadlined(OciCli(cfg, ReaperLauncher(reaper)), kill=0.5)
        began = time.monotonic()
        with trio.fail_after(10), pytest.raises(CallTimedOut, match="'kill' for container c1 did not finish"):
            await backend.kill(rt.ContainerRef("c1", str(tmp_path)), signal.SIGTERM)
        assert time.monotonic() - began < 3
        child = int(pidfile.read_text())
        with trio.fail_after(5):
            while process_state(child) not in ("", "Z"):  # TERMed with its group
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()

