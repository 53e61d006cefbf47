"""Socket address computation (shim/address.py) against Go's filepath.Join + sha256, pyshim's grouping
(shim/runc/manager.py), and the bundle files (shim/bundle.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from shim import address as addr
from shim import bundle
from shim.runc.manager import grouping_id
from shim.stdlib_lite import loads_json

# Computed with Go 1.26 (path/filepath.Join, crypto/sha256), the algorithm of containerd's SocketAddress.
GO_VECTORS = [
    ("/run/containerd/containerd.sock", "default", "redis",
     "f6b99128c07bdbd0902363ba979c22f8ef053e683a7ce24dd016a1ab17092c33"),
    ("/run/containerd/containerd.sock", "k8s.io", "3f2a9c0d1e2b4a5f6e7d8c9b0a1f2e3d4c5b6a7988776655443322110ffeeddc",
     "be1c6cb530a16003aac0f74f68560a8dd1b9a51698b8e76a255b45a46df89cac"),
    ("/tmp/x//ctrd.sock/", "ns", "../grp", "4057737e9534fa2ad8c30d2f55cb8d807602652e6b5b5c4f4b788e97cda5f041"),
    ("", "ns", "g", "702b368e59c6421248517c09ad3955e2a96f452829a282ebcaa5254e21b57094"),
    ("relative/sock", "", "g", "9618a418eb32278e90dc25b5d41f2e5f3af5e0f47d7b77dfa4dbcd704f9b50f1"),
]
# Printed by containerd 1.6.20's own containerd-shim-runc-v2 `start` (-namespace k8s.io -address
# /run/containerd/containerd.sock -id app1, config.json annotation io.kubernetes.cri.sandbox-id=pod-xyz).
RUNC_SHIM_VECTOR = "unix:///run/containerd/s/f1765bfae4419879fa2d8701727821db01f1a1ecf27f3eb6bc9db42b7e30d1d7"
# Go path.Clean outputs, same Go run.
GO_CLEAN = [
    ("", "."), ("/", "/"), ("//a//b/", "/a/b"), ("a/../..", ".."), ("/../x", "/x"), ("./a/./b/..", "a"),
    ("a/b/../../../c", "../c"), ("...", "..."), ("/a/.../b/.", "/a/.../b"), ("//", "/"), ("a//", "a"),
]


@pytest.mark.parametrize("address,namespace,group,digest", GO_VECTORS)
def test_socket_address_matches_go(address: str, namespace: str, group: str, digest: str) -> None:
    assert addr.socket_address(address, namespace, group) == f"unix:///run/containerd/s/{digest}"


def test_socket_address_matches_the_go_runc_shim(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"annotations": {"io.kubernetes.cri.sandbox-id": "pod-xyz"}}))
    group = grouping_id(bundle.read_annotations(str(tmp_path)), "app1")
    assert addr.socket_address("/run/containerd/containerd.sock", "k8s.io", group) == RUNC_SHIM_VECTOR


def test_socket_address_is_sha256_of_the_joined_string() -> None:
    joined = "/run/containerd/containerd.sock/k8s.io/sandbox-1"
    expected = hashlib.sha256(joined.encode()).hexdigest()
    got = addr.socket_address("/run/containerd/containerd.sock", "k8s.io", "sandbox-1", socket_dir="/tmp/s/")
    assert got == f"unix:///tmp/s/{expected}"
    assert len(addr.socket_path(got)) == len("/tmp/s/") + 64


@pytest.mark.parametrize("path,cleaned", GO_CLEAN)
def test_go_clean(path: str, cleaned: str) -> None:
    assert addr.go_clean(path) == cleaned


def test_go_join_drops_empty_elements() -> None:
    assert addr.go_join("", "") == ""
    assert addr.go_join("", "a", "", "b/") == "a/b"


def test_socket_path_refuses_abstract_and_other_schemes() -> None:
    assert addr.socket_path("unix:///run/containerd/s/x") == "/run/containerd/s/x"
    for bad in ("/run/containerd/s/x", "unix://relative", "unix://", "vsock://3:1024", "@abstract"):
        with pytest.raises(ValueError):
            addr.socket_path(bad)
    with pytest.raises(ValueError, match="longer than"):
        addr.socket_path("unix:///" + "x" * 110)


@pytest.mark.parametrize("annotations,expected", [
    ({}, "c1"),
    ({"io.kubernetes.cri.sandbox-id": "pod"}, "pod"),
    ({"io.kubernetes.cri.sandbox-id": "pod", "io.containerd.runc.v2.group": "runc-group"}, "runc-group"),
    ({"io.kubernetes.cri.sandbox-id": "pod", "io.containerd.runc.v2.group": "g", "io.pyshim.group": "mine"},
     "mine"),
    ({"io.pyshim.group": "", "io.kubernetes.cri.sandbox-id": "pod"}, "pod"),
    ({"io.pyshim.group": 7}, "c1"),
])
def test_grouping_id(annotations: dict[str, object], expected: str) -> None:
    assert grouping_id(annotations, "c1") == expected


def test_read_annotations(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "annotations": {"a": "b"}}))
    assert bundle.read_annotations(str(tmp_path)) == {"a": "b"}
    (tmp_path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2"}))
    assert bundle.read_annotations(str(tmp_path)) == {}
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(ValueError):
        bundle.read_annotations(str(tmp_path))
    os.unlink(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError):
        bundle.read_annotations(str(tmp_path))


def test_address_file_is_exact_and_atomic(tmp_path: Path) -> None:
    (tmp_path / ".address").write_text("leftover from a crashed start, longer than the address")
    address = "unix:///run/containerd/s/" + "a" * 64
    bundle.write_address(str(tmp_path), address)
    assert (tmp_path / "address").read_bytes() == address.encode()
    assert not (tmp_path / ".address").exists()
    assert bundle.read_address(str(tmp_path)) == address
    bundle.write_address(str(tmp_path), "unix:///x")
    assert (tmp_path / "address").read_bytes() == b"unix:///x"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@given(json_values, st.sampled_from(["", " ", "\n\t "]))
def test_loads_json_matches_json(value: object, space: str) -> None:
    text = space + json.dumps(value, indent=space and 1) + space
    assert loads_json(text) == json.loads(text)
    assert loads_json(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", ["", "  ", "{not json", '{"a": 1} x', "[1,", '"unterminated', "\ufeff{}", "nul"])
def test_loads_json_rejects_what_json_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads_json(text)


def test_loads_json_constants() -> None:
    assert loads_json("[NaN, Infinity, -Infinity, 1e400]")[1:] == [float("inf"), float("-inf"), float("inf")]
