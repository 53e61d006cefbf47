"""What the shim benchmark reads from the system: memory of processes, CPU of a cgroup, statistics.

Rules:
- Memory is /proc/<pid>/smaps_rollup: Rss, Pss, and USS = Private_Clean + Private_Dirty, in KiB. A process that
  vanished while being read counts as nothing.
- CPU of the shims is accounted through a cgroup that containerd is moved into right after it starts: every
  shim process (start, daemon, delete, fork server, zygotes) and the runtime CLI it runs inherit it, while
  containers are moved into their own cgroups by the runtime. ``CpuMeter.shim_seconds`` = the cgroup's CPU
  minus containerd's own (utime + stime of the containerd process itself). v1 ``cpuacct`` or v2 ``cpu.stat``.
- Statistics: nearest-rank percentiles over sorted samples; ``median`` is p50.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[max(0, math.ceil(p * len(s)) - 1)]


def median(samples: list[float]) -> float:
    return percentile(samples, 0.5)


def memory(pid: int) -> dict[str, int]:
    """{"rss", "pss", "uss"} in KiB (zeros if the process is gone)."""
    out = {"rss": 0, "pss": 0, "uss": 0}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        kib = int(rest.split()[0]) if rest.strip() else 0
        if key == "Rss":
            out["rss"] = kib
        elif key == "Pss":
            out["pss"] = kib
        elif key in ("Private_Clean", "Private_Dirty"):
            out["uss"] += kib
    return out


def total_memory(pids: list[int]) -> dict[str, int]:
    total = {"rss": 0, "pss": 0, "uss": 0, "processes": 0}
    for pid in pids:
        m = memory(pid)
        if m["rss"]:
            total["processes"] += 1
            for k in ("rss", "pss", "uss"):
                total[k] += m[k]
    return total


def process_cpu(pid: int) -> float:
    """utime + stime of the process itself (not its children), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class CpuMeter:
    """A cgroup holding containerd and, by inheritance, every shim process."""

    def __init__(self, name: str) -> None:
        self.path: Path | None = None
        self.v2 = False
        for mount in _cgroup_mounts():
            fstype, point, opts = mount
            if fstype == "cgroup" and "cpuacct" in opts:
                self.path = Path(point) / name
                break
        else:
            for fstype, point, _ in _cgroup_mounts():
                if fstype == "cgroup2" and (Path(point) / "cgroup.controllers").exists():
                    self.path, self.v2 = Path(point) / name, True
                    break
        self.containerd = 0

    @property
    def available(self) -> bool:
        return self.path is not None

    def adopt(self, pid: int) -> None:
        self.path.mkdir()
        (self.path / "cgroup.procs").write_text(str(pid))
        self.containerd = pid

    def usage(self) -> float:
        """CPU seconds of everything that ran in the cgroup."""
        if self.v2:
            for line in (self.path / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
            return 0.0
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def shim_seconds(self) -> float:
        return self.usage() - process_cpu(self.containerd)

    def remove(self) -> None:
        if self.path is None or not self.path.exists():
            return
        parent = self.path.parent / "cgroup.procs"
        for attempt in range(50):  # a task that just exited can hold the cgroup busy a moment (EBUSY)
            for pid in (self.path / "cgroup.procs").read_text().split():
                try:
                    parent.write_text(pid)
                except OSError:
                    pass  # exited meanwhile
            try:
                self.path.rmdir()
                return
            except OSError as exc:
                if attempt == 49:
                    print(f"bench: cannot remove {self.path}: {exc}", file=sys.stderr)
                time.sleep(0.1)


def _cgroup_mounts() -> list[tuple[str, str, set[str]]]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        tail = right.split()
        if tail and tail[0] in ("cgroup", "cgroup2"):
            found.append((tail[0], left.split()[4], set(tail[2].split(",")) if len(tail) > 2 else set()))
    return found
