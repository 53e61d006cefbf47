"""Task events, published to containerd over ttrpc `Forward` in the order they were emitted.

Rules:
- `Publisher.emit` never blocks and never fails: it queues the event (with its timestamp taken now) on
  one channel. The publisher task, started in the daemon's root nursery, is the channel's only reader
  and sends events one at a time, so per-process order (create, start, exit, delete) is the emit order.
- A containerd restart is normal: on a closed connection or a refused connect the publisher reconnects
  and retries the same event with a growing back-off (capped at 2 s) for as long as the daemon lives, so
  no exit is lost however long containerd is down (containerd keeps no events of its own: what a shim does not
  deliver, nobody sees; the Go shim gives up after six tries, ~15 s). Order is kept: the one sender retries the
  head of the queue and nothing overtakes it. Delivery is once, except an event containerd received just
  before it died while answering, which is sent again (at least once).
- The bound is the queue: QUEUE_DEPTH events wait (each a few hundred bytes); an event emitted while the queue
  is full is dropped and logged. A daemon's tasks emit a handful of events each while containerd is down, far
  below it. Only an event containerd rejects as invalid is dropped (logged).
- A new event (containerd is calling us again) or `close` cuts the back-off short, so a shim whose containerd
  came back neither delays its events nor its exit.
- The envelope timestamp is always set (containerd 1.6 rejects a missing one).
- The publisher owns its ttrpc client connection and closes it when it stops.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio
from google.protobuf.message import Message

from protos import task_events_pb2 as ev
from protos import ttrpc_events_pb2 as tev
from ttrpc.client import open_unix_client
from ttrpc.status import Code, StatusError

log = logging.getLogger(__name__)

SERVICE = "containerd.services.events.ttrpc.v1.Events"
NAMESPACE_KEY = "containerd-namespace-ttrpc"
QUEUE_DEPTH = 16384
FORWARD_TIMEOUT = 5.0


@dataclass(frozen=True)
class _Event:
    topic: str
    message: Message
    timestamp: float


class Publisher:
    """Sends task events to containerd's Events service, one at a time, in emit order (see the module rules)."""

    def __init__(self, ttrpc_address: str, namespace: str) -> None:
        self._address = ttrpc_address
        self._namespace = namespace
        self._send, self._recv = trio.open_memory_channel[_Event](QUEUE_DEPTH)
        self._idle = trio.Event()
        self._idle.set()
        self._pending = 0
        self._wake = trio.Event()  # cuts a retry back-off short
        self._closing = False

    def emit(self, message: Message) -> None:
        """Queue an event message (a containerd.events Task* message); never blocks, never fails."""
        topic = TOPIC[type(message)]
        try:
            self._send.send_nowait(_Event(topic, message, time.time()))
        except trio.WouldBlock:
            log.error("event queue full, dropping %s", topic)
            return
        except trio.ClosedResourceError:
            log.warning("publisher closed, dropping %s", topic)
            return
        if not self._pending:
            self._idle = trio.Event()
        self._pending += 1
        self._wake.set()  # a new event means containerd is talking to us again: retry now

    def _done(self) -> None:
        self._pending -= 1
        if not self._pending:
            self._idle.set()

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until every queued event was sent or dropped."""
        with trio.move_on_after(timeout):
            await self._idle.wait()

    def close(self) -> None:
        """No more events; `run` returns once the queue is empty (retrying at once, without back-off)."""
        self._send.close()
        self._closing = True
        self._wake.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The sender task (the daemon's root nursery runs it): until ``close`` and the queue is empty."""
        task_status.started()
        if not self._address:
            log.warning("TTRPC_ADDRESS is empty: events will not be published")
        async with self._recv:
            event: _Event | None = None
            delay = 0.05
            while True:
                if event is None:
                    try:
                        event = await self._recv.receive()
                    except trio.EndOfChannel:
                        return
                if not self._address:
                    event = None
                    self._done()
                    continue
                try:
                    async with open_unix_client(self._address) as client:
                        while True:
                            await client.call(
                                SERVICE, "Forward", _forward_request(event, self._namespace), _Empty,
                                timeout=FORWARD_TIMEOUT, metadata=((NAMESPACE_KEY, self._namespace),),
                            )
                            event, delay = None, 0.05
                            self._done()
                            try:
                                event = await self._recv.receive()
                            except trio.EndOfChannel:
                                return
                except StatusError as e:
                    if e.code in (Code.INVALID_ARGUMENT, Code.UNIMPLEMENTED, Code.RESOURCE_EXHAUSTED):
                        log.error("containerd rejected event %s: %s", event.topic, e.message)
                        event = None
                        self._done()
                        continue
                    err = e.message
                except OSError as e:
                    err = str(e)
                except Exception as e:  # never let the publisher take the daemon down
                    log.exception("publishing %s failed unexpectedly", event.topic)
                    err = repr(e)
                log.debug("publishing %s failed (%s), retrying in %.2f s", event.topic, err, delay)
                if not self._closing:
                    self._wake = trio.Event()
                    with trio.move_on_after(delay):
                        await self._wake.wait()
                else:
                    await trio.sleep(0.05)  # shutting down: retry at once (bounded by drain's timeout)
                delay = min(delay * 2, 2.0)


