"""containerd's shim failpoint annotations (``io.containerd.runtime.v2.shim.failpoint.<Method>``) end to end:
real containerd and runc, containers started by ``ctr run --annotation`` (docs/reliability.md, "Failpoints").

What is proven, per containerd version:
- with ``failpoints = true`` in the container's pyshim configuration, each type does what containerd's test
  shim does: ``error(msg)`` fails the call with ``msg`` (code Unknown) and its count runs down across calls,
  ``off`` lets calls through while counting, ``delay(ms)`` holds the call, ``panic(msg)`` kills the daemon
  (containerd sees the shim die, reports the task exited and cleans up; the daemon said ``panic: msg``);
- a malformed failpoint fails the Create, naming the annotation and containerd's parse error;
- without that key the annotations do nothing (off by default);
- run as ``containerd-shim-runc-fp-v1`` (runtime ``io.containerd.runc-fp.v1``, the name containerd's CRI tests
  use) pyshim applies them without any configuration;
- in a daemon shared by unrelated containers (``sharing = "namespace"``), a failpoint (error, delay) of one
  container does not touch the calls of another served by the same daemon; a panic, as in Go, ends the daemon
  and so every task it serves.
"""
from __future__ import annotations

import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from .conftest import PYSHIM_BINARY, import_image, new_id
from .e2e_helpers import PYSHIM, cleanup, finish, start, task_row, wait_status, wait_until
from .harness import procs
from .harness.daemon import PrivateContainerd

PREFIX = "io.containerd.runtime.v2.shim.failpoint."
FP_RUNTIME, FP_BINARY = "io.containerd.runc-fp.v1", "containerd-shim-runc-fp-v1"


@pytest.fixture
def ref(containerd, pyshim_binary, busybox_artifacts) -> str:
    return import_image(containerd, busybox_artifacts)


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "failpoints.toml"
    path.write_text("failpoints = true\n")
    return path


@pytest.fixture
def shared_config(tmp_path) -> Path:
    path = tmp_path / "shared.toml"
    path.write_text('failpoints = true\nsharing = "namespace"\nmax_tasks_per_daemon = 8\nidle_timeout = 2\n')
    return path


def annotations(**failpoints: str) -> list[str]:
    return [arg for method, value in failpoints.items() for arg in ("--annotation", f"{PREFIX}{method}={value}")]


def run(c: PrivateContainerd, ref: str, cid: str, cfg: Path | None, *extra: str, runtime: str = PYSHIM):
    """``ctr run -d`` of a sleeping busybox (not checked: the caller looks at the result)."""
    options = ["--runtime-config-path", str(cfg)] if cfg else []
    return c.ctr("run", "-d", "--runtime", runtime, *options, *extra, ref, cid, "/bin/sleep", "600", check=False)


@contextmanager
def launched(c: PrivateContainerd, ref: str, cfg: Path | None, *extras: list[str], runtime: str = PYSHIM,
             check: bool = True) -> Iterator[list[tuple[str, subprocess.CompletedProcess]]]:
    """One ``run`` per entry of ``extras`` (its ctr arguments), in order; with ``check`` each must succeed and its
    task run. Yields [(container id, ctr's result)]; every container is cleaned up afterwards."""
    made: list[tuple[str, subprocess.CompletedProcess]] = []
    try:
        for extra in extras:
            cid = new_id("fp")
            made.append((cid, run(c, ref, cid, cfg, *extra, runtime=runtime)))
            if check:
                assert made[-1][1].returncode == 0, (cid, made[-1][1].stderr)
                wait_status(c, cid, "RUNNING")
        yield made
    finally:
        cleanup(c, *(cid for cid, _ in made))


def ps(c: PrivateContainerd, cid: str):
    return c.ctr("task", "ps", cid, check=False)


def test_error_fails_the_call_with_its_message_until_its_count_is_used(containerd, ref, config):
    c = containerd
    with launched(c, ref, config, annotations(Pids="2*error(no hard feelings)->1*off->1*error(fourth)")) as [(cid, _)]:
        results = [ps(c, cid) for _ in range(5)]
        assert [r.returncode != 0 for r in results] == [True, True, False, True, False]
        for r in (results[0], results[1]):  # 1.x's ctr names the code (Unknown); 2.x's prints the message only
            assert r.stderr.rstrip().endswith("no hard feelings" + (": unknown" if c.dist.major == 1 else "")), r
        assert "fourth" in results[3].stderr
        assert str(task_row(c, cid).pid) in results[2].stdout


