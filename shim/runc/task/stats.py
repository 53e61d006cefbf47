"""Stats of a container: its cgroup sampled off the event loop, with bounded concurrency.

Rules:
- Stats is per container (StatsRequest has no exec id): the init's cgroup holds every process of it.
- Allowed while the init exists (created, running, paused, pausing), and after it exited until Delete, as
  the runc shim does: the (now empty) cgroup is still sampled -- without network counters, since the init's
  pid may already belong to another process. No cgroup known -> NotFound "cgroup does not exist", as upstream
  (containerd's metrics service ignores NotFound quietly; any other error is logged on every poll).
- The sample (file reads, and on v1 a netlink dump in the init's network namespace) runs in a worker
  thread; at most LIMIT run at once so a burst of Stats calls for a large group cannot flood the thread
  pool, and the event loop is never blocked by cgroupfs.
- The cgroup is located after Create (shim/runc/task/container.py); if that failed it is located here.
"""
from __future__ import annotations

import trio

from shim.runc.cgroups.cgroup import ContainerCgroup
from shim.errors import NotFound
from shim.runc.task.states import State

LIMIT = 4
_LIVE = (State.CREATED, State.RUNNING, State.PAUSING, State.PAUSED)


class StatsCollector:
    def __init__(self, limit: int = LIMIT) -> None:
        self._limiter = trio.CapacityLimiter(limit)

    async def collect(self, container) -> tuple[str, bytes]:
        """(type_url, serialized Metrics) of `container` (a shim.runc.task.container.Container)."""
        init = container.init
        live = not init.exited and init.state in _LIVE and init.pid
        cg = container.cgroup
        if cg is None and live:
            cg = container.cgroup = ContainerCgroup.locate(container.id, init.pid)
        if cg is None:
            raise NotFound("cgroup does not exist")
        return await trio.to_thread.run_sync(cg.sample, init.pid if live else 0, limiter=self._limiter)
