"""Tests of the CRI failpoint runner's own parts (cri_build.py, cri_failpoints.py): no containerd, no Go build here
(tools/run-tests runs the runner itself)."""
from __future__ import annotations

import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from tests.conformance import cri_build, cri_failpoints
from tests.integration.harness.dist import Dist


def built(tmp_path: Path) -> cri_build.Built:
    return cri_build.Built("2.1.9", tmp_path / "cri-integration.test", tmp_path / "bin", tmp_path / "src")


def test_tests_are_listed_from_the_package_source(tmp_path: Path) -> None:
    b = built(tmp_path)
    b.package_dir.mkdir(parents=True)
    (b.package_dir / "a_test.go").write_text("package integration\n\nfunc TestA(t *testing.T) {\n}\n"
                                             "func helper(t *testing.T) {}\nfunc TestB(t *testing.T) {}\n")
    (b.package_dir / "b_linux_test.go").write_text("func TestLinux(t *testing.T) {}\n")
    (b.package_dir / "c_windows_test.go").write_text("func TestWindows(t *testing.T) {}\n")
    (b.package_dir / "main.go").write_text("func TestNotATestFile(t *testing.T) {}\n")
    assert cri_build.tests(b) == {"TestA", "TestB", "TestLinux"}


@pytest.mark.parametrize("version, section", [
    ("1.7.24", 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes'),
    ("2.1.9", 'plugins."io.containerd.cri.v1.runtime".containerd.runtimes'),
])
def test_the_runc_fp_handler_is_configured_as_upstreams_ci_does(tmp_path: Path, version: str, section: str) -> None:
    inst = cri_failpoints.FailpointCri(Dist(version, tmp_path), built(tmp_path), registry_url="http://127.0.0.1:1",
                                       shim_dir=tmp_path, log_dir=tmp_path)
    config = tomllib.loads(inst.config_text())
    table = config
    for key in _keys(section):
        table = table[key]
    fp = table["runc-fp"]
    assert fp["runtime_type"] == "io.containerd.runc-fp.v1"
    assert fp["pod_annotations"] == ["io.containerd.runtime.v2.shim.failpoint.*"]
    assert fp["cni_max_conf_num"] == 1 and fp["cni_conf_dir"] == str(inst.run_dir / "cni" / "failpoint.d")
    assert table["pyshim"]["runtime_type"] == "io.containerd.pyshim.v1"
    assert "pod_annotations" not in table["pyshim"]


def _keys(section: str) -> list[str]:
    """The keys of a dotted TOML table name, quotes honoured."""
    doc: dict = tomllib.loads(f"[{section}]")
    keys = []
    while doc:
        key = next(iter(doc))
        keys.append(key)
        doc = doc[key]
    return keys


def test_containerd_runs_under_a_name_no_other_process_has(tmp_path: Path) -> None:
    """The tests pkill -x / pidof it by name: short enough for comm (15 characters), unique per instance."""
    make = lambda: cri_failpoints.FailpointCri(Dist("2.1.9", tmp_path), built(tmp_path),  # noqa: E731
                                               registry_url="http://127.0.0.1:1", shim_dir=tmp_path, log_dir=tmp_path)
    a, b = make(), make()
    assert a.name != b.name and a.name != "containerd"
    assert len(a.name) <= 15 and a.name.startswith("cfp-")


def test_the_shim_directory_links_the_shim_under_test(tmp_path: Path) -> None:
    console = Path(sys.executable).parent / cri_failpoints.PYSHIM_BINARY
    if not console.exists():
        pytest.skip(f"{console} not installed")
    b = built(tmp_path)
    py = cri_failpoints.shim_dir(tmp_path / "py", "pyshim", b)
    go = cri_failpoints.shim_dir(tmp_path / "go", "go", b)
    assert (py / cri_failpoints.FP_BINARY).readlink() == console
    assert (go / cri_failpoints.FP_BINARY).readlink() == b.tool(cri_failpoints.FP_BINARY)
    assert (go / cri_failpoints.PYSHIM_BINARY).readlink() == console  # the default handler's shim, both runs


class FakeInstance:
    """pid None while 'dead'; start() brings it back (counted)."""

    def __init__(self) -> None:
        self.pid: int | None = 1
        self.starts = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            self.starts += 1
            self.pid = 1


def test_keepalive_starts_containerd_again_each_time_it_is_gone(monkeypatch) -> None:
    monkeypatch.setattr(cri_failpoints, "RESTART_WAIT", 0.01)
    inst = FakeInstance()
    with cri_failpoints.KeepAlive(inst) as keep:  # type: ignore[arg-type]
        for expected in (1, 2):
            inst.pid = None  # the test killed it
            deadline = time.monotonic() + 10
            while inst.starts < expected and time.monotonic() < deadline:
                time.sleep(0.01)
            assert inst.starts == expected
    assert keep.restarts == 2 and keep.errors == []
    inst.pid = None
    time.sleep(0.3)
    assert inst.starts == 2  # stopped: no restart after the run


def test_every_failpoint_test_is_known_and_expected_skips_are_among_them() -> None:
    assert len(set(cri_failpoints.FAILPOINT_TESTS)) == len(cri_failpoints.FAILPOINT_TESTS)
    assert set(cri_failpoints.EXPECTED_SKIPS) <= set(cri_failpoints.FAILPOINT_TESTS)
