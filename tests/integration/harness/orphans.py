"""Clean up private containerd instances whose owning test process died (SIGKILL, crash, CI time-out).

Rules:
- An instance is its directories /run/pyshim-test/<unique> and /var/lib/pyshim-test/<unique>, where
  ``unique`` = ``<version digits>-<owner pid>-<hex>`` (daemon.py).  It is an orphan when the owner pid is gone;
  instances of live owners (e.g. a parallel pytest process) are never touched.
- Its containerd pid is read from ``<run dir>/containerd.pid`` and killed only if that process's command line
  still names the instance's own config file.  Everything else goes through ``PrivateContainerd.teardown``,
  which matches shims, container processes and mounts by facts unique to the instance.
"""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from . import procs
from .daemon import LIB_BASE, RUN_BASE, PrivateContainerd
from .dist import Dist

UNIQUE = re.compile(r"^\d+-(\d+)-[0-9a-f]+$")


def orphans() -> list[str]:
    found = set()
    for base in (RUN_BASE, LIB_BASE):
        if not base.is_dir():
            continue
        for entry in os.listdir(base):
            m = UNIQUE.match(entry)
            if m and not procs.alive(int(m.group(1))):
                found.add(entry)
    return sorted(found)


def reap(unique: str) -> list[str]:
    """Kill the orphan's containerd, then tear it down; returns what had been left behind."""
    inst = PrivateContainerd(Dist("orphan", Path("/nonexistent")), unique=unique)
    problems = []
    try:
        pid = int((inst.run_dir / "containerd.pid").read_text())
    except (FileNotFoundError, ValueError):
        pid = None
    if pid is not None:
        cmd = [p for p in procs.all_processes() if p.pid == pid and str(inst.config_path) in p.argv]
        if cmd:
            problems.append(f"containerd {pid} still running")
            os.kill(pid, signal.SIGKILL)
            procs.kill_all(cmd)
    return problems + inst.teardown()


def reap_all() -> dict[str, list[str]]:
    return {unique: reap(unique) for unique in orphans()}
