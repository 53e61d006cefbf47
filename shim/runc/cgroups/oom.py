"""The OOM watcher of one container: publishes one TaskOOM per increase of the cgroup's OOM-kill count.

Rules:
- Owned by the container: `run` is started in the container's nursery when the init starts and ends when
  that nursery closes (container deleted) or the cgroup disappears; the kernel fd (shim/runc/cgroups/oomsource.py)
  is opened in `run` and closed in its `finally`, so no fd outlives the container. An OS error ends the
  watch with a warning; it never propagates into the container's nursery, nor out of `drain`.
- One rule for v1 and v2: `on_oom()` is called once each time the kill counter is seen higher than the
  last value reported (starting from 0, so a kill before the watch was registered is still reported).
  Several kills seen in one look give one call, as upstream's v2 watcher does. All checks run on the trio
  thread without an await between reading the counter and calling `on_oom`, so the watcher and `drain`
  can never both report the same kill.
- The kernel signals an OOM episode (v1 eventfd, v2 `oom`) before it picks and kills a victim and counts
  the kill, so a wake-up whose episode has no kill counted yet polls the counter (every POLL, at most
  SETTLE) until it rises; an episode that never leads to a kill (the victim was already dying,
  oom_kill_disable) is then taken as settled.
- `drain(killed)` runs in the init's exit handler right before its exit event: it reports any kill not
  reported yet, so /tasks/oom precedes /tasks/exit; when the init died of SIGKILL while an episode is
  unsettled, it waits for the kill count the same way (at most DRAIN_WAIT).
"""
from __future__ import annotations

import logging
from typing import Callable

import trio

from shim.runc.cgroups.oomsource import Source, V1Source, V2Source
from shim.runc.cgroups.paths import CgroupPaths

log = logging.getLogger(__name__)

SETTLE = 0.5
DRAIN_WAIT = 0.25
POLL = 0.01


class OomWatcher:
    def __init__(self, container_id: str, source: Source, on_oom: Callable[[], None]) -> None:
        self.container_id = container_id
        self._source = source
        self._on_oom = on_oom
        self._kills = 0  # the kill count already reported
        self._settled = 0  # OOM episodes accounted for (by a kill, or by waiting one out)

    @classmethod
    def for_cgroup(cls, container_id: str, where: CgroupPaths, on_oom: Callable[[], None]) -> "OomWatcher | None":
        if where.version == 2:
            return cls(container_id, V2Source(where.unified), on_oom)
        memory = where.dir("memory")
        if memory is None:
            log.warning("container %s has no memory cgroup: no OOM events", container_id)
            return None
        return cls(container_id, V1Source(memory), on_oom)

    @property
    def fd(self) -> int | None:
        return self._source.fd

    def _check(self) -> bool:
        """Report a kill if the counter rose; False when the cgroup is gone."""
        counts = self._source.counters()
        if counts is None:
            return False
        episodes, kills = counts
        if kills > self._kills:
            self._kills = kills
            self._settled = max(self._settled, episodes)
            log.info("container %s: OOM kill (count %d)", self.container_id, kills)
            self._on_oom()
        return True

    def _pending(self) -> bool:
        """An OOM episode whose kill is not counted yet. A kill counted since the last look is reported here:
        the count can rise between a wake-up's check and this read, and no further wake-up may follow."""
        counts = self._source.counters()
        if counts is None:
            return False
        if counts[1] > self._kills:
            self._check()
            return False
        return counts[0] > self._settled

    async def _settle(self, limit: float, *, once: bool = False) -> None:
        """Wait (at most `limit` a round) for the kill of unsettled episodes to be counted, reporting it.
        Only the episodes seen when a round began are settled by it: one arriving meanwhile (its eventfd
        count already consumed by the polling) gets a round of its own, unless `once`."""
        while True:
            counts = self._source.counters()
            if counts is None:
                return
            seen = counts[0]
            with trio.move_on_after(limit):
                while self._pending():
                    await trio.sleep(POLL)
                    self._source.consume()
                    self._check()
            self._settled = max(self._settled, seen)
            if once or not self._pending():
                return

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            self._source.open()
        except OSError as e:
            log.warning("container %s: cannot watch for OOM kills: %s", self.container_id, e)
            task_status.started()
            return
        started = False
        try:
            alive = self._check()
            task_status.started()
            started = True
            while alive:
                await trio.lowlevel.wait_readable(self._source.fd)
                self._source.consume()
                alive = self._check() and not getattr(self._source, "watch_gone", False)
                if alive and self._pending():
                    await self._settle(SETTLE)
            log.debug("container %s: cgroup gone, OOM watch ends", self.container_id)
        except OSError as e:  # never take the container's nursery down with us
            log.warning("container %s: OOM watch failed: %s", self.container_id, e)
            if not started:
                task_status.started()
        finally:
            if self._source.fd is not None:
                trio.lowlevel.notify_closing(self._source.fd)
            self._source.close()

    async def drain(self, killed: bool) -> None:
        """Before the init's exit event: report what the kernel already counted (see the rules).
        Never raises: the exit event must follow whatever happens here."""
        try:
            self._source.consume()
            self._check()
            if killed and self._pending():
                await self._settle(DRAIN_WAIT, once=True)
        except OSError as e:
            log.warning("container %s: OOM drain failed: %s", self.container_id, e)
