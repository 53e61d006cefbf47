"""Interop of our ttrpc client (ttrpc/client.py) and generated protos with real Go ttrpc peers.

(a) the Go runc shim of each containerd version: Connect, State and Pids answered over the shim socket containerd
    recorded in the bundle, compared with what ``ctr tasks ls`` / ``ctr tasks ps`` and /proc report;
(b) containerd's own ttrpc server: an event sent with Events.Forward shows up in ``ctr events``.

Rules: the Go side is the reference; every expected value is read from ctr, /proc or the bundle at run time
(harness/interop.py observes, this file judges).  Every test is bounded by ``fail_after``.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
import trio
from google.protobuf import any_pb2

from protos import task_events_pb2, task_types_pb2
from ttrpc.client import open_unix_client
from ttrpc.status import Code

from .conftest import new_id
from .harness import interop
from .harness.daemon import PrivateContainerd

pytestmark = pytest.mark.integration
RUNC = "io.containerd.runc.v2"


async def test_go_runc_shim_answers_our_client(containerd: PrivateContainerd, busybox_image: str) -> None:
    cid = new_id("interop")
    with trio.fail_after(60):
        await interop.ctr(containerd, "run", "-d", "--runtime", RUNC, busybox_image, cid, "/bin/sleep", "600")
        try:
            obs = await interop.observe_go_shim(containerd, cid)
            assert obs.address.startswith("unix:///run/containerd/s/")
            # 1.x: the shim writes the plain address (task v2); 2.1: containerd writes bootstrap.json, version 3
            assert obs.version == (3 if containerd.dist.major >= 2 else 2)
            assert obs.connect.task_pid == obs.ctr_task.pid
            assert (obs.connect.shim_pid,) == obs.shim_pids
            assert obs.state.id == cid
            assert obs.state.pid == obs.ctr_task.pid
            assert task_types_pb2.Status.Name(obs.state.status) == obs.ctr_task.status == "RUNNING"
            assert obs.state.bundle == obs.bundle
            assert obs.pids == obs.ctr_pids and obs.ctr_task.pid in obs.pids
            assert obs.unknown_id_code == Code.NOT_FOUND
            assert obs.other_service_code == Code.UNIMPLEMENTED  # each Go runc shim registers one name only

            await interop.ctr(containerd, "tasks", "kill", "--signal", "SIGKILL", cid)
            stopped = await interop.wait_task(containerd, cid, "STOPPED")
            pb = interop.TASK_MODULES[obs.version]
            async with open_unix_client(obs.address) as client:
                state = await client.call(f"containerd.task.v{obs.version}.Task", "State",
                                          pb.StateRequest(id=cid), pb.StateResponse)
            assert task_types_pb2.Status.Name(state.status) == stopped.status
            assert state.exit_status == 128 + 9
            assert state.exited_at.seconds > 0
        finally:
            await trio.to_thread.run_sync(lambda: containerd.ctr("tasks", "rm", "--force", cid, check=False))
            await trio.to_thread.run_sync(lambda: containerd.ctr("containers", "rm", cid, check=False))


async def test_forwarded_event_reaches_ctr_events(containerd: PrivateContainerd) -> None:
    oom = task_events_pb2.TaskOOM(container_id=f"interop-{uuid.uuid4().hex[:12]}")
    event = any_pb2.Any(type_url="containerd.events.TaskOOM", value=oom.SerializeToString())
    when = datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=timezone.utc)
    with trio.fail_after(30):
        obs = await interop.forward_and_watch(containerd, "/tasks/oom", event, when, needle=oom.container_id)
    # ctr prints: <Go time.Time> <namespace> <topic> <event as JSON>
    assert obs.line.startswith("2001-02-03 04:05:06.789 +0000 UTC ")
    assert f" {containerd.namespace} /tasks/oom " in obs.line
    assert obs.line.endswith(f'{{"container_id":"{oom.container_id}"}}')
    assert obs.invalid_topic_code == Code.INVALID_ARGUMENT
