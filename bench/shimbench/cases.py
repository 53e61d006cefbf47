"""The container-level cases of the shim benchmark, each for one runtime on one private containerd.

Rules:
- Every container a case starts is removed by the case (``Fleet`` kills, deletes tasks and containers in a
  finally), so cases are independent and the containerd teardown finds nothing.
- A ``Runtime`` is a column: containerd's runtime name, extra ``ctr run`` flags (pyshim's shared-daemon variant
  is pyshim with ``--runtime-config-path`` of a ``sharing = "namespace"`` file), and what tells its daemons'
  command lines apart. Shim processes of a runtime are its daemons given ``-address <containerd>`` and an
  ``-id`` (start and delete have exited by the time anything is measured), plus, for pyshim per pod, the fork
  server and its zygotes of the benchmark's own fork server directory: the memory rows count everything a
  runtime keeps resident.
- Timing is wall time of the ctr command (ctr's own ~10-20 ms is in both runtimes' numbers alike).
"""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import trio

from protos import task_v2_pb2
from ttrpc.client import open_unix_client

from tests.integration.harness import ctrout, procs

from .measure import percentile, total_memory

PYSHIM = "io.containerd.pyshim.v1"
GO = "io.containerd.runc.v2"
RUST = "io.containerd.runcrs.v2"  # the Rust runc shim (containerd/rust-extensions), as containerd-shim-runcrs-v2
PARALLEL = 4  # ctr commands at once when filling or emptying a fleet


@dataclass(frozen=True)
class Runtime:
    """One column of the benchmark (see the module rules)."""

    key: str                      # pyshim, shared, go, rust
    name: str                     # containerd's runtime name
    binary: str                   # the file name of its shim binary, as its daemons' command lines show it
    flags: tuple[str, ...] = ()   # extra ``ctr run`` flags
    shared: bool = False          # its daemons are shared (``-shared`` on their command line)
    fork_server: bool = False     # the fork server's processes count as its memory
    target: str = ""              # the file name the link points to, when its daemons re-exec that (the Rust shim)

    def owns(self, argv: tuple[str, ...]) -> bool:
        """Is the shim daemon with this command line one of ours?"""
        names = {self.binary, self.target} - {""}
        return any(a.rsplit("/", 1)[-1] in names for a in argv) and ("-shared" in argv) == self.shared


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


class Fleet:
    """Containers of one runtime started by a case; removed on exit."""

    def __init__(self, c, runtime: Runtime, ref: str) -> None:
        self.c, self.runtime, self.ref = c, runtime, ref
        self.ids: list[str] = []

    def __enter__(self) -> "Fleet":
        return self

    def run(self, cid: str, group: str = "") -> None:
        self.ids.append(cid)
        extra = ["--annotation", f"io.kubernetes.cri.sandbox-id={group}"] if group else []
        self.c.ctr("run", "-d", "--runtime", self.runtime.name, *self.runtime.flags, *extra, self.ref, cid,
                   "/bin/sleep", "3600", timeout=120)

    def start_many(self, count: int, group: str = "", parallel: int = PARALLEL) -> float:
        """Start ``count`` containers with ``parallel`` ctr commands at once; the wall time."""
        ids = [new_id("m") for _ in range(count)]
        t = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda cid: self.run(cid, group), ids))
        took = time.perf_counter() - t
        running = {t.id for t in ctrout.tasks(self.c.ctr("tasks", "ls").stdout) if t.status == "RUNNING"}
        missing = set(ids) - running
        if missing:
            raise RuntimeError(f"{len(missing)} of {count} containers not running")
        return took

    def __exit__(self, *exc) -> None:
        c = self.c
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(lambda cid: c.ctr("tasks", "kill", "--signal", "SIGKILL", cid, check=False), self.ids))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = {t.id: t.status for t in ctrout.tasks(c.ctr("tasks", "ls").stdout)}
            if all(rows.get(cid, "STOPPED") == "STOPPED" for cid in self.ids):
                break
            time.sleep(0.1)

        def remove(cid: str) -> None:
            c.ctr("tasks", "rm", "--force", cid, check=False, timeout=60)
            c.ctr("containers", "rm", cid, check=False)
        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(remove, self.ids))
        self.ids.clear()


