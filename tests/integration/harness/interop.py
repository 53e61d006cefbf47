"""Observations of real Go ttrpc peers through our client (ttrpc/client.py), shared by the interop tests and
tools/interop_check.py.

Rules: these functions only observe and return both sides (what the Go peer answered over ttrpc, what ctr or
/proc say); judging is the caller's job.  Blocking ctr calls run in worker threads.  The caller bounds time.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import datetime

import trio
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2

from protos import task_v2_pb2, task_v3_pb2, ttrpc_events_pb2
from ttrpc.client import open_unix_client
from ttrpc.status import Code, StatusError

from . import ctrout, procs
from .daemon import PrivateContainerd

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


def shim_daemon_pids(c: PrivateContainerd, cid: str) -> list[int]:
    """Long-running shims serving ``cid``: given our -address, and running in the task's bundle."""
    bundle = str(c.bundle(cid))
    found = []
    for p in procs.shims_of(c.address):
        try:
            if os.readlink(f"/proc/{p.pid}/cwd") == bundle:
                found.append(p.pid)
        except OSError:
            pass
    return found


async def status_code(call) -> Code | None:
    """The ttrpc status code a call fails with, or None if it succeeds."""
    try:
        await call
    except StatusError as exc:
        return exc.code
    return None


@dataclass(frozen=True)
class ShimObservation:
    version: int            # task API version containerd recorded for the shim (address file = 2)
    address: str
    bundle: str
    ctr_task: ctrout.TaskRow
    ctr_pids: tuple[int, ...]
    shim_pids: tuple[int, ...]  # from /proc
    connect: object         # ConnectResponse
    state: object           # StateResponse
    pids: tuple[int, ...]   # from PidsResponse
    unknown_id_code: Code | None      # State for an id the shim does not know
    other_service_code: Code | None   # Connect on the task service name of the other version


async def observe_go_shim(c: PrivateContainerd, cid: str) -> ShimObservation:
    """Talk to the shim of running task ``cid`` over the socket containerd recorded in its bundle."""
    row = await wait_task(c, cid, "RUNNING")
    ps = ctrout.task_processes(await ctr(c, "tasks", "ps", cid))
    address, version = c.shim_endpoint(cid)
    pb = TASK_MODULES[version]
    service, other = f"containerd.task.v{version}.Task", f"containerd.task.v{5 - version}.Task"
    async with open_unix_client(address) as client:
        conn = await client.call(service, "Connect", pb.ConnectRequest(id=cid), pb.ConnectResponse)
        state = await client.call(service, "State", pb.StateRequest(id=cid), pb.StateResponse)
        pids = await client.call(service, "Pids", pb.PidsRequest(id=cid), pb.PidsResponse)
        unknown = await status_code(client.call(service, "State", pb.StateRequest(id=cid + "-x"), pb.StateResponse))
        wrong = await status_code(client.call(other, "Connect", pb.ConnectRequest(id=cid), pb.ConnectResponse))
    return ShimObservation(version, address, str(c.bundle(cid)), row, tuple(sorted(p.pid for p in ps)),
                           tuple(shim_daemon_pids(c, cid)), conn, state,
                           tuple(sorted(p.pid for p in pids.processes)), unknown, wrong)


def forward_request(namespace: str, topic: str, event: any_pb2.Any,
                    when: datetime) -> ttrpc_events_pb2.ForwardRequest:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ttrpc_events_pb2.ForwardRequest(envelope=ttrpc_events_pb2.Envelope(
        timestamp=ts, namespace=namespace, topic=topic, event=event))


async def _read_lines(stream: trio.abc.ReceiveStream, send: trio.MemorySendChannel[str]) -> None:
    async with send:
        buf = b""
        async for chunk in stream:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                await send.send(line.decode(errors="replace"))


async def _until(lines: trio.MemoryReceiveChannel[str], needle: str, seen: list[str]) -> str:
    async for line in lines:
        seen.append(line)
        if needle in line:
            return line
    raise EOFError(f"ctr events ended before {needle!r}; saw {seen}")


@dataclass(frozen=True)
class ForwardObservation:
    line: str                        # the ctr events line that carries ``needle``
    invalid_topic_code: Code | None  # Forward with a topic lacking the leading "/"


async def forward_and_watch(c: PrivateContainerd, topic: str, event: any_pb2.Any, when: datetime,
                            needle: str) -> ForwardObservation:
    """Start ``ctr events``, wait until its subscription is live, Forward the event to containerd's ttrpc
    socket with our client and return the first output line containing ``needle``."""
    ns = c.namespace
    await trio.to_thread.run_sync(lambda: c.ctr("namespaces", "create", ns, check=False))
    seen: list[str] = []
    proc = await trio.lowlevel.open_process(c.ctr_argv("events"), env=c.env(), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE)
    try:
        async with trio.open_nursery() as nursery:
            send, lines = trio.open_memory_channel[str](100)
            nursery.start_soon(_read_lines, proc.stdout, send)
            # ctr subscribes asynchronously: publish probes until one shows, then the subscription is live
            probe = 0
            while True:
                probe += 1
                await ctr(c, "namespaces", "label", ns, f"pyshim.probe={probe}")
                with trio.move_on_after(0.5):
                    await _until(lines, "/namespaces/update", seen)
                    break
            async with open_unix_client(c.ttrpc_address) as client:
                await client.call(EVENTS, "Forward", forward_request(ns, topic, event, when), empty_pb2.Empty)
                bad = await status_code(client.call(EVENTS, "Forward", forward_request(
                    ns, topic.lstrip("/"), event, when), empty_pb2.Empty))
            line = await _until(lines, needle, seen)
            nursery.cancel_scope.cancel()
    finally:
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
    return ForwardObservation(line, bad)
