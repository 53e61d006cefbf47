"""Build containerd releases that Debian does not package from Go modules (used by dist.py).

Rules:
- The source is the Go module ``github.com/containerd/containerd/v2@v<version>``, downloaded by the go command
  from the Go module proxy into a module cache outside the tree ($PYSHIM_GOMODCACHE, default
  ~/.cache/pyshim/gomod, shared with tools/upstream_protos.py).  Compiled objects are kept in $PYSHIM_GOCACHE
  (default ~/.cache/pyshim/go-build).  Nothing is ever written into the repository or the module cache.
- One ``go build`` makes ``containerd``, ``ctr`` and ``containerd-shim-runc-v2`` (the same binaries the Debian
  package ships) with ``CGO_ENABLED=0``: no C headers needed, and the cgo-only btrfs snapshotter is left out
  (the tests use overlayfs).  Upstream's ``urfave_cli_no_docs`` tag is kept.  ``version.Version`` is set to the
  bare version, so ``containerd --version`` reports it as Debian's builds do (``2.4.2``).
- The build happens in the module's directory with ``-mod=readonly``: exactly the dependency versions the
  release pins in its go.mod/go.sum.  The binaries are written to ``out`` (a directory the caller owns).
- Failures raise BuildError with the go command's last output; the caller turns that into dist.Unavailable.
- Standard library only; no pytest.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MODULE = "github.com/containerd/containerd/v2"
COMMANDS = ("./cmd/containerd", "./cmd/ctr", "./cmd/containerd-shim-runc-v2")
TAGS = "urfave_cli_no_docs"
DOWNLOAD_TIMEOUT = 15 * 60
BUILD_TIMEOUT = 60 * 60


class BuildError(Exception):
    """The go command is missing, or downloading or building failed; the message says which and why."""


@dataclass(frozen=True)
class Built:
    """What a build made and how long it took."""

    module: str          # module@version
    go_version: str      # ``go version`` output
    seconds: float


def go_binary() -> str:
    found = shutil.which("go")
    if found is None and os.access("/usr/local/go/bin/go", os.X_OK):
        found = "/usr/local/go/bin/go"
    if found is None:
        raise BuildError("the go command is not installed (needed to build containerd from Go modules)")
    return found


def go_env() -> dict[str, str]:
    home = Path.home()
    env = dict(os.environ)
    env.update(
        GOMODCACHE=os.environ.get("PYSHIM_GOMODCACHE") or str(home / ".cache/pyshim/gomod"),
        GOCACHE=os.environ.get("PYSHIM_GOCACHE") or str(home / ".cache/pyshim/go-build"),
        GOFLAGS="-mod=readonly -modcacherw -buildvcs=false",
        GO111MODULE="on",
        CGO_ENABLED="0",
    )
    env.pop("GOPATH", None)  # GOMODCACHE is set; a stray GOPATH must not change it
    return env


def _run(argv: list[str], cwd: str, env: dict[str, str], timeout: float, what: str) -> str:
    try:
        res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what} did not finish within {timeout:.0f} s") from None
    if res.returncode != 0:
        raise BuildError(f"{what} failed (exit {res.returncode}): {(res.stdout + res.stderr).strip()[-3000:]}")
    return res.stdout


def module_dir(version: str, env: dict[str, str]) -> Path:
    """Download ``MODULE@v<version>`` (source only) and return its directory in the module cache."""
    go = go_binary()
    spec = f"{MODULE}@v{version}"
    with tempfile.TemporaryDirectory() as empty:
        out = _run([go, "mod", "download", "-json", spec], empty, env, DOWNLOAD_TIMEOUT, f"go mod download {spec}")
    info = json.loads(out)
    if info.get("Error") or not info.get("Dir"):
        raise BuildError(f"go mod download {spec}: {info.get('Error') or 'no directory reported'}")
    return Path(info["Dir"])


def build(version: str, out: Path) -> Built:
    """Build containerd ``version`` into ``out`` (containerd, ctr, containerd-shim-runc-v2)."""
    env = go_env()
    go = go_binary()
    start = time.monotonic()
    src = module_dir(version, env)
    ldflags = f"-s -w -X {MODULE}/version.Version={version} -X {MODULE}/version.Package={MODULE}"
    out.mkdir(parents=True, exist_ok=True)
    _run([go, "build", "-trimpath", "-tags", TAGS, "-ldflags", ldflags, "-o", f"{out}/", *COMMANDS],
         str(src), env, BUILD_TIMEOUT, f"go build of containerd {version} in {src}")
    go_version = _run([go, "version"], str(src), env, 60, "go version").strip()
    return Built(f"{MODULE}@v{version}", go_version, time.monotonic() - start)
