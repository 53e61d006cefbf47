"""Tests of the conformance runner's own parts: skip list, result counting, images, the registry proxy.

Rules: no containerd here (tools/run-tests runs the suite itself); the registry test needs openssl, the
image tests the harness's busybox: without them they skip locally and fail under CI (tests/prereq.py).
"""
from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conformance import certs, gotest, images, instance, skiplist
from tests.conformance.registry import Registry
from tests.integration.harness import busybox, dist
from tests.prereq import unavailable


def _events(*rows: tuple[str, str | None, str]) -> list[str]:
    return [json.dumps({"Action": a, "Test": t, "Output": o} if t else {"Action": a, "Output": o})
            for a, t, o in rows]


def test_checked_in_skip_list_loads_and_every_entry_has_a_reason() -> None:
    entries = skiplist.load()
    assert entries and all(len(e.reason) > 40 for e in entries)


def test_skip_pattern_anchors_each_level(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[[skip]]\ntest = "TestA"\nreason = "r"\n[[skip]]\ntest = "TestB/case.1"\nreason = "r"\n'
                 'runtimes = ["x"]\n[[expect_skip]]\ntest = "TestC"\nreason = "r"\n')
    f.write_text(f.read_text() + '[[skip]]\ntest = "TestD"\nreason = "r"\nwhen = "criu-unusable"\n')
    entries, none, criu = skiplist.load(f), frozenset(), frozenset({"criu-unusable"})
    assert skiplist.skip_pattern(skiplist.excluded(entries, "1", "x", none)) == r"^TestA$|^TestB$/^case\.1$"
    assert [e.test for e in skiplist.excluded(entries, "1", "y", none)] == ["TestA"]
    assert [e.test for e in skiplist.excluded(entries, "1", "y", criu)] == ["TestA", "TestD"]
    assert skiplist.expected_skip(entries, "1", "y", none, "TestC/sub") is not None
    assert skiplist.expected_skip(entries, "1", "y", none, "TestCD") is None


BAD_SKIP_LISTS = [
    '[[skip]]\ntest = "T"\nreason = " "\n',                        # empty reason
    '[[skip]]\ntest = "T"\nreason = "r"\nwhy = 1\n',                # unknown key
    '[[nope]]\ntest = "T"\n',                                       # unknown table
    '[[skip]]\ntest = "T"\nreason = "r"\nwhen = "full-moon"\n',     # unknown condition
    '[[skip]]\ntest = "T"\nreason = "r"\n' * 2,                     # duplicate
]


@pytest.mark.parametrize("text", BAD_SKIP_LISTS)
def test_skip_list_errors(tmp_path: Path, text: str) -> None:
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(skiplist.SkipListError):
        skiplist.load(tmp_path / "s.toml")


def test_counts_leaves_unfinished_tests_and_exit_status() -> None:
    r = gotest.RunResult()
    r.feed(_events(("run", "TestA", ""), ("pass", "TestA", ""),
                   ("run", "TestP", ""), ("run", "TestP/one", ""), ("pass", "TestP/one", ""),
                   ("run", "TestP/two", ""), ("output", "TestP/two", "boom\n"), ("fail", "TestP/two", ""),
                   ("fail", "TestP", ""), ("run", "TestS", ""), ("output", "TestS", "    x.go:1: no criu\n"),
                   ("skip", "TestS", ""), ("run", "TestHang", ""), ("output", None, "panic: test timed out\n")))
    r.exit_code = 2
    r.excluded = {"TestX": "reason"}
    assert r.counts() == (2, 2, 2)  # TestA, TestP/one | TestP/two, TestHang | TestS, TestX
    assert [t.name for t in r.failures()] == ["TestHang", "TestP/two"]
    assert "boom" in r.tests["TestP/two"].reason()
    clean = gotest.RunResult()
    clean.feed(_events(("run", "TestA", ""), ("pass", "TestA", "")))
    clean.exit_code = 1  # e.g. TestMain failed after the tests
    assert clean.counts() == (1, 1, 0)


