"""Interop of our ttrpc client (ttrpc/client.py) and generated protos with real Go ttrpc peers.

(a) the Go runc shim of each containerd version: Connect, State and Pids answered over the shim socket containerd
    recorded in the bundle, compared with what ``ctr tasks ls`` / ``ctr tasks ps`` report;
(b) containerd's own ttrpc server: an event sent with Events.Forward shows up in ``ctr events``.

Rules: the Go side is the reference; every expected value is read from ctr, /proc or the bundle at run time.
Blocking ctr calls run in a worker thread so trio stays responsive; every test is bounded by ``fail_after``.
"""
from __future__ import annotations

import os
import subprocess
import uuid
from datetime import datetime, timezone

import pytest
import trio
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2

from protos import task_events_pb2, task_types_pb2, task_v2_pb2, task_v3_pb2, ttrpc_events_pb2
from ttrpc.client import open_unix_client
from ttrpc.status import Code, StatusError

from .conftest import new_id
from .harness import ctrout, procs
from .harness.daemon import PrivateContainerd

pytestmark = pytest.mark.integration
RUNC = "io.containerd.runc.v2"
EVENTS = "containerd.services.events.ttrpc.v1.Events"
TASK_MODULES = {2: task_v2_pb2, 3: task_v3_pb2}


async def ctr(c: PrivateContainerd, *args: str) -> str:
    return (await trio.to_thread.run_sync(lambda: c.ctr(*args))).stdout


async def wait_task(c: PrivateContainerd, cid: str, status: str) -> ctrout.TaskRow:
    while True:
        row = next((t for t in ctrout.tasks(await ctr(c, "tasks", "ls")) if t.id == cid), None)
        if row is not None and row.status == status:
            return row
        await trio.sleep(0.05)


def shim_daemon_pid(c: PrivateContainerd, cid: str) -> int:
    """The long-running shim serving ``cid``: given our -address, and running in the task's bundle."""
    bundle = str(c.bundle(cid))
    pids = [p.pid for p in procs.shims_of(c.address) if os.readlink(f"/proc/{p.pid}/cwd") == bundle]
    assert len(pids) == 1, pids
    return pids[0]


async def test_go_runc_shim_answers_our_client(containerd: PrivateContainerd, busybox_image: str) -> None:
    cid = new_id("interop")
    with trio.fail_after(60):
        await ctr(containerd, "run", "-d", "--runtime", RUNC, busybox_image, cid, "/bin/sleep", "600")
        try:
            row = await wait_task(containerd, cid, "RUNNING")
            ps = ctrout.task_processes(await ctr(containerd, "tasks", "ps", cid))
            address, version = containerd.shim_endpoint(cid)
            assert address.startswith("unix:///run/containerd/s/")
            # 1.x runc shims serve task v2 (plain address file); 2.1's writes bootstrap.json with version 3
            assert version == (3 if containerd.dist.major >= 2 else 2)
            pb = TASK_MODULES[version]
            service = f"containerd.task.v{version}.Task"
            async with open_unix_client(address) as client:
                conn = await client.call(service, "Connect", pb.ConnectRequest(id=cid), pb.ConnectResponse)
                state = await client.call(service, "State", pb.StateRequest(id=cid), pb.StateResponse)
                pids = await client.call(service, "Pids", pb.PidsRequest(id=cid), pb.PidsResponse)
                with pytest.raises(StatusError) as missing:
                    await client.call(service, "State", pb.StateRequest(id=cid + "-nope"), pb.StateResponse)
                other = f"containerd.task.v{5 - version}.Task"  # each Go runc shim registers one name only
                with pytest.raises(StatusError) as unregistered:
                    await client.call(other, "Connect", pb.ConnectRequest(id=cid), pb.ConnectResponse)

                assert conn.task_pid == row.pid
                assert conn.shim_pid == shim_daemon_pid(containerd, cid)
                assert state.id == cid
                assert state.pid == row.pid
                assert task_types_pb2.Status.Name(state.status) == row.status == "RUNNING"
                assert state.bundle == str(containerd.bundle(cid))
                assert sorted(p.pid for p in pids.processes) == sorted(p.pid for p in ps)
                assert missing.value.code == Code.NOT_FOUND
                assert unregistered.value.code == Code.UNIMPLEMENTED

                await ctr(containerd, "tasks", "kill", "--signal", "SIGKILL", cid)
                stopped = await wait_task(containerd, cid, "STOPPED")
                state = await client.call(service, "State", pb.StateRequest(id=cid), pb.StateResponse)
                assert task_types_pb2.Status.Name(state.status) == stopped.status
                assert state.exit_status == 128 + 9
                assert state.exited_at.seconds > 0
        finally:
            await trio.to_thread.run_sync(lambda: containerd.ctr("tasks", "rm", "--force", cid, check=False))
            await trio.to_thread.run_sync(lambda: containerd.ctr("containers", "rm", cid, check=False))


async def read_lines(stream: trio.abc.ReceiveStream, send: trio.MemorySendChannel[str]) -> None:
    async with send:
        buf = b""
        async for chunk in stream:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                await send.send(line.decode(errors="replace"))


async def until_line(lines: trio.MemoryReceiveChannel[str], needle: str, seen: list[str]) -> str:
    async for line in lines:
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"ctr events ended before {needle!r}; saw {seen}")


def envelope(namespace: str, topic: str, event: any_pb2.Any, when: datetime) -> ttrpc_events_pb2.ForwardRequest:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ttrpc_events_pb2.ForwardRequest(envelope=ttrpc_events_pb2.Envelope(
        timestamp=ts, namespace=namespace, topic=topic, event=event))


async def test_forwarded_event_reaches_ctr_events(containerd: PrivateContainerd) -> None:
    ns = containerd.namespace
    await trio.to_thread.run_sync(lambda: containerd.ctr("namespaces", "create", ns, check=False))
    oom = task_events_pb2.TaskOOM(container_id=f"interop-{uuid.uuid4().hex[:12]}")
    event = any_pb2.Any(type_url="containerd.events.TaskOOM", value=oom.SerializeToString())
    when = datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=timezone.utc)
    seen: list[str] = []
    proc = await trio.lowlevel.open_process(containerd.ctr_argv("events"), env=containerd.env(),
                                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                send, lines = trio.open_memory_channel[str](100)
                nursery.start_soon(read_lines, proc.stdout, send)
                # ctr subscribes asynchronously: publish probes until one is seen, then the subscription is live
                for i in range(1, 1000):
                    await ctr(containerd, "namespaces", "label", ns, f"pyshim.probe={i}")
                    with trio.move_on_after(0.5):
                        await until_line(lines, "/namespaces/update", seen)
                        break
                async with open_unix_client(containerd.ttrpc_address) as client:
                    await client.call(EVENTS, "Forward", envelope(ns, "/tasks/oom", event, when),
                                      empty_pb2.Empty)
                    with pytest.raises(StatusError) as bad:
                        await client.call(EVENTS, "Forward", envelope(ns, "no-leading-slash", event, when),
                                          empty_pb2.Empty)
                line = await until_line(lines, oom.container_id, seen)
                nursery.cancel_scope.cancel()
    finally:
        proc.kill()
        await proc.wait()
    assert bad.value.code == Code.INVALID_ARGUMENT
    assert "2001-02-03 04:05:06.789 +0000 UTC" in line
    assert f" {ns} /tasks/oom " in line
    assert f'"container_id":"{oom.container_id}"' in line.replace(" ", "")
