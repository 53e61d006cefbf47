"""Churn: container lifecycles through a containerd, with the footprint of a long-lived daemon sampled as they go.

Used by the CI soak test (tests/integration/test_soak.py), the benchmark's churn case (bench/shim_bench.py
``--cases i``) and the soak command (tools/soak).

Rules:
- One lifecycle: ``ctr run -d`` (a sleeping busybox), ``ctr task exec`` of a shell that echoes and exits 7, whose
  output and code are checked, SIGKILL, ``ctr task delete``, ``ctr containers delete``. Any step that does not do
  what it should raises ChurnError.
- ``ctr task exec`` sometimes prints nothing of an exec's output (code right, stdout empty) when the machine is
  busy, with containerd's Go shim as with pyshim: 9 and 5 of 400 execs into one container, six at a time beside
  two CPU hogs, on containerd 1.6.20 (the client's race, not a shim's: ctr cancels its FIFO's open once the
  exit reaches it, and a goroutine that has not yet marked the open done loses the output; shim/io/process_io.py
  narrows it to a client stalled for a second). Such an exec is counted as a client race and run once more; a
  second empty output is an error.
- A footprint is what a leak would make grow: open descriptors, threads and resident memory (KiB) of one process.
- Slopes are least-squares fits over the samples, per 1,000 lifecycles; a leak shows as a steady slope, while
  noise (CPython keeping freed memory in its arenas) shows as a step at the start, hence the warm-up.
- A soak (``soak``) is one mode of pyshim's process model: "ungrouped" (a daemon per container; the long-lived
  process watched is the fork server), "grouped" (one pod's daemon, by the group annotation) or "shared"
  (``sharing = "namespace"``). An anchor container keeps the long-lived daemon up. Afterwards ``leaks`` lists what
  the churned containers left: shim processes, container processes, mounts, cgroups, runtime state, bundles and
  unreaped zombies; only the anchor's may remain.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import ctrout, procs

MODES = ("ungrouped", "grouped", "shared")


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


def _exec(c, cid: str):
    return _ctr(c, "task", "exec", "--exec-id", f"x{uuid.uuid4().hex[:6]}", cid, "/bin/sh", "-c", f"echo {cid}; exit 7")


def lifecycle(c, runtime: str, ref: str, flags: list[str] | tuple[str, ...] = ()) -> int:
    """One create/start/exec/kill/delete of a container (see the module rules); returns the client races seen."""
    cid = f"churn-{uuid.uuid4().hex[:12]}"
    run = _ctr(c, "run", "-d", "--runtime", runtime, *flags, ref, cid, "/bin/sleep", "600")
    if run.returncode != 0:
        raise ChurnError(f"run {cid}: {run.stderr}")
    races = 0
    out = _exec(c, cid)
    if (out.returncode, out.stdout) == (7, ""):
        races, out = 1, _exec(c, cid)
    if (out.returncode, out.stdout) != (7, f"{cid}\n"):
        raise ChurnError(f"exec in {cid}: {out.returncode} {out.stdout!r} {out.stderr!r}")
    if _ctr(c, "task", "kill", "--signal", "SIGKILL", cid).returncode != 0:
        raise ChurnError(f"kill {cid} failed")
    _stopped(c, cid)
    if _ctr(c, "task", "delete", cid).returncode not in (0, 137):
        raise ChurnError(f"task delete {cid} failed")
    if _ctr(c, "containers", "delete", cid).returncode != 0:
        raise ChurnError(f"container delete {cid} failed")
    return races


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
    client_races: int = 0  # execs whose output ctr lost (module rules)

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
            self.client_races += lifecycle(self.c, self.runtime, self.ref, self.flags)
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


def write_sharing_config(path: Path, max_tasks: int, idle: float = 2.0) -> Path:
    """A pyshim configuration file with ``sharing = "namespace"``."""
    path.write_text(f'sharing = "namespace"\nmax_tasks_per_daemon = {max_tasks}\nidle_timeout = {idle}\n')
    return path


def leaks(c, keep: str, grace: float = 10.0) -> list[str]:
    """What the containerd ``c`` still holds for containers other than ``keep`` (see the module rules); waits up to
    ``grace`` seconds for what goes away on its own (a daemon exiting after its last task, a zombie being reaped)."""
    deadline = time.monotonic() + grace
    while True:
        found = _leaks_now(c, keep)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _leaks_now(c, keep: str) -> list[str]:
    found = []
    kept = c.shim_daemon(keep)
    shims = procs.shims_of(c.address)
    found += [f"shim {p.pid}: {' '.join(p.argv)}" for p in shims if p.pid != kept]
    found += [f"container process {p.pid}: {' '.join(p.argv)}" for p in procs.in_namespace_cgroup(c.namespace)
              if keep not in procs.cgroup_of(p.pid)]
    found += [f"mount {m}" for m in procs.mounts_under(c.root, c.run_dir) if keep not in m]
    found += [f"cgroup {g}" for g in procs.cgroups_below(c.namespace) if not g.startswith(keep)]
    for root in [*c.runtime_roots, c.bundle(keep).parent]:
        if root.is_dir():
            found += [f"state {root.name}/{e}" for e in os.listdir(root) if e != keep]
    found += [f"zombie {z.pid} ({z.argv[0]}) of {'containerd' if z.pid == c.pid else 'a shim'}"
              for z in procs.zombies({c.pid, *(p.pid for p in shims)})]
    return found


@dataclass
class Soak:
    """One mode's soak: an anchor, a warm-up, then churn with the long-lived process sampled (module rules)."""

    c: object
    runtime: str
    ref: str
    mode: str
    workdir: Path
    forkserver: object = None  # FsDir of the fork server the "ungrouped" mode samples
    warmup: int = 20
    every: int = 25
    churn: Churn | None = None
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    leaked: list[str] = field(default_factory=list)
    watched: int = 0

    def flags(self) -> tuple[str, ...]:
        if self.mode == "grouped":
            return ("--annotation", f"io.pyshim.group=soak-{uuid.uuid4().hex[:8]}")
        if self.mode == "shared":
            cfg = write_sharing_config(self.workdir / "soak-shared.toml", max_tasks=8, idle=1)
            return ("--runtime-config-path", str(cfg))
        return ()

    def run(self, count: int | None = None, seconds: float | None = None) -> None:
        flags = self.flags()
        anchor = f"soak-anchor-{uuid.uuid4().hex[:8]}"
        run = _ctr(self.c, "run", "-d", "--runtime", self.runtime, *flags, self.ref, anchor, "/bin/sleep", "86400")
        if run.returncode != 0:
            raise ChurnError(f"run {anchor}: {run.stderr}")
        try:
            Churn(self.c, self.runtime, self.ref, flags).run(self.warmup)  # also brings the fork server up
            if self.mode == "ungrouped":
                server_of = self.forkserver.server_of if self.forkserver is not None else None
                self.watched = server_of(self.c.shim_daemon(anchor)) if server_of else 0
            else:
                self.watched = self.c.shim_daemon(anchor)
            self.churn = Churn(self.c, self.runtime, self.ref, flags, daemon=self.watched, every=self.every)
            self.churn.run(count, seconds)
            self.before, self.after = self.churn.samples[0], self.churn.samples[-1]
            self.leaked = leaks(self.c, anchor)
            if self.mode != "ungrouped" and self.c.shim_daemon(anchor) != self.watched:
                self.leaked.append("the long-lived daemon was replaced during the churn")
        finally:
            _ctr(self.c, "task", "kill", "--signal", "SIGKILL", anchor)
            _stopped(self.c, anchor)
            _ctr(self.c, "task", "delete", anchor)
            _ctr(self.c, "containers", "delete", anchor)

    def summary(self) -> dict:
        """Lifecycles, rate, the watched process's footprint before/after and slopes, and the leaks."""
        churn = self.churn
        return {"mode": self.mode, "lifecycles": churn.done, "seconds": round(self.after["seconds"], 1),
                "per_second": round(churn.done / self.after["seconds"], 2) if self.after["seconds"] else 0.0,
                "watched_pid": self.watched, "before": self.before, "after": self.after,
                "slopes_per_1000": {k: round(v, 2) for k, v in churn.slopes().items()}, "leaks": self.leaked,
                "client_races": churn.client_races,
                "samples": [{k: v for k, v in sample.items() if k != "seconds"} for sample in churn.samples]}
