"""Go-built test tools for the CRI path: critest and crictl from cri-tools, and the CRI api.proto of the
k8s.io/cri-api module, all obtained through Go modules and cached (never copied into the repository).

Rules:
- Go is /usr/local/go/bin/go or the first ``go`` on PATH.  Modules come from the Go module proxy into
  GO_CACHE/gomod; builds go to GO_CACHE/cri-tools/<version>/ with a ``complete`` marker written last and a
  lock around the build, so concurrent test processes build once and never see half a binary.
- ``GOTOOLCHAIN=local``: the machine's Go builds it or we fail; no toolchain is ever downloaded.
- critest is a Go test binary (cri-tools builds it with ``go test -c``), crictl a plain ``go build``.
- Failures raise ``Unavailable`` with the tail of the build log.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .dist import Unavailable

CRI_TOOLS_VERSION = "v1.37.0"
CRI_API_VERSION = "v0.37.0"  # the k8s.io/cri-api that cri-tools v1.37.0 is built against
GO_CACHE = Path(os.environ.get("PYSHIM_GO_CACHE", str(Path.home() / ".cache" / "pyshim")))
BUILD_TIMEOUT = 3600


@dataclass(frozen=True)
class CriTools:
    critest: Path
    crictl: Path
    version: str


def go_binary() -> str:
    for candidate in ("/usr/local/go/bin/go", shutil.which("go")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise Unavailable("no Go toolchain (/usr/local/go/bin/go or go on PATH) to build cri-tools")


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOMODCACHE=str(GO_CACHE / "gomod"), GOCACHE=str(GO_CACHE / "gocache"), GOFLAGS="-mod=mod",
               GOTOOLCHAIN="local", CGO_ENABLED="0")
    env["PATH"] = f"{Path(go_binary()).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def _go(args: list[str], cwd: Path, log: Path) -> None:
    with open(log, "a") as out:
        out.write(f"$ go {' '.join(args)}\n")
        out.flush()
        res = subprocess.run([go_binary(), *args], cwd=cwd, env=go_env(), stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT)
    if res.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise Unavailable(f"go {' '.join(args)} failed (exit {res.returncode}); log {log}:\n{tail}")


def module_dir(module: str, version: str) -> Path:
    """The unpacked source of a Go module (downloaded through the module proxy if not cached)."""
    res = subprocess.run([go_binary(), "mod", "download", "-json", f"{module}@{version}"], env=go_env(),
                         capture_output=True, text=True, timeout=600, cwd=GO_CACHE if GO_CACHE.is_dir() else None)
    try:
        info = json.loads(res.stdout)
    except ValueError:
        info = {}
    if res.returncode != 0 or not info.get("Dir"):
        raise Unavailable(f"go mod download {module}@{version} failed: {info.get('Error') or res.stderr.strip()}")
    return Path(info["Dir"])


def cri_api_proto() -> Path:
    """k8s.io/cri-api's runtime/v1 api.proto (read-only, in the module cache)."""
    return module_dir("k8s.io/cri-api", CRI_API_VERSION) / "pkg" / "apis" / "runtime" / "v1" / "api.proto"


def ensure(version: str = CRI_TOOLS_VERSION) -> CriTools:
    """critest and crictl of ``version``, built once and cached."""
    base = GO_CACHE / "cri-tools" / version
    tools = CriTools(base / "critest", base / "crictl", version)
    if (base / "complete").exists():
        return tools
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (base / "complete").exists():
            return tools
        log = base / "build.log"
        log.write_text("")
        (base / "go.mod").write_text("module pyshim.test/critools\n\ngo 1.24\n")
        pkg = "sigs.k8s.io/cri-tools/cmd"
        _go(["get", f"{pkg}/critest@{version}", f"{pkg}/crictl@{version}"], base, log)
        _go(["test", "-c", "-o", str(base / ".critest"), f"{pkg}/critest"], base, log)
        _go(["build", "-o", str(base / ".crictl"), f"{pkg}/crictl"], base, log)
        os.rename(base / ".critest", tools.critest)
        os.rename(base / ".crictl", tools.crictl)
        (base / "complete").write_text(version + "\n")
    return tools
