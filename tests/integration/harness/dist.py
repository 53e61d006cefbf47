"""Obtain containerd binaries of the versions the integration tests run against.

Rules:
- 1.6.20 is Debian bookworm's ``containerd`` package, installed system-wide by install.sh (/usr/bin).
- 1.7.24 (trixie) and 2.1.9 (sid) are downloaded from Debian's archive with a *private* apt configuration
  (own sources list, lists and cache under CACHE/apt) so the machine's apt state is never touched, then
  unpacked with ``dpkg -x`` into CACHE/containerd/<version>/.  Nothing is ever committed to the repository.
- 2.2.9 and 2.4.2 (the newest 2.2.x and 2.3+ releases on the Go module proxy; Debian has neither) are built
  from the Go module github.com/containerd/containerd/v2 by gobuild.py into CACHE/containerd/<version>/root/usr/bin,
  the same layout as an unpacked Debian package, so the rest of the harness treats every version alike.
  A cold build takes minutes (see gobuild.py); it happens once per machine.
- The cache is reused across runs; ``apt-get update`` runs only when the wanted version is not in the
  private lists.  A ``complete`` marker written last makes a half-finished unpack invisible, and a lock
  file serialises concurrent fetchers (parallel pytest processes).
- ``locate`` never uses the network; ``fetch`` may.  Both raise ``Unavailable`` with a reason a person
  can act on.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import gobuild

VERSIONS = ("1.6.20", "1.7.24", "2.1.9", "2.2.9", "2.4.2")
CACHE = Path(os.environ.get("PYSHIM_CACHE", "/var/cache/pyshim"))
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = "http://deb.debian.org/debian"
# Versions fetched from the archive, and the suite that carries them.
ARCHIVE_SUITES = {"1.7.24": "trixie", "2.1.9": "sid"}
# Versions built from the Go module (harness/gobuild.py).
GO_MODULE_VERSIONS = ("2.2.9", "2.4.2")
SYSTEM_VERSION = "1.6.20"
SYSTEM_BINDIR = Path("/usr/bin")
BINARIES = ("containerd", "ctr", "containerd-shim-runc-v2")


class Unavailable(Exception):
    """The requested containerd version cannot be used here; the message says why and what to do."""


@dataclass(frozen=True)
class Dist:
    """One containerd version's binaries (containerd, ctr, the runc shim) in one directory."""

    version: str
    bindir: Path

    @property
    def containerd(self) -> Path:
        return self.bindir / "containerd"

    @property
    def ctr(self) -> Path:
        return self.bindir / "ctr"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def config_version(self) -> int:
        """Config schema: containerd 2.x reads ``version = 3``, 1.x ``version = 2``."""
        return 3 if self.major >= 2 else 2


def reported_version(containerd: Path) -> str:
    """The upstream version ``containerd --version`` reports (e.g. ``1.6.20``)."""
    out = subprocess.run([str(containerd), "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"\s(?:v)?(\d+\.\d+\.\d+)", out.stdout)
    if out.returncode != 0 or not m:
        raise Unavailable(f"{containerd} --version failed: {out.stdout.strip()} {out.stderr.strip()}")
    return m.group(1)


def _check_dist(version: str, bindir: Path) -> Dist:
    missing = [b for b in BINARIES if not os.access(bindir / b, os.X_OK)]
    if missing:
        raise Unavailable(f"containerd {version}: {', '.join(missing)} missing in {bindir}")
    found = reported_version(bindir / "containerd")
    if found != version:
        raise Unavailable(f"containerd {version}: {bindir}/containerd reports {found}")
    return Dist(version, bindir)


def version_dir(version: str) -> Path:
    return CACHE / "containerd" / version


def locate(version: str) -> Dist:
    """Find an already available ``version`` without using the network."""
    if version == SYSTEM_VERSION:
        try:
            return _check_dist(version, SYSTEM_BINDIR)
        except Unavailable as exc:
            raise Unavailable(f"{exc} (install Debian bookworm's containerd package: ./install.sh, as root)") from None
    if version not in ARCHIVE_SUITES and version not in GO_MODULE_VERSIONS:
        raise Unavailable(f"containerd {version} is not one of the supported versions {VERSIONS}")
    vdir = version_dir(version)
    if not (vdir / "complete").exists():
        raise Unavailable(f"containerd {version} is not in the cache {vdir} (run tools/fetch_containerd.py)")
    return _check_dist(version, vdir / "root" / "usr" / "bin")


def fetch(version: str) -> Dist:
    """Return ``version``, downloading and unpacking it into the cache first if needed."""
    try:
        return locate(version)
    except Unavailable:
        if version not in ARCHIVE_SUITES and version not in GO_MODULE_VERSIONS:
            raise
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return locate(version)  # another process may have finished it meanwhile
        except Unavailable:
            pass
        if version in GO_MODULE_VERSIONS:
            _build_from_module(version)
        else:
            _download_and_unpack(version)
        return locate(version)


def provenance(version: str) -> str:
    """Where a cached version came from (the ``complete`` marker), or where the system one is."""
    if version == SYSTEM_VERSION:
        return f"Debian bookworm package in {SYSTEM_BINDIR}"
    marker = version_dir(version) / "complete"
    return marker.read_text().strip() if marker.exists() else "not cached"


def _build_from_module(version: str) -> None:
    vdir = version_dir(version)
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "complete").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=vdir) as tmp:
        bindir = Path(tmp) / "root" / "usr" / "bin"
        try:
            built = gobuild.build(version, bindir)
        except gobuild.BuildError as exc:
            raise Unavailable(f"containerd {version}: {exc}") from None
        if (vdir / "root").exists():
            shutil.rmtree(vdir / "root")
        (Path(tmp) / "root").rename(vdir / "root")
    (vdir / "complete").write_text(f"built from Go module {built.module} with {built.go_version} "
                                   f"in {built.seconds:.0f} s\n")


