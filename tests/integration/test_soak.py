"""The short soak of CI (``tools/soak`` runs the same for minutes): container after container is created, started,
exec'ed into, killed and deleted through each of pyshim's process modes while one long-lived process lives on, and
nothing may grow with the number of containers served nor be left behind (tests/integration/harness/churn.py).

Modes: "ungrouped" (a daemon per container; the fork server lives on), "grouped" (a pod's daemon, by the group
annotation) and "shared" (``sharing = "namespace"``). What is checked, after a warm-up: the long-lived process's
open descriptors and threads are back to exactly their baseline, its resident memory grew by at most RSS_SLACK
over CHURN lifecycles (CPython keeps freed memory in its arenas, so RSS is compared after the warm-up has filled
them; a leak of a few KiB per container would exceed it), and no shim, container process, mount, cgroup, runtime
state, bundle or zombie of a churned container is left. Runs on containerd 1.6.20 and 2.1.9 (the loop is the
shim's, not containerd's).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from shim.forkserver.protocol import DIR_ENV, DEFAULT_DIR

from .conftest import _versions, import_image
from .e2e_helpers import PYSHIM
from .forkserver_helpers import FsDir
from .harness.churn import MODES, Soak

CHURN = 120
RSS_SLACK_KIB = 2048
VERSIONS = [v for v in _versions() if v in ("1.6.20", "2.1.9")]


@pytest.mark.parametrize("containerd_version", VERSIONS, indirect=True, ids=lambda v: f"containerd-{v}")
@pytest.mark.parametrize("mode", MODES)
def test_churn_leaves_nothing_and_grows_nothing(containerd_factory, pyshim_binary, busybox_artifacts, tmp_path,
                                                mode):
    c = containerd_factory(log_level="info")
    ref = import_image(c, busybox_artifacts)
    forkserver = FsDir(Path(os.environ.get(DIR_ENV, DEFAULT_DIR)))
    soak = Soak(c, PYSHIM, ref, mode, tmp_path, forkserver=forkserver)
    soak.run(CHURN)
    before, after = soak.before, soak.after
    assert soak.leaked == [], soak.leaked
    assert soak.churn.done == CHURN
    if mode == "ungrouped" and not soak.watched:
        pytest.fail(f"no fork server in {forkserver.directory} names the anchor's daemon: {forkserver.servers()}")
    assert after["fds"] == before["fds"], (before, after)
    assert after["threads"] == before["threads"], (before, after)
    assert after["rss"] - before["rss"] <= RSS_SLACK_KIB, (before, after)
