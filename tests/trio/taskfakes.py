"""Fakes for driving the task service (shim/runc/service.py over shim/runc/task/*) without a runtime or a containerd.

Rules: the fakes record what the task layer asked for and answer like a well-behaved runtime would; they
never decide anything the code under test should decide. `Harness` runs a real `Tasks` (with its exit loop in
a nursery) and a real `RuncTaskService` over a real `Reaper` whose exits the test delivers by hand (`exit`).
"""
from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from runtime.base import Capability
from runtime.errors import classify
from shim.reaper import Exit, Reaper
from shim.runc.service import RuncTaskService
from shim.runc.task.tasks import Tasks


class FakeBackend:
    """A RuntimeBackend that records calls; `fail[op] = text` makes that call fail as OciCli would on a runtime
    that said `text` (runtime.errors.classify: "does not exist" is ContainerNotFound, ...)."""

    def __init__(self, capabilities=frozenset(Capability), name: str = "fake") -> None:
        self.name = name
        self.capabilities = frozenset(capabilities)
        self.calls: list[tuple] = []
        self.fail: dict[str, str] = {}
        self.next_pid = 4000
        self.ps_pids: tuple[int, ...] = ()
        self.on_restore = None  # called with the pid right after restore "ran" (e.g. deliver an early exit)

    def _call(self, op: str, *args) -> None:
        self.calls.append((op, *args))
        if op in self.fail:
            raise classify(op, self.fail[op], 1)

    def ops(self) -> list[str]:
        return [c[0] for c in self.calls]

    async def create(self, spec):
        self._call("create", spec)
        self.next_pid += 1
        return self.next_pid

    async def start(self, ref):
        self._call("start", ref)

    async def exec(self, spec):
        self._call("exec", spec)
        self.next_pid += 1
        return self.next_pid

    async def kill(self, ref, signal, *, all=False):
        self._call("kill", ref, signal, all)

    async def delete(self, ref, *, force=False):
        self._call("delete", ref, force)

    async def state(self, ref):
        raise NotImplementedError

    async def ps(self, ref):
        self._call("ps", ref)
        return self.ps_pids

    async def pause(self, ref):
        self._call("pause", ref)

    async def resume(self, ref):
        self._call("resume", ref)

    async def update(self, ref, resources_json):
        self._call("update", ref, resources_json)

    async def checkpoint(self, ref, spec):
        self._call("checkpoint", ref, spec)
        Path(spec.criu.image_path).mkdir(parents=True, exist_ok=True)
        (Path(spec.criu.image_path) / "inventory.img").write_bytes(b"criu images")

    async def restore(self, spec):
        self._call("restore", spec)
        self.next_pid += 1
        if self.on_restore is not None:
            self.on_restore(self.next_pid)
        return self.next_pid


class FakeIO:
    """ProcessIO's surface as the task layer uses it."""

    def __init__(self, stdio) -> None:
        self.stdio = stdio
        self.runtime_stdio = (None, None, None)
        self.console_socket_path = "/run/fake/pty.sock" if stdio.terminal else None
        self.started = False
        self.closed = False

    async def start(self, nursery) -> None:
        self.started = True

    async def drain(self, timeout: float) -> bool:
        return True

    async def aclose(self) -> None:
        self.closed = True

    async def close_stdin(self) -> None:
        pass

    def resize(self, width: int, height: int) -> None:
        pass


class FakeEvents:
    def __init__(self) -> None:
        self.log: list[tuple] = []

    def __getattr__(self, name: str):
        def record(*args):
            self.log.append((name, *args))
        return record

    def names(self) -> list[str]:
        return [e[0] for e in self.log]


@dataclass
class Harness:
    tasks: Tasks
    service: RuncTaskService
    reaper: Reaper
    backend: FakeBackend
    events: FakeEvents
    root: Path
    ios: list[FakeIO] = field(default_factory=list)

    def bundle(self, cid: str, pid_ns: bool = True) -> str:
        b = self.root / cid
        b.mkdir()
        ns = [{"type": "pid"}] if pid_ns else []
        (b / "config.json").write_text(json.dumps({"linux": {"namespaces": ns}}))
        return str(b)

    def exit(self, pid: int, status: int) -> None:
        """Deliver an exit as the reaper would after waitpid."""
        ex = Exit(pid, status, time.time())
        for sub in tuple(self.reaper._subs):
            sub._deliver(ex)


@asynccontextmanager
async def harness(tmp_path: Path, backend: FakeBackend | None = None):
    backend = backend or FakeBackend()
    events = FakeEvents()
    reaper = Reaper()
    ios: list[FakeIO] = []

    async def io_factory(stdio, proc, container):
        io = FakeIO(stdio)
        ios.append(io)
        return io

    tasks = Tasks(namespace="ns", reaper=reaper, events=events,
                  backend_factory=lambda opts, bundle: (backend, {}), io_factory=io_factory)
    h = Harness(tasks, RuncTaskService(tasks, trio.Event().set), reaper, backend, events, tmp_path, ios)
    async with trio.open_nursery() as nursery:
        await nursery.start(tasks.run)
        with trio.fail_after(10):
            yield h
        nursery.cancel_scope.cancel()


async def settle() -> None:
    """Let every task the exit loop started run until it blocks."""
    await trio.testing.wait_all_tasks_blocked()