def test_junit_matches_counts(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET
    r = gotest.RunResult(exit_code=1, excluded={"TestX": "why"}, problems=["left behind: shim 42"])
    r.feed(_events(("run", "TestA", ""), ("pass", "TestA", ""), ("run", "TestB", ""), ("fail", "TestB", "")))
    ok = gotest.RunResult(exit_code=0)
    ok.feed(_events(("run", "TestA", ""), ("pass", "TestA", "")))
    gotest.write_junit([("s", r), ("t", ok)], tmp_path / "j.xml")
    suite, other = ET.parse(tmp_path / "j.xml").getroot().findall("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "2", "1")
    assert len(suite.findall("testcase")) == 4
    assert (other.get("name"), other.get("tests"), other.get("failures")) == ("t", "1", "0")


@pytest.fixture(scope="module")
def served() -> list[images.Image]:
    try:
        return images.served(busybox.ensure())
    except (dist.Unavailable, PermissionError) as exc:
        unavailable(f"busybox image: {exc}")


def test_images_are_deterministic_and_complete(served: list[images.Image]) -> None:
    again = images.served(busybox.ensure())
    assert [i.top.digest for i in served] == [i.top.digest for i in again]
    for image in served:
        have = {b.digest for b in image.blobs}
        body = json.loads(image.top.data)
        children = [m for m in body.get("manifests", [])] or [body["config"], *body["layers"]]
        assert {c["digest"] for c in children} <= have, image.repository


def test_busybox_image_has_the_users_the_suite_names(served: list[images.Image]) -> None:
    assert "www-data:x:33:33:" in images.PASSWD and "sys:x:3:3:" in images.PASSWD
    assert "backup:x:34:34:" in images.PASSWD
    refs = {f"{i.repository}:{i.tag}" for i in served}
    assert {"ghcr.io/containerd/busybox:1.36", "registry.k8s.io/pause:3.6", "k8s.gcr.io/pause:3.6"} <= refs


def _opener(reg: Registry) -> urllib.request.OpenerDirector:
    ctx = ssl.create_default_context(cafile=str(reg.certs.ca))
    proxy = urllib.request.ProxyHandler({"https": f"http://{reg.address}"})
    return urllib.request.build_opener(proxy, urllib.request.HTTPSHandler(context=ctx))


def test_registry_answers_through_a_tls_tunnel(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        unavailable("openssl is not installed")
    layer = images.make_layer([images.Entry("hello", data=b"hi\n")])
    image = images.single("ghcr.io/example/one", "v1", [layer], "test")
    with Registry([image], certs.make(tmp_path, ["ghcr.io"])) as reg:
        opener = _opener(reg)
        with opener.open("https://ghcr.io/v2/example/one/manifests/v1", timeout=10) as resp:
            assert resp.headers["Docker-Content-Digest"] == image.top.digest
            assert resp.read() == image.top.data
        head = urllib.request.Request(f"https://ghcr.io/v2/example/one/blobs/{layer.blob.digest}", method="HEAD")
        with opener.open(head, timeout=10) as resp:
            assert int(resp.headers["Content-Length"]) == len(layer.blob.data) and resp.read() == b""
        for url in ("https://ghcr.io/v2/example/two/manifests/v1", "https://ghcr.io/v2/example/one/manifests/v2"):
            with pytest.raises(urllib.error.HTTPError) as err:
                opener.open(url, timeout=10)
            assert err.value.code == 404
        with pytest.raises(urllib.error.URLError):  # a host not served: the CONNECT is refused
            opener.open("https://example.org/v2/", timeout=10)
        assert [r for r in reg.requests if r[0] == "CONNECT" and r[3] == 403], reg.requests


def test_containerd_wrapper_adds_disabled_plugins_to_daemon_starts_only(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "containerd").write_text('#!/bin/sh\necho "$@"\nfor a; do case $a in *.toml) cat "$a";; esac; done\n')
    (real / "containerd").chmod(0o755)
    bindir = instance.bin_dir(tmp_path / "bin", real, tmp_path / "no-shim", sys.executable, tmp_path / "no-tools")
    config = tmp_path / "c.toml"
    config.write_text('version = 2\ndisabled_plugins = [\n  "x.y"]\n[plugins]\n')
    daemon = subprocess.run([str(bindir / "containerd"), "-c", str(config), "--address", "/a"],
                            capture_output=True, text=True, check=True).stdout
    merged = tomllib.loads(daemon.split("\n", 1)[1])
    assert merged["version"] == 2 and merged["disabled_plugins"][0] == "x.y"
    assert set(instance.DISABLED) < set(merged["disabled_plugins"])
    migrate = subprocess.run([str(bindir / "containerd"), "-c", str(config), "config", "migrate"],
                             capture_output=True, text=True, check=True).stdout
    assert migrate.split("\n", 1) == [f"-c {config} config migrate", config.read_text()]
