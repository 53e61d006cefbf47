"""A Kill's reply must reach containerd before the exit it causes: StopPodSandbox with a slow ``runc kill``.

containerd (1.7 and 2.x CRI) answers a task's exit, seen through Wait, with Delete, Shutdown and closing
that shim connection. If the shim lets Wait return while the Kill that caused the exit is still running,
the Kill fails with "ttrpc: closed" and so does StopPodSandbox. The Go runc shim holds the process lock
across ``runc kill``, and pyshim holds ``lifecycle`` (shim/runc/task/container.py), so the exit waits for the reply.

Rules:
- The window is widened on purpose: a ``runc`` wrapper placed first on containerd's PATH delivers the
  signal of each container's *first* kill at once but returns 2 s later; every other runc call is passed
  straight through. Both handlers use it: runc.v2 is the reference that must pass too.
- Everything else is the CRI harness (cri_helpers.serve): private containerd, nothing left behind.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.cri_helpers import Pod, cri_registry, serve  # noqa: F401
from tests.integration.harness import dist
from tests.integration.harness.cri_daemon import HANDLERS, CriContainerd
from tests.prereq import unavailable

SLOW_RUNC = """#!/bin/sh
# test wrapper (tests/integration/test_cri_kill_reply.py): the first `runc kill` of a container returns
# {delay} s after runc did its work; everything else execs the real runc.
for a in "$@"; do
  if [ "$a" = kill ]; then
    id=$(echo "$@" | awk '{{print $(NF-1)}}')
    if mkdir "{marks}/$id" 2>/dev/null; then {runc} "$@"; rc=$?; sleep {delay}; exit $rc; fi
    break
  fi
done
exec {runc} "$@"
"""


@pytest.fixture(scope="module")
def slow_kill_cri(containerd_dist: dist.Dist, shim_bin_dir: Path, containerd_log_dir: Path, cri_registry,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[CriContainerd]:
    runc = shutil.which("runc")
    if runc is None:
        unavailable("runc is not installed")
    bindir = tmp_path_factory.mktemp("slow-runc")
    marks = tmp_path_factory.mktemp("kill-marks")
    (bindir / "runc").write_text(SLOW_RUNC.format(delay=2, marks=marks, runc=runc))
    (bindir / "runc").chmod(0o755)
    yield from serve(CriContainerd(containerd_dist, registry_url=cri_registry.url,
                                   shim_dirs=[bindir, shim_bin_dir], log_dir=containerd_log_dir,
                                   log_level="info"))


@pytest.mark.parametrize("handler", list(HANDLERS))
def test_stop_pod_with_slow_kill(slow_kill_cri: CriContainerd, handler: str) -> None:
    pod = Pod(slow_kill_cri, f"slowkill-{handler}", handler)
    try:
        pod.run("main", ["sleep", "1000"])
    finally:
        # StopPodSandbox kills the container, then the sandbox: each first kill replies 2 s late.
        pod.stop_and_remove()
    status = slow_kill_cri.client.call("ListPodSandbox")
    assert [p.id for p in status.items] == []
