"""Choosing the runtime backend by configuration, through a real containerd, ctr and runc/crun/runsc.

Rules: every container here runs with ``--runtime io.containerd.pyshim.v1``; which backend actually created it is
proven from outside the shim: the backend's own state directory (``<root>/<namespace>/<id>``) exists while the
container runs, and gVisor shows its emulated kernel in ``uname -r``.  Configuration reaches the shim as a real
user's would: ``ctr run --runtime-config-path`` (runtimeoptions config_path), the default file named by
$PYSHIM_CONFIG in containerd's environment, and the ``io.pyshim.backend`` annotation (``ctr run --annotation``).
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from .conftest import new_id
from .e2e_helpers import PYSHIM, cleanup, ctr_bytes, running, wait_status
from .backend_limits import BACKENDS, pyshim_toml, write_backend_configs
from .harness import hostprep

STATE_ROOT = {"runc": "/run/containerd/runc", "crun": "/run/containerd/crun", "runsc": "/run/containerd/runsc"}


@pytest.fixture(scope="module")
def crun_host() -> list[str]:
    return hostprep.crun_cgroups()


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory, crun_host, containerd_version: str) -> dict[str, Path]:
    """One pyshim.toml per backend, as an operator writes them for three runtime handlers."""
    return write_backend_configs(tmp_path_factory.mktemp("pyshim-config"), containerd_version)


def state_entries(backend: str, namespace: str, cid: str) -> list[str]:
    """Names in the backend's state root for ``cid`` (runsc also keeps ``<id>_sandbox:<id>.state`` files)."""
    root = Path(STATE_ROOT[backend]) / namespace
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name == cid or p.name.startswith(f"{cid}_"))


def run_out(c, *args: str) -> tuple[int, str, str]:
    res = ctr_bytes(c, "run", "--rm", "--runtime", PYSHIM, *args)
    return res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")


@pytest.mark.parametrize("backend", BACKENDS)
def test_runtime_config_path_selects_backend(containerd, pyshim_binary, busybox_rootfs, configs, backend):
    cid = new_id(backend)
    with running(containerd, PYSHIM, cid, busybox_rootfs, "/bin/sleep", "600",
                 extra=("--runtime-config-path", str(configs[backend]))):
        for other in BACKENDS:
            found = state_entries(other, containerd.namespace, cid)
            assert bool(found) == (other == backend), f"{other} state for {cid}: {found}"
    code, out, err = run_out(containerd, "--runtime-config-path", str(configs[backend]),
                             "--rootfs", str(busybox_rootfs), new_id("uname"), "/bin/uname", "-r")
    assert code == 0, err
    if backend == "runsc":
        assert out.strip() != platform.release() and out.strip().startswith("4."), out  # gVisor's kernel
    else:
        assert out.strip() == platform.release()


def test_default_file_from_environment(containerd_factory, pyshim_binary, busybox_rootfs, configs, monkeypatch):
    monkeypatch.setenv("PYSHIM_CONFIG", str(configs["crun"]))
    c = containerd_factory()           # containerd (and so every shim it starts) inherits $PYSHIM_CONFIG
    cid = new_id("env")
    with running(c, PYSHIM, cid, busybox_rootfs, "/bin/sleep", "600"):
        assert state_entries("crun", c.namespace, cid) and not state_entries("runc", c.namespace, cid)


def test_annotation_within_allowed_backends(containerd, pyshim_binary, busybox_rootfs, tmp_path, crun_host):
    cfg = tmp_path / "allow.toml"
    cfg.write_text('backend = "runc"\nallowed_backends = ["crun"]\n' + pyshim_toml("crun", containerd.dist.version)
                   .split("\n", 1)[1])
    cid = new_id("anno")
    with running(containerd, PYSHIM, cid, busybox_rootfs, "/bin/sleep", "600",
                 extra=("--runtime-config-path", str(cfg), "--annotation", "io.pyshim.backend=crun")):
        assert state_entries("crun", containerd.namespace, cid)
    code, out, err = run_out(containerd, "--runtime-config-path", str(cfg), "--annotation",
                             "io.pyshim.backend=runsc", "--rootfs", str(busybox_rootfs), new_id("deny"), "/bin/true")
    assert code != 0
    assert "io.pyshim.backend='runsc' is not allowed" in err and str(cfg) in err and "allowed: crun" in err, err


@pytest.mark.parametrize("text, words", [
    ('backend = "nosuch"\n', ["no runtime backend named 'nosuch'"]),
    ('[backends.runc]\nsytemd_cgroup = true\n', ["[backends.runc]", "unknown option 'sytemd_cgroup'"]),
    ('backend = "runc\n', ["invalid TOML"]),
    ('[backends.runc]\nbinary_name = "/nonexistent/runc"\n', ["/nonexistent/runc is not an executable file"]),
], ids=["unknown-backend", "unknown-key", "invalid-toml", "missing-binary"])
def test_bad_config_fails_create_and_spares_the_group(containerd, pyshim_binary, busybox_rootfs, tmp_path,
                                                      text, words):
    """Two containers in one grouped shim: the second's broken config fails its Create with a message naming
    the file and key; the first keeps running and is still fully manageable."""
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    group = ("--annotation", f"io.pyshim.group={new_id('grp')}")
    good = new_id("good")
    with running(containerd, PYSHIM, good, busybox_rootfs, "/bin/sleep", "600", extra=group):
        broken = new_id("bad")
        try:
            res = ctr_bytes(containerd, "run", "-d", "--runtime", PYSHIM, *group, "--runtime-config-path", str(bad),
                            "--rootfs", str(busybox_rootfs), broken, "/bin/true")
            err = res.stderr.decode(errors="replace")
            assert res.returncode != 0, err
            assert f"pyshim config {bad}" in err, err
            for w in words:
                assert w in err, err
        finally:
            cleanup(containerd, broken)
        wait_status(containerd, good, "RUNNING")
        res = ctr_bytes(containerd, "task", "exec", "--exec-id", "e1", good, "/bin/echo", "still here")
        assert res.returncode == 0 and res.stdout == b"still here\n", res
    assert not state_entries("runc", containerd.namespace, good)


def test_missing_config_path(containerd, pyshim_binary, busybox_rootfs, tmp_path):
    absent = tmp_path / "absent.toml"
    code, _, err = run_out(containerd, "--runtime-config-path", str(absent), "--rootfs", str(busybox_rootfs),
                           new_id("absent"), "/bin/true")
    assert code != 0 and f"pyshim config {absent}: no such file" in err, err
    assert os.path.exists(STATE_ROOT["runc"])  # sanity: the machine still has runc's root


def test_session_backend_in_effect(containerd, pyshim_binary, busybox_rootfs, e2e_backend):
    """The backend this session's scenarios run on (PYSHIM_E2E_BACKEND, default runc) is the one creating them."""
    cid = new_id("session")
    with running(containerd, PYSHIM, cid, busybox_rootfs, "/bin/sleep", "600"):
        for backend in BACKENDS:
            assert bool(state_entries(backend, containerd.namespace, cid)) == (backend == e2e_backend), backend
