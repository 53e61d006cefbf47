"""Shared pieces of the end-to-end scenario matrix (tests/integration/test_e2e_*.py).

Rules:
- Every scenario runs for both runtimes through the ``runtime`` fixture (import it into the test module).
  The Go runc shim is the reference: both parametrisations assert the same expected values, so a scenario
  that passes for ``runc`` and fails for ``pyshim`` is a pyshim bug.  Nothing here weakens an assertion.
- A test owns the containers it creates: ``running`` / ``cleanup`` kill (SIGKILL, all processes), delete the
  task and the container with ``check=False`` so a cleanup never hides the test's own failure; the fixtures'
  teardown then checks that nothing was left behind.
- ``ctr events`` runs in an ``EventStream`` (a Popen read by one thread, both ended and joined on exit).
- Timeouts are short and explicit; polling sleeps 20-50 ms.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from .harness import ctrout, procs
from .harness.daemon import PrivateContainerd

PYSHIM = "io.containerd.pyshim.v1"
RUNC = "io.containerd.runc.v2"


@pytest.fixture(params=[PYSHIM, RUNC], ids=["pyshim", "runc"])
def runtime(request: pytest.FixtureRequest) -> str:
    """The runtime under test; the pyshim case needs the installed shim binary (skip/fail otherwise)."""
    if request.param == PYSHIM:
        request.getfixturevalue("pyshim_binary")
    return request.param


def ctr_bytes(c: PrivateContainerd, *args: str, input: bytes | None = None,
              timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    """Run ctr with binary stdin/stdout (``PrivateContainerd.ctr`` is text-only); never raises on exit code."""
    return subprocess.run(c.ctr_argv(*args), input=input, capture_output=True, timeout=timeout, env=c.env(),
                          stdin=None if input is not None else subprocess.DEVNULL)


def start(c: PrivateContainerd, *args: str, text: bool = False) -> subprocess.Popen:
    """A ctr command left running (foreground ``run``, ``task exec``, ``attach``...); end it with ``finish``."""
    return c.ctr_popen(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text)


def finish(p: subprocess.Popen, timeout: float = 30) -> subprocess.CompletedProcess:
    """Wait for ``p`` (killed if it outlives ``timeout``, then the timeout is raised); return its result."""
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def task_row(c: PrivateContainerd, cid: str) -> ctrout.TaskRow | None:
    return next((t for t in ctrout.tasks(c.ctr("tasks", "ls").stdout) if t.id == cid), None)


def wait_status(c: PrivateContainerd, cid: str, status: str, timeout: float = 15.0) -> ctrout.TaskRow:
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        row = task_row(c, cid)
        if row is not None and row.status == status:
            return row
        time.sleep(0.03)
    raise AssertionError(f"task {cid} not {status} after {timeout}s: last seen {row}")


def wait_until(what: str, check: Callable[[], object], timeout: float = 15.0, every: float = 0.03) -> object:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def trap_init(code: int) -> tuple[str, ...]:
    """A container init that runs until SIGTERM, then exits ``code``."""
    return ("/bin/sh", "-c", f"trap 'exit {code}' TERM; while :; do sleep 1; done")


def deleted_status(res: subprocess.CompletedProcess) -> int:
    """The exit status ``ctr task rm`` reported: ctr warns "task <id> exit with non-zero exit code <n>" and
    exits 0 (0 when it says nothing)."""
    assert res.returncode == 0, res.stderr
    found = re.findall(r"exit with non-zero exit code (\d+)", res.stderr)
    return int(found[-1]) if found else 0


def cleanup(c: PrivateContainerd, *cids: str) -> None:
    """Best effort: SIGKILL every process, delete tasks and containers (errors ignored, teardown checks)."""
    if c.pid is None:
        return
    for cid in cids:
        c.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", cid, check=False)
    for cid in cids:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            row = task_row(c, cid)
            if row is None or row.status == "STOPPED":
                break
            time.sleep(0.03)
        c.ctr("tasks", "rm", "--force", cid, check=False, timeout=30)
        c.ctr("containers", "rm", cid, check=False)
    # A dead shim's cleanup (containerd runs ``<shim> ... delete``) may still be running: stopping containerd
    # now would kill it half-way, so give it time to finish.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            p.argv[-1:] == ("delete",) and set(cids) & set(p.argv) for p in procs.shims_of(c.address)):
        time.sleep(0.03)


@contextmanager
def running(c: PrivateContainerd, runtime: str, cid: str, image_or_rootfs: str | Path, *argv: str,
            extra: tuple[str, ...] = (), timeout: float = 15.0) -> Iterator[ctrout.TaskRow]:
    """``ctr run -d`` a container (from a rootfs directory when given a Path, else an image reference),
    wait (up to ``timeout``) until RUNNING, yield its task row, and clean it up whatever happens."""
    source = ["--rootfs", str(image_or_rootfs)] if isinstance(image_or_rootfs, Path) else [image_or_rootfs]
    try:
        c.ctr("run", "-d", "--runtime", runtime, *extra, *source, cid, *argv)
        yield wait_status(c, cid, "RUNNING", timeout=timeout)
    finally:
        cleanup(c, cid)


FLOOD = ("/bin/sh", "-c", "i=0; while :; do echo flood $i; i=$((i+1)); done")  # writes stdout as fast as it can


def flood_then_kill_reader(c: PrivateContainerd, run_args: tuple[str, ...], while_reading: Callable[[], None]) -> None:
    """``ctr run <run_args>``, a foreground container running FLOOD: read 256 KiB of its output, call
    ``while_reading()``, then SIGKILL ctr. The container's stdout FIFO has no reader left from then on."""
    client = start(c, "run", *run_args)
    try:
        got = b""
        while len(got) < 256 * 1024:
            chunk = client.stdout.read1(65536)
            assert chunk, finish(client)
            got += chunk
        assert got.startswith(b"flood 0\nflood 1\n"), got[:100]
        while_reading()
        client.kill()
        client.wait()
    finally:
        if client.poll() is None:
            client.kill()
        finish(client)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid: int, settle: float = 1.0, span: float = 3.0) -> float:
    """CPU seconds ``pid`` spends in ``span`` seconds, from ``settle`` seconds after now (a daemon that spins on a
    dead reader spends about ``span``)."""
    time.sleep(settle)
    before = cpu_seconds(pid)
    time.sleep(span)
    return cpu_seconds(pid) - before


