"""Stats at scale: 100 containers in one grouped pyshim answer Stats within containerd's budget.

containerd's Metrics service asks the shims one task after another (services/tasks/local.go getTasksMetrics),
so the time that matters is the sequential sum over the group: it must stay under 2 s for 100 containers
(the median of three rounds is judged and all three are printed).
The calls go straight to the shim's socket (the address containerd recorded), so the number is the shim's,
not ctr's start-up; the concurrent case checks the bounded worker pool under a burst.

Rules: the containers are started in parallel (4 ctr at a time) and all removed whatever happens; every
answer is decoded and checked (type URL of this host's cgroup mode, one process in the cgroup).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import trio

from protos import cgroups_v1_pb2, cgroups_v2_pb2
from ttrpc.client import open_unix_client

from .conftest import new_id
from .e2e_helpers import PYSHIM, cleanup, wait_status
from .harness.interop import TASK_MODULES
from .stats_helpers import unified_host

COUNT = 100
BUDGET = 2.0  # seconds for all of them, one after another
ROUNDS = 3  # the median round is judged: this 2-core machine is shared, one scheduling storm is not the shim


async def _stats_times(address: str, version: int, cids: list[str]) -> tuple[list[float], float, list[tuple[str, bytes]]]:
    pb = TASK_MODULES[version]
    service = f"containerd.task.v{version}.Task"
    answers: list[tuple[str, bytes]] = []
    async with open_unix_client(address) as client:
        async def one(cid: str, into: list | None = None) -> None:
            resp = await client.call(service, "Stats", pb.StatsRequest(id=cid), pb.StatsResponse, timeout=10)
            if into is not None:
                into.append((resp.stats.type_url, resp.stats.value))

        await one(cids[0])  # warm-up: imports, thread pool
        sequential = []
        for _ in range(ROUNDS):
            start = trio.current_time()
            for cid in cids:
                await one(cid, answers)
            sequential.append(trio.current_time() - start)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for cid in cids:
                nursery.start_soon(one, cid)
        concurrent = trio.current_time() - start
    return sequential, concurrent, answers


def test_stats_of_100_containers_in_one_shim(containerd, pyshim_binary, busybox_image):
    group = new_id("grp")
    cids = [new_id("scale") for _ in range(COUNT)]

    def run(cid: str) -> None:
        containerd.ctr("run", "-d", "--runtime", PYSHIM, "--annotation", f"io.pyshim.group={group}",
                       busybox_image, cid, "sleep", "600", timeout=120)
        wait_status(containerd, cid, "RUNNING", timeout=60)

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(run, cids))
        addresses = {containerd.shim_endpoint(cid) for cid in cids}
        assert len(addresses) == 1, addresses  # one shim for the whole group
        (address, version), = addresses
        sequential, concurrent, answers = trio.run(_stats_times, address, version, cids)
    finally:
        cleanup(containerd, *cids)
    median = sorted(sequential)[ROUNDS // 2]
    print(f"\nStats of {COUNT} containers in one pyshim, one after another: "
          + ", ".join(f"{t:.3f} s" for t in sequential)
          + f" (median {median / COUNT * 1000:.1f} ms each); all at once: {concurrent:.3f} s")
    metrics_type = cgroups_v2_pb2.Metrics if unified_host() else cgroups_v1_pb2.Metrics
    assert len(answers) == COUNT * ROUNDS
    for type_url, value in answers:
        assert type_url == metrics_type.DESCRIPTOR.full_name
        assert metrics_type.FromString(value).pids.current == 1
    assert median < BUDGET
    assert concurrent < BUDGET
