"""Churn: container lifecycles through a containerd, with the footprint of a long-lived daemon sampled as they go.

Used by the CI churn test (tests/integration/test_sharing_churn.py), the benchmark's churn case
(bench/shim_bench.py ``--cases i``) and the soak command (tools/soak).

Rules:
- One lifecycle: ``ctr run -d`` (a sleeping busybox), ``ctr task exec`` of an echo whose output is checked, SIGKILL,
  ``ctr task delete``, ``ctr containers delete``. Any step that does not do what it should raises ChurnError.
- A footprint is what a leak would make grow: open descriptors, threads and resident memory (KiB) of one process.
- Slopes are least-squares fits over the samples, per 1,000 lifecycles; a leak shows as a steady slope, while
  noise (CPython keeping freed memory in its arenas) shows as a step at the start, hence the warm-up.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import ctrout


class ChurnError(AssertionError):
    """A lifecycle step did not do what it should."""


def footprint(pid: int) -> dict[str, int]:
    """{"fds", "threads", "rss" (KiB)} of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(fields["Threads"]),
            "rss": int(fields["VmRSS"].split()[0])}


def _ctr(c, *args: str):
    return c.ctr(*args, check=False, timeout=60)


def _stopped(c, cid: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = next((t for t in ctrout.tasks(c.ctr("tasks", "ls").stdout) if t.id == cid), None)
        if row is not None and row.status == "STOPPED":
            return
        time.sleep(0.02)
    raise ChurnError(f"{cid} did not stop after SIGKILL")


def lifecycle(c, runtime: str, ref: str, flags: list[str] | tuple[str, ...] = ()) -> None:
    """One create/start/exec/kill/delete of a container (see the module rules)."""
    cid = f"churn-{uuid.uuid4().hex[:12]}"
    run = _ctr(c, "run", "-d", "--runtime", runtime, *flags, ref, cid, "/bin/sleep", "600")
    if run.returncode != 0:
        raise ChurnError(f"run {cid}: {run.stderr}")
    out = _ctr(c, "task", "exec", "--exec-id", f"x{uuid.uuid4().hex[:6]}", cid, "/bin/echo", cid)
    if (out.returncode, out.stdout) != (0, f"{cid}\n"):
        raise ChurnError(f"exec in {cid}: {out.returncode} {out.stdout!r} {out.stderr!r}")
    if _ctr(c, "task", "kill", "--signal", "SIGKILL", cid).returncode != 0:
        raise ChurnError(f"kill {cid} failed")
    _stopped(c, cid)
    if _ctr(c, "task", "delete", cid).returncode not in (0, 137):
        raise ChurnError(f"task delete {cid} failed")
    if _ctr(c, "containers", "delete", cid).returncode != 0:
        raise ChurnError(f"container delete {cid} failed")


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


@dataclass
class Churn:
    """Lifecycles with a daemon's footprint sampled every ``every`` of them (``daemon`` 0: none sampled)."""

    c: object
    runtime: str
    ref: str
    flags: tuple[str, ...] = ()
    daemon: int = 0
    every: int = 50
    samples: list[dict] = field(default_factory=list)  # {"n", "seconds", "fds", "threads", "rss"}
    done: int = 0

    def sample(self, started: float) -> None:
        entry = {"n": self.done, "seconds": time.monotonic() - started}
        if self.daemon:
            entry.update(footprint(self.daemon))
        self.samples.append(entry)

    def run(self, count: int | None = None, seconds: float | None = None) -> None:
        """``count`` lifecycles, or as many as fit in ``seconds``."""
        started = time.monotonic()
        self.sample(started)
        while (count is None or self.done < count) and (seconds is None or time.monotonic() - started < seconds):
            lifecycle(self.c, self.runtime, self.ref, self.flags)
            self.done += 1
            if self.done % self.every == 0:
                self.sample(started)
        if self.samples[-1]["n"] != self.done:
            self.sample(started)

    def slopes(self) -> dict[str, float]:
        """Per 1,000 lifecycles: descriptors, threads, RSS (KiB)."""
        if not self.daemon:
            return {}
        xs = [s["n"] / 1000 for s in self.samples]
        return {k: slope(xs, [s[k] for s in self.samples]) for k in ("fds", "threads", "rss")}
