"""Where a container's cgroup files are, on a cgroup v1 (legacy or hybrid) host and on a pure cgroup v2 host.

Rules: the cgroup is found from ``/proc/<pid>/cgroup`` of a process in it (the init), never from a naming
convention; on v1 the per-controller line counts (``N:memory:/ns/id``), on pure v2 the ``0::/ns/id`` line.
Reads are plain text; a missing file raises (the test then fails, it does not guess).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def unified() -> bool:
    """True on a pure cgroup v2 host (the VM), False on v1 legacy/hybrid (this machine)."""
    return (ROOT / "cgroup.controllers").exists()


@dataclass(frozen=True)
class Cgroup:
    """The cgroup directories of one process, resolved once (they outlive the process until runtime delete)."""

    lines: tuple[str, ...]

    @classmethod
    def of(cls, pid: int) -> "Cgroup":
        return cls(tuple(Path(f"/proc/{pid}/cgroup").read_text().splitlines()))

    def dir(self, controller: str) -> Path:
        for line in self.lines:
            hid, controllers, path = line.split(":", 2)
            if unified() and hid == "0":
                return ROOT / path.lstrip("/")
            if controller in controllers.split(","):
                return ROOT / controllers / path.lstrip("/")
        raise AssertionError(f"no {controller} cgroup in {self.lines}")

    def read(self, controller: str, name: str) -> str:
        return (self.dir(controller) / name).read_text().strip()

    def frozen(self) -> bool:
        if unified():
            return self.read("freezer", "cgroup.freeze") == "1"
        return self.read("freezer", "freezer.state") == "FROZEN"

    def memory_limit(self) -> int:
        if unified():
            text = self.read("memory", "memory.max")
            return -1 if text == "max" else int(text)
        return int(self.read("memory", "memory.limit_in_bytes"))

    def cpu_quota(self) -> tuple[int, int]:
        """(quota, period) in microseconds; quota -1 means unlimited."""
        if unified():
            quota, period = self.read("cpu", "cpu.max").split()
            return (-1 if quota == "max" else int(quota)), int(period)
        return int(self.read("cpu", "cpu.cfs_quota_us")), int(self.read("cpu", "cpu.cfs_period_us"))

    def pids_limit(self) -> int:
        text = self.read("pids", "pids.max")
        return -1 if text == "max" else int(text)
