"""hostprep.crun_cgroups under concurrency: one mount per controller, an existing mount is success, a real mount
failure is an error with mount's own words (issue 15: parallel version groups raced on a fresh machine)."""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.integration.harness import hostprep


class FakeHost:
    """A hybrid cgroup layout in a temporary directory; ``mount`` moves a controller off the cgroup2 file."""

    def __init__(self, root: Path, fail_with: str = "") -> None:
        self.root, self.fail_with = root, fail_with
        (root / "unified").mkdir(parents=True)
        (root / "unified" / "cgroup.controllers").write_text("hugetlb\n")
        self.mounted: set[str] = set()
        self.mounts = 0
        self.lock = threading.Lock()

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        if argv[0] == "mountpoint":
            return subprocess.CompletedProcess(argv, 0 if argv[-1] in self.mounted else 1)
        assert argv[:3] == ["mount", "-t", "cgroup"], argv
        time.sleep(0.05)  # wide enough for an unlocked second caller to check before this mount lands
        with self.lock:
            self.mounts += 1
            if self.fail_with or argv[-1] in self.mounted:
                return subprocess.CompletedProcess(argv, 32, "", self.fail_with or "already mounted")
            self.mounted.add(argv[-1])
            (self.root / "unified" / "cgroup.controllers").write_text("\n")
        return subprocess.CompletedProcess(argv, 0, "", "")


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    fake = FakeHost(tmp_path / "cgroup")
    monkeypatch.setattr(hostprep, "CGROUP_ROOT", fake.root)
    monkeypatch.setattr(hostprep, "UNIFIED", fake.root / "unified")
    monkeypatch.setattr(hostprep, "LOCK", tmp_path / "lock" / "hostprep.lock")
    monkeypatch.setattr(hostprep.subprocess, "run", fake.run)
    return fake


def test_concurrent_callers_mount_once(host: FakeHost) -> None:
    results: list[object] = []

    def call() -> None:
        try:
            results.append(hostprep.crun_cgroups())
        except Exception as exc:  # noqa: BLE001 - the assertion below names it
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert host.mounts == 1
    assert sorted(len(r) for r in results) == [0, 0, 0, 1], results  # one caller did it, three found it done


def test_already_mounted_is_success(host: FakeHost) -> None:
    host.mounted.add(str(host.root / "hugetlb"))
    (host.root / "unified" / "cgroup.controllers").write_text("\n")
    assert hostprep.crun_cgroups() == [] and host.mounts == 0


def test_mount_failure_names_mounts_words(host: FakeHost) -> None:
    host.fail_with = "mount: permission denied"
    with pytest.raises(RuntimeError, match="exit 32.*permission denied"):
        hostprep.crun_cgroups()
