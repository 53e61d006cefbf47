"""A third-party backend, installed as its own distribution (tests/plugins/pyshim-envtag, pip-installed into the
test venv by ``install.sh --dev``), is chosen by name from pyshim.toml and runs a real container.

The plugin wraps runc and adds ``PYSHIM_BACKEND=envtag:<tag>`` to the container's environment: the container
itself prints it, so the proof comes from inside the container, through containerd and ctr.
"""
from __future__ import annotations

from importlib import metadata

import pytest

from tests.prereq import unavailable

from .conftest import new_id
from .e2e_helpers import PYSHIM, ctr_bytes

DIST = "pyshim-envtag"


@pytest.fixture(scope="module")
def envtag_installed() -> None:
    try:
        metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        unavailable(f"{DIST} is not installed in this venv (./install.sh --dev, as root, installs tests/plugins/{DIST})")


def test_plugin_backend_runs_a_container(containerd, pyshim_binary, envtag_installed, busybox_rootfs, tmp_path):
    tag = new_id("tag")
    cfg = tmp_path / "plugin.toml"
    cfg.write_text(f'backend = "tagged"\n[backends.tagged]\ntype = "envtag"\ntag = "{tag}"\n')
    res = ctr_bytes(containerd, "run", "--rm", "--runtime", PYSHIM, "--runtime-config-path", str(cfg),
                    "--rootfs", str(busybox_rootfs), new_id("plugin"), "/bin/sh", "-c", "echo $PYSHIM_BACKEND")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"envtag:{tag}\n".encode()


def test_plugin_option_error_names_the_distribution(containerd, pyshim_binary, envtag_installed, busybox_rootfs,
                                                    tmp_path):
    cfg = tmp_path / "bad-plugin.toml"
    cfg.write_text('backend = "tagged"\n[backends.tagged]\ntype = "envtag"\ncolour = "red"\n')
    res = ctr_bytes(containerd, "run", "--rm", "--runtime", PYSHIM, "--runtime-config-path", str(cfg),
                    "--rootfs", str(busybox_rootfs), new_id("badplugin"), "/bin/true")
    err = res.stderr.decode(errors="replace")
    assert res.returncode != 0
    for words in (f"pyshim config {cfg}", "[backends.tagged]", "entry point envtag = pyshim_envtag:factory",
                  f"distribution '{DIST}'", "unknown option 'colour'"):
        assert words in err, err
