"""Three Kubernetes runtime handlers, one shim binary: ``pyshim-runc``, ``pyshim-crun`` and ``pyshim-runsc`` are
CRI runtime handlers of type io.containerd.pyshim.v1 whose ``options.ConfigPath`` names a different pyshim.toml;
``pyshim-inline`` carries its pyshim configuration inline in the handler's options table (containerd 1.7+ sends it
as runtimeoptions config_body; 1.6 sends nothing, so that handler falls back to the default backend there).

Proof of the backend, from outside the shim: the pod's container prints ``uname -r`` (gVisor answers with its own
emulated kernel), and while it runs, the backend's state root holds the task (``<root>/k8s.io/<task id>``, or
runsc's ``<id>_sandbox:<sandbox>.state``).
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.backend_limits import BACKENDS, write_backend_configs
from tests.integration.cri_helpers import Pod, cri_registry, serve, wait_for  # noqa: F401
from tests.integration.harness import dist, hostprep
from tests.integration.harness.cri_daemon import CRI_NAMESPACE, CriContainerd

STATE_ROOT = {b: Path(f"/run/containerd/{b}") / CRI_NAMESPACE for b in BACKENDS}
PYSHIM = "io.containerd.pyshim.v1"


@pytest.fixture(scope="module")
def handler_configs(tmp_path_factory: pytest.TempPathFactory, containerd_version: str) -> dict[str, Path]:
    hostprep.crun_cgroups()
    return write_backend_configs(tmp_path_factory.mktemp("handlers"), containerd_version)


@pytest.fixture(scope="module")
def cri3(containerd_dist: dist.Dist, shim_bin_dir: Path, containerd_log_dir: Path, cri_registry,
         handler_configs: dict[str, Path]) -> Iterator[CriContainerd]:
    # "runc" stays: CRI refuses to load without a handler named by its default_runtime_name
    handlers = {"runc": "io.containerd.runc.v2"} | {f"pyshim-{b}": PYSHIM for b in BACKENDS} | {"pyshim-inline": PYSHIM}
    options: dict[str, dict[str, object]] = {f"pyshim-{b}": {"ConfigPath": str(handler_configs[b])} for b in BACKENDS}
    # an inline table (config_body); crun's oci_version as a dotted key, since the handler table is flat here
    options["pyshim-inline"] = {"backend": "crun", "backends.crun.oci_version": "1.1.0"}
    yield from serve(CriContainerd(containerd_dist, registry_url=cri_registry.url, shim_dirs=[shim_bin_dir],
                                   log_dir=containerd_log_dir, handlers=handlers, handler_options=options))


def holds(backend: str, task_id: str) -> bool:
    root = STATE_ROOT[backend]
    return root.is_dir() and any(p.name == task_id or p.name.startswith(f"{task_id}_") for p in root.iterdir())


def run_pod(cri: CriContainerd, handler: str, name: str) -> tuple[str, str, list[str]]:
    """A pod on ``handler`` whose container prints ``uname -r`` then waits; (kernel release, backend seen, ids)."""
    pod = Pod(cri, name, handler)
    try:
        cid = pod.run("uname", ["sh", "-c", "uname -r; until [ -e /go ]; do sleep 0.05; done"])
        lines = wait_for("the container's output", lambda: pod.log("uname") or None)
        seen = [b for b in BACKENDS if holds(b, cid)]
        cri.client.call("ExecSync", container_id=cid, cmd=["touch", "/go"], timeout=20)
        status = pod.wait_exited(cid)
        assert status.exit_code == 0, status
        return lines[0][2], ",".join(seen), [pod.id, cid]
    finally:
        pod.stop_and_remove()


@pytest.mark.parametrize("backend", BACKENDS)
def test_handler_config_path_selects_backend(cri3: CriContainerd, backend: str) -> None:
    release, seen, _ = run_pod(cri3, f"pyshim-{backend}", f"handler-{backend}")
    assert seen == backend
    if backend == "runsc":
        assert release != platform.release() and release.startswith("4."), release
    else:
        assert release == platform.release()


def test_inline_handler_options_reach_the_shim(cri3: CriContainerd) -> None:
    _, seen, _ = run_pod(cri3, "pyshim-inline", "handler-inline")
    # containerd 1.6 has no runtimeoptions config_body: the inline table is not sent, the default backend runs
    assert seen == ("runc" if cri3.dist.version.startswith("1.6.") else "crun")
