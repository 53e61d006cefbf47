"""Facts of the test VM, checked inside it (collected only when named on the command line: the file name does
not match ``test_*.py``, so a host run of ``pytest tests`` never picks it up).  tools/vm-test's default
selection includes it; PYSHIM_IN_VM=1 is set by tests/vm/guest_run.py.

Rules: each check reads the live system (mounts, cgroup files, the binaries) and fails with what it saw.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path("/sys/fs/cgroup")


@pytest.fixture(autouse=True)
def in_vm() -> None:
    if os.environ.get("PYSHIM_IN_VM") != "1":
        pytest.fail("tests/vm/guest_checks.py runs inside the test VM only (tools/vm-test)", pytrace=False)


def test_pure_cgroup2():
    fstype = subprocess.run(["stat", "-fc", "%T", str(ROOT)], capture_output=True, text=True, check=True).stdout
    assert fstype.strip() == "cgroup2fs"
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    assert [m[1] for m in mounts if m[2] == "cgroup"] == []
    assert [m[1] for m in mounts if m[2] == "cgroup2"] == [str(ROOT)]
    assert Path("/proc/self/cgroup").read_text().startswith("0::/")
    assert len(Path("/proc/self/cgroup").read_text().splitlines()) == 1


def test_controllers_delegated_like_systemd():
    wanted = {"cpuset", "cpu", "io", "memory", "pids"}
    assert wanted <= set((ROOT / "cgroup.controllers").read_text().split())
    assert wanted <= set((ROOT / "cgroup.subtree_control").read_text().split())
    # the test run lives in a service cgroup, not the root (whose rules differ: no limits, no memory.events)
    assert Path("/proc/self/cgroup").read_text().strip() == "0::/system.slice/pyshim-vmtest.service"


def test_criu_check_passes():
    res = subprocess.run(["criu", "check"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Looks good." in res.stdout + res.stderr


def test_guest_software():
    out = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=True).stdout
    assert " 1.6.20" in out, out  # Debian bookworm's containerd package
    assert "overlay" in Path("/proc/filesystems").read_text()  # the overlayfs snapshotter's filesystem
