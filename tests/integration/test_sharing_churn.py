"""Churn through one long-lived daemon, shared (``sharing = "namespace"``) or a pod's (the group annotation):
container after container is created, started, exec'ed into, killed and deleted while the daemon lives on; nothing
it holds may grow with the number of containers it has served.

What is checked (bench/shim_bench.py's churn case runs the same loop 2,000 times and reports the slopes): after a
warm-up, the daemon's open descriptors and threads are back to exactly their baseline once every churned container
is gone, no task or reservation is left in it, and its resident memory grew by at most RSS_SLACK over CHURN
lifecycles (CPython keeps freed memory in its arenas, so RSS is compared after the warm-up has filled them; a
leak of a few KiB per container would exceed it). Runs on containerd 1.6.20 and 2.1.9 (the loop is the daemon's,
not containerd's).
"""
from __future__ import annotations

import pytest

from .conftest import _versions, import_image, new_id
from .e2e_helpers import PYSHIM, cleanup, ctr_bytes, wait_status
from .harness.churn import Churn, footprint
from .test_sharing import daemon_of, write_config

CHURN = 120
WARMUP = 20
RSS_SLACK_KIB = 2048
VERSIONS = [v for v in _versions() if v in ("1.6.20", "2.1.9")]


@pytest.mark.parametrize("containerd_version", VERSIONS, indirect=True, ids=lambda v: f"containerd-{v}")
@pytest.mark.parametrize("mode", ["shared", "grouped"])
def test_a_long_lived_daemon_does_not_grow_with_churn(containerd_factory, pyshim_binary, busybox_artifacts,
                                                      tmp_path, mode):
    c = containerd_factory(log_level="info")
    ref = import_image(c, busybox_artifacts)
    if mode == "shared":
        cfg = write_config(tmp_path / "shared.toml", max_tasks=8, idle=1)  # the anchor keeps it up meanwhile
        flags = ["--runtime-config-path", str(cfg)]
    else:
        flags = ["--annotation", f"io.pyshim.group={new_id('grp')}"]
    anchor = new_id("anchor")  # keeps the daemon alive between the churned containers
    try:
        assert ctr_bytes(c, "run", "-d", "--runtime", PYSHIM, *flags, ref, anchor, "/bin/sleep", "3600"
                         ).returncode == 0
        wait_status(c, anchor, "RUNNING")
        daemon = daemon_of(c, anchor)
        Churn(c, PYSHIM, ref, tuple(flags)).run(WARMUP)
        before = footprint(daemon)
        Churn(c, PYSHIM, ref, tuple(flags)).run(CHURN)
        after = footprint(daemon)
        assert daemon_of(c, anchor) == daemon  # one daemon served them all
        assert after["fds"] == before["fds"], (before, after)
        assert after["threads"] == before["threads"], (before, after)
        assert after["rss"] - before["rss"] <= RSS_SLACK_KIB, (before, after)
    finally:
        cleanup(c, anchor)
