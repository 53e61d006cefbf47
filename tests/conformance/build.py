"""Obtain containerd's ``integration/client`` test suite at one version and build its test binary, cached.

Rules:
- Nothing upstream enters this repository.  Sources are laid out and built under
  CACHE/<version>/ (CACHE = $PYSHIM_CONFORMANCE_CACHE or ~/.cache/pyshim/conformance); the test binary is
  CACHE/<version>/client.test and the helpers the suite runs from PATH (TOOLS: ``runc-fp``, the failpoint
  wrapper of runc that TestIssue9103/TestIssue10589 name as runc's BinaryName) are in CACHE/<version>/bin.
  They are valid while CACHE/<version>/stamp matches the inputs (suite version, source origin, Go version).
  The stamp is written last and a lock serialises builders, so a half-built tree is never used and CI
  rebuilds once per machine.
- The containerd module comes from the Go module proxy (``go mod download``, checked against the checksum
  database) into the pyshim module cache ($PYSHIM_GOMODCACHE, default ~/.cache/pyshim/gomod).
- 2.x: integration/client is a package of the ``containerd/v2`` module and builds in place.
- 1.x: integration/client is a nested module (its go.mod replaces containerd with ``../../`` and, in 1.7,
  containerd/api with ``../../api``, a nested module too).  Module zips leave nested modules out and the
  proxy serves no version of integration/client, so those directories (NESTED) are taken from Debian's
  source package of the same upstream version (the orig tarball, checksum-verified by apt-get
  through a private apt configuration under CACHE/apt; the machine's apt state is untouched).
- Every failure raises ``Unavailable`` with the command and its output tail.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("PYSHIM_CONFORMANCE_CACHE") or Path.home() / ".cache/pyshim/conformance")
GOMODCACHE = Path(os.environ.get("PYSHIM_GOMODCACHE") or Path.home() / ".cache/pyshim/gomod")
GO = shutil.which("go") or "/usr/local/go/bin/go"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = "http://deb.debian.org/debian"
BUILD_TIMEOUT = 3600
# 1.x directories that are Go modules of their own (left out of the containerd module zip) and that
# integration/client's go.mod replaces with in-tree paths: taken from Debian's source when absent.
NESTED = ("integration/client", "api")
TOOLS = {"runc-fp": "integration/failpoint/cmd/runc-fp"}


class Unavailable(Exception):
    """The suite cannot be obtained or built here; the message says why."""


@dataclass(frozen=True)
class Suite:
    version: str               # containerd upstream version, e.g. "1.7.24"
    module: str                # Go module holding integration/client (or its parent, for 1.x)
    debian_suite: str | None   # 1.x: Debian suite whose containerd source carries integration/client

    @property
    def tag(self) -> str:
        return "v" + self.version


SUITES = {
    "1.6.20": Suite("1.6.20", "github.com/containerd/containerd", "bookworm"),
    "1.7.24": Suite("1.7.24", "github.com/containerd/containerd", "trixie"),
    "2.1.9": Suite("2.1.9", "github.com/containerd/containerd/v2", None),
}


def go_env() -> dict[str, str]:
    return dict(os.environ, GOMODCACHE=str(GOMODCACHE), GOFLAGS="-mod=mod", GOTOOLCHAIN="local",
                GO111MODULE="on", GOCACHE=str(CACHE / "gocache"), CGO_ENABLED="1")


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 900) -> str:
    try:
        res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise Unavailable(f"{argv[0]} not found: {exc}") from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{' '.join(argv)}: timed out after {timeout}s") from None
    if res.returncode != 0:
        tail = (res.stderr.strip() or res.stdout.strip())[-3000:]
        raise Unavailable(f"{' '.join(argv)} (in {cwd}): exit {res.returncode}\n{tail}")
    return res.stdout


def go_version() -> str:
    return _run([GO, "env", "GOVERSION"], env=go_env()).strip()


def module_dir(suite: Suite) -> Path:
    """The read-only module directory of ``suite`` in the Go module cache (downloaded if missing)."""
    out = _run([GO, "mod", "download", "-json", f"{suite.module}@{suite.tag}"], env=go_env(), cwd=Path("/"))
    info = json.loads(out)
    if info.get("Error") or not info.get("Dir"):
        raise Unavailable(f"go mod download {suite.module}@{suite.tag}: {info.get('Error')}")
    return Path(info["Dir"])


def _apt_options(base: Path) -> list[str]:
    opts = {
        "Dir::Etc::SourceList": base / "sources.list", "Dir::Etc::SourceParts": "/nonexistent",
        "Dir::State::Lists": base / "lists", "Dir::Cache": base / "cache", "Dir::State::status": "/dev/null",
        "APT::Sandbox::User": "root", "Acquire::Languages": "none",
    }
    return [arg for k, v in opts.items() for arg in ("-o", f"{k}={v}")]


def debian_orig_tarball(suite: Suite, dest: Path) -> Path:
    """Download Debian's orig tarball of containerd ``suite.version`` into ``dest`` (apt verifies it)."""
    base = CACHE / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    suites = sorted({s.debian_suite for s in SUITES.values() if s.debian_suite})
    (base / "sources.list").write_text("".join(f"deb-src [signed-by={KEYRING}] {MIRROR} {s} main\n" for s in suites))
    opts = _apt_options(base)

    def source_version() -> str | None:
        out = subprocess.run(["apt-cache", *opts, "showsrc", "containerd"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Version: ") and line.split()[1].split("~")[0].split("-")[0] == suite.version:
                return line.split()[1]
        return None

    version = source_version()
    if version is None:
        _run(["apt-get", *opts, "update"], timeout=600)
        version = source_version()
    if version is None:
        raise Unavailable(f"Debian {suite.debian_suite} lists no containerd source {suite.version}")
    _run(["apt-get", *opts, "source", "--download-only", "--tar-only", f"containerd={version}"], cwd=dest, timeout=600)
    found = sorted(dest.glob(f"containerd_{suite.version}*.orig.tar.*"))
    if len(found) != 1:
        raise Unavailable(f"apt-get source --tar-only containerd={version} left {sorted(os.listdir(dest))}")
    return found[0]


def _extract_subdir(tarball: Path, subdir: str, dest: Path) -> None:
    """Extract ``<top>/<subdir>/...`` of ``tarball`` into ``dest`` (regular files and directories only)."""
    with tarfile.open(tarball) as tar:
        members = []
        for m in tar.getmembers():
            parts = m.name.split("/", 1)
            if ".." in m.name.split("/"):
                raise Unavailable(f"{tarball.name}: unsafe member {m.name}")
            if len(parts) == 2 and (parts[1] + "/").startswith(subdir + "/") and (m.isfile() or m.isdir()):
                m.name = parts[1][len(subdir):].lstrip("/") or "."
                members.append(m)
        if not any(m.isfile() for m in members):
            raise Unavailable(f"{tarball.name} has no {subdir}/")
        tar.extractall(dest, members=members)  # files and directories only, no ".."


def _lay_out(suite: Suite, src: Path) -> None:
    shutil.copytree(module_dir(suite), src, symlinks=True)
    for root, dirs, files in os.walk(src):  # the module cache is read-only; the build tree must not be
        for name in dirs + files:
            p = Path(root, name)
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)
    src.chmod(0o755)
    client = src / "integration" / "client"
    if suite.debian_suite is None:
        if not (client / "client_test.go").exists():
            raise Unavailable(f"{suite.module}@{suite.tag} has no integration/client")
        return
    missing = [sub for sub in NESTED if not (src / sub).exists()]
    if "integration/client" not in missing:
        raise Unavailable(f"{suite.module}@{suite.tag} unexpectedly contains integration/client")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tarball = debian_orig_tarball(suite, Path(tmp))
        for sub in missing:
            _extract_subdir(tarball, sub, src / sub)
    if not (client / "go.mod").exists():
        raise Unavailable(f"Debian's containerd {suite.version} integration/client has no go.mod")


def stamp_text(suite: Suite) -> str:
    origin = f"{suite.module}@{suite.tag}" + (f" + Debian {suite.debian_suite} source" if suite.debian_suite else "")
    return json.dumps({"suite": origin, "go": go_version(), "tools": sorted(TOOLS)}, sort_keys=True) + "\n"


@dataclass(frozen=True)
class Built:
    binary: Path   # the client suite's test binary
    tools: Path    # directory of the helper binaries it runs from PATH

    @property
    def package_dir(self) -> Path:
        """The suite's source directory: its tests run there, as under `go test` (testdata/)."""
        return self.binary.parent / "src" / "integration" / "client"


def test_binary(version: str) -> Built:
    """The cached test binary and helpers of ``version``, building them first when missing or stale."""
    suite = SUITES.get(version)
    if suite is None:
        raise Unavailable(f"no containerd client suite known for {version}; known: {sorted(SUITES)}")
    vdir = CACHE / version
    binary, stamp, built = vdir / "client.test", vdir / "stamp", Built(vdir / "client.test", vdir / "bin")
    want = stamp_text(suite)
    if binary.exists() and stamp.exists() and stamp.read_text() == want:
        return built
    vdir.mkdir(parents=True, exist_ok=True)
    with open(vdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists() and stamp.exists() and stamp.read_text() == want:
            return built
        stamp.unlink(missing_ok=True)
        src = vdir / "src"
        if src.exists():
            shutil.rmtree(src)
        _lay_out(suite, src)
        _run([GO, "test", "-c", "-o", str(binary) + ".new", "."], cwd=src / "integration" / "client",
             env=go_env(), timeout=BUILD_TIMEOUT)
        os.replace(str(binary) + ".new", binary)
        built.tools.mkdir(exist_ok=True)
        for name, package in TOOLS.items():
            if (src / package).is_dir():
                _run([GO, "build", "-o", str(built.tools / name), "./" + package], cwd=src, env=go_env(),
                     timeout=BUILD_TIMEOUT)
        stamp.write_text(want)
    return built