def shim_pids(c, runtime: Runtime, extra: list[int]) -> list[int]:
    daemons = [p.pid for p in procs.shims_of(c.address) if "-id" in p.argv and "start" not in p.argv
               and "delete" not in p.argv and runtime.owns(p.argv)]
    return daemons + (extra if runtime.fork_server else [])


def run_rm(c, runtime: Runtime, rootfs: str) -> float:
    """(a) one ``ctr run --rm --rootfs DIR id /bin/true``."""
    cid = new_id("a")
    t = time.perf_counter()
    c.ctr("run", "--rm", "--runtime", runtime.name, *runtime.flags, "--rootfs", rootfs, cid, "/bin/true",
          timeout=120)
    return time.perf_counter() - t


def memory_rows(c, runtime: Runtime, ref: str, extra_pids, counts=(1, 10, 100), groups=(10, 10)) -> dict:
    """(c) total memory of the shim processes with N single-container tasks, and with groups."""
    out = {}
    for n in counts:
        with Fleet(c, runtime, ref) as fleet:
            fleet.start_many(n)
            time.sleep(1.0)  # let every daemon finish its first requests
            out[f"tasks_{n}"] = total_memory(shim_pids(c, runtime, extra_pids()))
    n_groups, size = groups
    with Fleet(c, runtime, ref) as fleet:
        for g in range(n_groups):
            fleet.start_many(size, group=new_id("grp"))
        time.sleep(1.0)
        out[f"groups_{n_groups}x{size}"] = total_memory(shim_pids(c, runtime, extra_pids()))
    return out


def concurrent_starts(c, runtime: Runtime, ref: str, count: int, group: bool = False) -> float:
    """(d) wall time of ``count`` ``ctr run -d`` issued at once (one group when ``group``)."""
    with Fleet(c, runtime, ref) as fleet:
        return fleet.start_many(count, group=new_id("grp") if group else "", parallel=count)


def exec_latency(c, runtime: Runtime, ref: str, runs: int) -> list[float]:
    """(e) ``ctr task exec`` of /bin/true in a running container."""
    with Fleet(c, runtime, ref) as fleet:
        cid = new_id("e")
        fleet.run(cid)
        samples = []
        for i in range(runs):
            samples.append(timed(c.ctr, "task", "exec", "--exec-id", f"x{i}", cid, "/bin/true"))
        return samples


async def _state_calls(address: str, service: str, cid: str, callers: int, calls: int) -> tuple[float, list[float]]:
    req = task_v2_pb2.StateRequest(id=cid)
    latencies: list[float] = []
    async with open_unix_client(address) as client:
        for _ in range(100):  # warm-up
            await client.call(service, "State", req, task_v2_pb2.StateResponse)

        async def caller(n: int) -> None:
            for _ in range(n):
                t = time.perf_counter()
                await client.call(service, "State", req, task_v2_pb2.StateResponse)
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(callers):
                nursery.start_soon(caller, calls // callers)
        return time.perf_counter() - t0, latencies


def state_rpc(c, runtime: Runtime, ref: str, calls: int) -> dict[str, float]:
    """(f) State round-trips per second and p99 at 1 and 8 callers sharing one connection (our trio client)."""
    out = {}
    with Fleet(c, runtime, ref) as fleet:
        cid = new_id("f")
        fleet.run(cid)
        address, version = c.shim_endpoint(cid)
        service = "containerd.task.v3.Task" if version == 3 else "containerd.task.v2.Task"
        for callers in (1, 8):
            seconds, lat = trio.run(_state_calls, address.removeprefix("unix://"), service, cid, callers, calls)
            out[f"state_rps_{callers}"] = len(lat) / seconds
            out[f"state_p99_ms_{callers}"] = percentile(lat, 0.99) * 1e3
    return out

