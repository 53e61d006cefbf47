"""tests/vm/spec.py: cache keys, requirements from pyproject, kernel package and mirror parsing (pure)."""
from __future__ import annotations

import pytest

from tests.vm import spec as S


def _spec(**kw) -> S.ImageSpec:
    base = dict(packages=("containerd", "runc"), kernel_package="linux-image-6.1.0-56-cloud-amd64",
                requirements=("trio>=0.27", "pytest>=8"), inputs_digest="d1")
    return S.ImageSpec(**{**base, **kw})


def test_key_is_stable_and_order_independent():
    a = _spec()
    assert a.key() == _spec().key()
    assert len(a.key()) == 16 and int(a.key(), 16) >= 0
    assert _spec(packages=("runc", "containerd"), requirements=("pytest>=8", "trio>=0.27")).key() == a.key()


@pytest.mark.parametrize("change", [
    dict(packages=("containerd", "runc", "criu")),
    dict(kernel_package="linux-image-6.1.0-57-cloud-amd64"),
    dict(requirements=("trio>=0.28", "pytest>=8")),
    dict(inputs_digest="d2"),
    dict(suite="trixie"),
])
def test_every_input_changes_the_key(change):
    assert _spec(**change).key() != _spec().key()


def test_inputs_digest_depends_on_names_and_contents_not_order():
    a = S.inputs_digest({"build.py": b"x", "guest/vminit": b"y"})
    assert a == S.inputs_digest({"guest/vminit": b"y", "build.py": b"x"})
    assert a != S.inputs_digest({"build.py": b"x", "guest/vminit": b"z"})
    assert a != S.inputs_digest({"build2.py": b"x", "guest/vminit": b"y"})


def test_read_inputs_covers_the_build_script_and_guest_init():
    files = S.read_inputs()
    assert set(files) == set(S.BUILD_INPUTS)
    assert {"build.py", "guest/vminit", "guest/initramfs-init"} <= set(files)
    assert all(files.values())


def test_requirements_are_dependencies_plus_test_extra():
    text = """
[project]
name = "x"
dependencies = ["trio>=0.27,<0.40", "protobuf>=7"]
[project.optional-dependencies]
test = ["pytest>=8"]
dev = ["grpcio-tools==1.85.1"]
"""
    assert S.requirements(text) == ("trio>=0.27,<0.40", "protobuf>=7", "pytest>=8")


def test_project_requirements_include_what_the_guest_needs():
    from pathlib import Path
    reqs = S.requirements((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    names = {r.split(">")[0].split("=")[0].split("<")[0] for r in reqs}
    assert {"trio", "protobuf", "pytest", "pytest-trio"} <= names
    assert "grpcio-tools" not in names  # dev extra: not needed in the guest


def test_kernel_package_from_apt_cache_depends():
    out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n"
    assert S.kernel_package(out) == "linux-image-6.1.0-56-cloud-amd64"
    assert S.kernel_package("linux-image-cloud-amd64\n") is None
    assert S.kernel_release("linux-image-6.1.0-56-cloud-amd64") == "6.1.0-56-cloud-amd64"
    for bad in ("linux-headers-6.1.0-56-cloud-amd64", "linux-image-6.1.0-56-cloud-amd64-unsigned"):
        with pytest.raises(ValueError):
            S.kernel_release(bad)


def test_mirror_from_deb822_and_one_line_sources():
    deb822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
"""
    assert S.mirror([("debian.sources", deb822)]) == "http://mirror.example/debian"
    one = "deb-src http://src.example/debian bookworm main\ndeb [arch=amd64] http://one.example/debian bookworm main\n"
    assert S.mirror([("sources.list", one)]) == "http://one.example/debian"
    other = "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"
    assert S.mirror([("google.list", other)]) == "http://deb.debian.org/debian"
