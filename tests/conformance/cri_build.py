"""Build containerd's CRI integration test binary and its failpoint helpers at one version, cached.

Rules:
- The source is the containerd Go module at the version's tag (``go mod download``, checked against the checksum
  database, into the pyshim module cache, as build.py does); ``integration/`` (the CRI tests) and
  ``integration/failpoint/cmd`` are packages of that module at 1.6, 1.7 and 2.x alike, so nothing else is needed.
  The module directory is read-only and stays untouched: the go command builds from it with ``-mod=readonly``
  (exactly the versions the release pins) and writes only to CACHE/<version>/cri/.
- Outputs: ``cri-integration.test`` (``go test -c ./integration``), and in ``bin/`` TOOLS: Go's failpoint shim
  ``containerd-shim-runc-fp-v1`` (the reference pyshim is compared with) and ``cni-bridge-fp`` (the failpoint CNI
  plugin; it delegates to a plugin named ``bridge``, which the runner supplies). Valid while ``stamp`` matches
  the inputs (module and tag, Go version, tools); the stamp is written last, under a lock.
- ``tests(built)`` lists the package's top-level tests from its source (the binary's TestMain dials a CRI
  endpoint before it would list anything).
- Every failure raises build.Unavailable with the command and its output tail.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tests.conformance import build

TOOLS = {
    "containerd-shim-runc-fp-v1": "integration/failpoint/cmd/containerd-shim-runc-fp-v1",
    "cni-bridge-fp": "integration/failpoint/cmd/cni-bridge-fp",
}
PACKAGE = "integration"
_TEST_FUNC = re.compile(r"^func (Test\w+)\(t \*testing\.T\)", re.M)


@dataclass(frozen=True)
class Built:
    version: str
    binary: Path        # cri-integration.test
    tools: Path         # directory holding TOOLS
    source: Path        # the module's directory (read-only): the tests run in source/integration

    @property
    def package_dir(self) -> Path:
        return self.source / PACKAGE

    def tool(self, name: str) -> Path:
        return self.tools / name


def go_env() -> dict[str, str]:
    return dict(build.go_env(), GOFLAGS="-mod=readonly")


def stamp_text(suite: build.Suite) -> str:
    return json.dumps({"module": f"{suite.module}@{suite.tag}", "go": build.go_version(), "tools": sorted(TOOLS),
                       "what": "cri-integration"}, sort_keys=True) + "\n"


def test_binary(version: str) -> Built:
    """The cached CRI test binary and tools of ``version``, built first when missing or stale."""
    suite = build.SUITES.get(version)
    if suite is None:
        raise build.Unavailable(f"no containerd source known for {version}; known: {sorted(build.SUITES)}")
    out = build.CACHE / version / "cri"
    source = build.module_dir(suite)
    built = Built(version, out / "cri-integration.test", out / "bin", source)
    want, stamp = stamp_text(suite), out / "stamp"
    if _fresh(built, stamp, want):
        return built
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _fresh(built, stamp, want):
            return built
        stamp.unlink(missing_ok=True)
        if not (built.package_dir / "main_test.go").exists():
            raise build.Unavailable(f"{suite.module}@{suite.tag} has no {PACKAGE}/main_test.go")
        new = str(built.binary) + ".new"
        build._run([build.GO, "test", "-c", "-o", new, "./" + PACKAGE], cwd=source, env=go_env(),
                   timeout=build.BUILD_TIMEOUT)
        os.replace(new, built.binary)
        built.tools.mkdir(exist_ok=True)
        for name, package in TOOLS.items():
            build._run([build.GO, "build", "-o", str(built.tool(name)), "./" + package], cwd=source, env=go_env(),
                       timeout=build.BUILD_TIMEOUT)
        stamp.write_text(want)
    return built


def _fresh(built: Built, stamp: Path, want: str) -> bool:
    return (built.binary.exists() and all(built.tool(n).exists() for n in TOOLS) and stamp.exists()
            and stamp.read_text() == want)


def tests(built: Built) -> set[str]:
    """Top-level test names of the package (Linux and portable files; not ``*_windows_test.go``)."""
    names: set[str] = set()
    for path in built.package_dir.glob("*_test.go"):
        if path.name.endswith(("_windows_test.go", "_darwin_test.go", "_freebsd_test.go")):
            continue
        names.update(_TEST_FUNC.findall(path.read_text(errors="replace")))
    return names