def test_a_start_error_fails_the_run(containerd, ref, config):
    c = containerd
    with launched(c, ref, config, annotations(Start="1*error(please do not start)"), check=False) as [(cid, res)]:
        assert res.returncode != 0 and "please do not start" in res.stderr, res.stderr
        assert task_row(c, cid).status == "CREATED"  # Create went through, Start never ran


def test_delay_holds_the_call(containerd, ref, config):
    c = containerd
    with launched(c, ref, config, annotations(Pids="1*delay(1500)")) as [(cid, _)]:
        t0 = time.monotonic()
        assert ps(c, cid).returncode == 0
        t1 = time.monotonic()
        assert ps(c, cid).returncode == 0
        t2 = time.monotonic()
        assert t1 - t0 >= 1.5 and t2 - t1 < 1.0, (t1 - t0, t2 - t1)


def gone_or_stopped(c: PrivateContainerd, cid: str) -> bool:
    """containerd has cleaned up after a dead shim (1.x drops the task, 2.x may show it STOPPED first)."""
    return getattr(task_row(c, cid), "status", "gone") in ("gone", "STOPPED")


def test_panic_kills_the_daemon_and_containerd_cleans_up(containerd, ref, config):
    c = containerd
    with launched(c, ref, config, annotations(Pids="1*panic(shim goes down)")) as [(cid, _)]:
        shim = c.shim_daemon(cid)
        res = ps(c, cid)
        assert res.returncode != 0, res.stdout
        wait_until("the daemon's exit", lambda: not procs.alive(shim))
        wait_until("containerd to clean up the dead shim's task", lambda: gone_or_stopped(c, cid), timeout=30)
        assert "panic: shim goes down" in c.log_path.read_text(errors="replace")


def test_a_malformed_failpoint_fails_the_create_and_names_it(containerd, ref, config):
    c = containerd
    with launched(c, ref, config, annotations(Start="1*error()"), check=False) as [(cid, res)]:
        assert res.returncode != 0, res.stdout
        assert (f"failed to parse failpoint annotation {PREFIX}Start='1*error()': invalid argument for error type"
                in res.stderr), res.stderr
        assert task_row(c, cid) is None  # nothing was created


def test_annotations_do_nothing_without_the_key(containerd, ref):
    c = containerd
    with launched(c, ref, None, annotations(Start="1*error(ignored)", Pids="1*panic(ignored)")) as [(cid, _)]:
        assert ps(c, cid).returncode == 0


def test_run_as_containerds_failpoint_shim_they_apply_without_configuration(containerd, ref, shim_bin_dir):
    link = shim_bin_dir / FP_BINARY  # the session's shim directory: one more name for the same console script
    if not link.exists():
        link.symlink_to(shim_bin_dir / PYSHIM_BINARY)
    c = containerd
    with launched(c, ref, None, annotations(Pids="1*error(from runc-fp)"), runtime=FP_RUNTIME) as [(cid, _)]:
        assert "from runc-fp" in ps(c, cid).stderr
        assert ps(c, cid).returncode == 0
        assert any(FP_BINARY in " ".join(p.argv) for p in procs.shims_of(c.address) if p.pid == c.shim_daemon(cid))


def test_in_a_shared_daemon_a_failpoint_touches_only_its_own_container(containerd, ref, shared_config):
    c = containerd
    with launched(c, ref, shared_config, annotations(Pids="1*delay(4000)"), annotations(Pids="9*error(mine)"),
                  []) as made:
        (slow, _), (fails, _), (plain, _) = made
        assert c.shim_daemon(slow) == c.shim_daemon(fails) == c.shim_daemon(plain)
        t0 = time.monotonic()
        held = start(c, "task", "ps", slow, text=True)
        for _ in range(3):
            assert "mine" in ps(c, fails).stderr
            assert ps(c, plain).returncode == 0
        assert time.monotonic() - t0 < 4.0  # the others were served while the delayed call waited
        assert finish(held, timeout=30).returncode == 0 and time.monotonic() - t0 >= 4.0


def test_a_panic_in_a_shared_daemon_takes_every_task_of_it_down(containerd, ref, shared_config):
    """As a Go shim's panic ends every task of its group: the daemon is gone, containerd cleans up each."""
    c = containerd
    with launched(c, ref, shared_config, annotations(Pids="1*panic(all of us)"), []) as [(doomed, _), (neighbour, _)]:
        shim = c.shim_daemon(doomed)
        assert c.shim_daemon(neighbour) == shim
        assert ps(c, doomed).returncode != 0
        wait_until("the daemon's exit", lambda: not procs.alive(shim))
        for cid in (doomed, neighbour):
            wait_until(f"containerd to clean up {cid}", lambda: gone_or_stopped(c, cid), timeout=30)