def cgroup_pids(namespace: str, cid: str) -> set[int]:
    """Pids of live processes whose cgroup (any hierarchy) is ctr's ``/<namespace>/<cid>``."""
    want = f"/{namespace}/{cid}"
    found = set()
    for p in procs.all_processes():
        try:
            text = Path(f"/proc/{p.pid}/cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if any(line.split(":", 2)[-1] == want for line in text.splitlines()):
            found.add(p.pid)
    return found


@dataclass(frozen=True)
class Event:
    topic: str
    payload: dict

    def about(self, cid: str) -> bool:
        return self.payload.get("container_id", self.payload.get("id")) == cid


# ctr events prints: <go time with spaces> <namespace> <topic> <json>
_EVENT_LINE = re.compile(r"^.* (?P<ns>\S+) (?P<topic>/\S+) (?P<json>\{.*\})\s*$")


class EventStream:
    """``ctr events`` for one namespace, read into ``self.events`` by one thread until ``close``."""

    def __init__(self, c: PrivateContainerd) -> None:
        self._c = c
        self.events: list[Event] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "EventStream":
        self._proc = self._c.ctr_popen("events", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._ready()
        return self

    def _ready(self) -> None:
        """``ctr events`` prints nothing when subscribed, so publish markers (a namespace label update is an
        event) until one comes through: an event published before the subscription is simply not seen."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            marker = f"e2e-marker-{time.monotonic_ns()}"
            self._c.ctr("namespaces", "label", self._c.namespace, f"e2e={marker}")
            until = time.monotonic() + 0.3
            while time.monotonic() < until:
                if any(marker in line for line in self.lines()):
                    return
                time.sleep(0.02)
        raise AssertionError(f"ctr events never showed a marker event: {self.lines()[-5:]}")

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._lock:
                self.raw.append(line.rstrip("\n"))
                m = _EVENT_LINE.match(line)
                if m and m["ns"] == self._c.namespace:
                    self.events.append(Event(m["topic"], json.loads(m["json"])))

    def lines(self) -> list[str]:
        with self._lock:
            return list(self.raw)

    def about(self, cid: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.topic.startswith("/tasks/") and e.about(cid)]

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(5)
