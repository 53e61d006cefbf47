"""Host preparation some runtimes need on this kind of machine, done once and reported, never hidden.

Rules:
- crun refuses a *hybrid* cgroup layout (v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified) while
  the cgroup2 hierarchy still holds a controller: it fails every create.  The machine fix is to mount each such
  controller (hugetlb on Debian's kernels) as a v1 hierarchy, which moves it off cgroup2.  ``crun_cgroups``
  does exactly that, only on a hybrid host, and returns what it changed (README "Choosing a backend" says so).
- Pure cgroup v1 or pure v2 hosts are left alone.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIFIED = CGROUP_ROOT / "unified"


def is_hybrid() -> bool:
    return (UNIFIED / "cgroup.controllers").exists() and not (CGROUP_ROOT / "cgroup.controllers").exists()


def crun_cgroups() -> list[str]:
    """Move every controller off the hybrid cgroup2 mount into its own v1 hierarchy; what was done."""
    if not is_hybrid():
        return []
    done = []
    for controller in (UNIFIED / "cgroup.controllers").read_text().split():
        target = CGROUP_ROOT / controller
        os.makedirs(target, exist_ok=True)
        if subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0:
            continue
        subprocess.run(["mount", "-t", "cgroup", "-o", controller, "cgroup", str(target)], check=True,
                       capture_output=True)
        done.append(f"mounted the {controller} controller as cgroup v1 at {target} (crun refuses hybrid "
                    f"layouts with controllers on cgroup2)")
    left = (UNIFIED / "cgroup.controllers").read_text().split()
    if left:
        raise RuntimeError(f"cgroup2 at {UNIFIED} still has controllers {left}; crun will refuse to run")
    return done
