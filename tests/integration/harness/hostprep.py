"""Host preparation some runtimes need on this kind of machine, done once and reported, never hidden.

Rules:
- crun refuses a *hybrid* cgroup layout (v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified) while
  the cgroup2 hierarchy still holds a controller: it fails every create.  The machine fix is to mount each such
  controller (hugetlb on Debian's kernels) as a v1 hierarchy, which moves it off cgroup2.  ``crun_cgroups``
  does exactly that, only on a hybrid host, and returns what it changed (README "Choosing a backend" says so).
- Pure cgroup v1 or pure v2 hosts are left alone.
- Several test processes may prepare the host at once (tools/run-tests starts version groups in parallel, and
  also prepares the host once before them): the work runs under an exclusive lock on LOCK, and a controller
  that is already mounted where it belongs is success, whoever mounted it.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIFIED = CGROUP_ROOT / "unified"
LOCK = Path("/run/pyshim-test/hostprep.lock")


def is_hybrid() -> bool:
    return (UNIFIED / "cgroup.controllers").exists() and not (CGROUP_ROOT / "cgroup.controllers").exists()


def _mounted(target: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0


def crun_cgroups() -> list[str]:
    """Move every controller off the hybrid cgroup2 mount into its own v1 hierarchy; what was done."""
    if not is_hybrid():
        return []
    LOCK.parent.mkdir(mode=0o755, parents=True, exist_ok=True)  # the tests' shared base, as daemon.py makes it
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process's check-then-mount must not interleave with ours
        return _move_controllers()


def _move_controllers() -> list[str]:
    done = []
    for controller in (UNIFIED / "cgroup.controllers").read_text().split():
        target = CGROUP_ROOT / controller
        os.makedirs(target, exist_ok=True)
        if _mounted(target):
            continue
        res = subprocess.run(["mount", "-t", "cgroup", "-o", controller, "cgroup", str(target)],
                             capture_output=True, text=True)
        if res.returncode != 0 and not _mounted(target):  # mounted meanwhile by a process outside the lock: fine
            raise RuntimeError(f"mount -t cgroup -o {controller} cgroup {target} failed (exit {res.returncode}): "
                               f"{res.stderr.strip()}")
        done.append(f"mounted the {controller} controller as cgroup v1 at {target} (crun refuses hybrid "
                    f"layouts with controllers on cgroup2)")
    left = (UNIFIED / "cgroup.controllers").read_text().split()
    if left:
        raise RuntimeError(f"cgroup2 at {UNIFIED} still has controllers {left}; crun will refuse to run")
    return done