def _forward_request(event: _Event, namespace: str) -> tev.ForwardRequest:
    req = tev.ForwardRequest()
    env = req.envelope
    env.timestamp.FromNanoseconds(int(event.timestamp * 1e9))
    env.namespace = namespace
    env.topic = event.topic
    env.event.type_url = event.message.DESCRIPTOR.full_name
    env.event.value = event.message.SerializeToString()
    return req


class _Empty:
    """google.protobuf.Empty without importing its module: Forward answers zero bytes."""

    @staticmethod
    def FromString(data: bytes) -> "_Empty":
        return _Empty()


def _ts(msg: Message, field: str, ts: float | None) -> None:
    if ts is not None:
        getattr(msg, field).FromNanoseconds(int(ts * 1e9))


class TaskEvents:
    """The task events by name, so task code states what happened, not which fields to fill."""

    def __init__(self, publisher: Publisher) -> None:
        self._emit = publisher.emit

    def create(self, container_id: str, bundle: str, rootfs, stdin: str, stdout: str, stderr: str,
               terminal: bool, checkpoint: str, pid: int) -> None:
        """/tasks/create: the container was created (its init not started yet)."""
        m = ev.TaskCreate(container_id=container_id, bundle=bundle, checkpoint=checkpoint, pid=pid)
        m.rootfs.extend(rootfs)
        m.io.stdin, m.io.stdout, m.io.stderr, m.io.terminal = stdin, stdout, stderr, terminal
        self._emit(m)

    def start(self, container_id: str, pid: int) -> None:
        """/tasks/start: the init started."""
        self._emit(ev.TaskStart(container_id=container_id, pid=pid))

    def exit(self, container_id: str, id: str, pid: int, status: int, exited_at: float | None) -> None:
        """/tasks/exit: a process exited (``id`` is the exec id, or the container id for the init)."""
        m = ev.TaskExit(container_id=container_id, id=id, pid=pid, exit_status=status)
        _ts(m, "exited_at", exited_at)
        self._emit(m)

    def delete(self, container_id: str, pid: int, status: int, exited_at: float | None) -> None:
        """/tasks/delete: the container was deleted."""
        m = ev.TaskDelete(container_id=container_id, pid=pid, exit_status=status)
        _ts(m, "exited_at", exited_at)
        self._emit(m)

    def exec_added(self, container_id: str, exec_id: str) -> None:
        """/tasks/exec-added: an exec process was added."""
        self._emit(ev.TaskExecAdded(container_id=container_id, exec_id=exec_id))

    def exec_started(self, container_id: str, exec_id: str, pid: int) -> None:
        """/tasks/exec-started: an exec process started."""
        self._emit(ev.TaskExecStarted(container_id=container_id, exec_id=exec_id, pid=pid))

    def paused(self, container_id: str) -> None:
        """/tasks/paused: the container was frozen."""
        self._emit(ev.TaskPaused(container_id=container_id))

    def resumed(self, container_id: str) -> None:
        """/tasks/resumed: the container was thawed."""
        self._emit(ev.TaskResumed(container_id=container_id))

    def oom(self, container_id: str) -> None:
        """/tasks/oom: the kernel's OOM killer acted in the container's cgroup."""
        self._emit(ev.TaskOOM(container_id=container_id))


TOPIC = {
    ev.TaskCreate: "/tasks/create",
    ev.TaskStart: "/tasks/start",
    ev.TaskExit: "/tasks/exit",
    ev.TaskDelete: "/tasks/delete",
    ev.TaskExecAdded: "/tasks/exec-added",
    ev.TaskExecStarted: "/tasks/exec-started",
    ev.TaskPaused: "/tasks/paused",
    ev.TaskResumed: "/tasks/resumed",
    ev.TaskOOM: "/tasks/oom",
    ev.TaskCheckpointed: "/tasks/checkpointed",
}