class _PrivateApt:
    """apt-get/apt-cache with their own sources, lists and cache, leaving the system's apt state alone."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.sources = base / "sources.list"
        for sub in ("lists/partial", "cache/archives/partial"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        lines = [f"deb [signed-by={KEYRING}] {MIRROR} {suite} main" for suite in sorted(set(ARCHIVE_SUITES.values()))]
        text = "\n".join(lines) + "\n"
        if not self.sources.exists() or self.sources.read_text() != text:
            self.sources.write_text(text)

    def options(self) -> list[str]:
        opts = {
            "Dir::Etc::SourceList": self.sources,
            "Dir::Etc::SourceParts": "/nonexistent",
            "Dir::State::Lists": self.base / "lists",
            "Dir::Cache": self.base / "cache",
            "Dir::State::status": "/dev/null",
            "APT::Sandbox::User": "root",
            "Acquire::Languages": "none",
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled": "false",
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled": "false",
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled": "false",
        }
        return [arg for k, v in opts.items() for arg in ("-o", f"{k}={v}")]

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        cmd = [tool, *self.options(), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
        if res.returncode != 0:
            raise Unavailable(f"{' '.join([tool, *args])} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        return res.stdout

    def debian_version(self, package: str, upstream: str) -> str | None:
        """The archive's version string of ``package`` whose upstream part is ``upstream``, if listed."""
        out = self.run("apt-cache", "madison", package)
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 2 and parts[0] == package:
                m = re.match(r"^(?:\d+:)?(\d+\.\d+\.\d+)(?:[~+-]|$)", parts[1])
                if m and m.group(1) == upstream:
                    return parts[1]
        return None


def _download_and_unpack(version: str) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise Unavailable("apt-get and dpkg are needed to fetch containerd from Debian's archive")
    apt = _PrivateApt(CACHE / "apt")
    debver = apt.debian_version("containerd", version)
    if debver is None:
        apt.run("apt-get", "update")
        debver = apt.debian_version("containerd", version)
    if debver is None:
        suite = ARCHIVE_SUITES[version]
        raise Unavailable(f"Debian {suite} no longer lists containerd {version} (apt-cache madison containerd)")
    vdir = version_dir(version)
    vdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=vdir) as tmp:
        tmpdir = Path(tmp)
        apt.run("apt-get", "download", f"containerd={debver}", cwd=tmpdir)
        debs = list(tmpdir.glob("containerd_*.deb"))
        if len(debs) != 1:
            raise Unavailable(f"apt-get download containerd={debver} produced {debs}")
        unpacked = tmpdir / "root"
        (vdir / "complete").unlink(missing_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True, timeout=300)
        if (vdir / "root").exists():
            shutil.rmtree(vdir / "root")
        unpacked.rename(vdir / "root")
        (vdir / "debian-version").write_text(debver + "\n")
    (vdir / "complete").write_text(debver + "\n")
