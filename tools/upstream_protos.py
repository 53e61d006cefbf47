#!/usr/bin/env python3
"""Upstream containerd .proto definitions, compiled to descriptors, for the conformance test.

Usage: python tools/upstream_protos.py   (warms the module cache, lists what was compiled)

Rules:
* Nothing upstream is ever written into the repository.  Debian's
  golang-github-*-dev packages are read in place under /usr/share/gocode/src;
  Go modules are fetched with ``go mod download`` into a cache outside the tree
  ($PYSHIM_GOMODCACHE, default ~/.cache/pyshim/gomod) and read from there;
  protoc output goes to a temporary directory.
* Versions are pinned here (SOURCES), taken from containerd's go.mod files:
  containerd v2.1.9 requires github.com/containerd/containerd/api v1.9.0,
  cgroups/v3 v3.0.5 and ttrpc v1.2.7; v2.3.7 requires api v1.11.1 (the first
  api with runtime/bootstrap/v1); v2.4.2 (newest release) requires api v1.12.0.
* Each upstream file is compiled by its own protoc run with its imports
  resolved from the same tree (gogo.proto and google/rpc/status.proto from
  Debian), because some trees import gogo.proto under two different paths.
* A missing prerequisite raises Unavailable with the reason; the caller decides
  whether that skips or fails.  A module already in the cache is used without
  running go, so a warm run needs neither go nor the network.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from tools.protocompare import Upstream  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOCODE = pathlib.Path("/usr/share/gocode/src")
GOGO_INCLUDES = (GOCODE / "github.com/gogo/protobuf", GOCODE / "github.com/gogo/googleapis")
CONTAINERD_1_6 = "github.com/containerd/containerd"


class Unavailable(Exception):
    """A prerequisite (Debian package, go, the Go module proxy) is missing."""


@dataclasses.dataclass(frozen=True)
class Source:
    """A set of upstream files from one tree at one version.

    ``module``/``version`` name a Go module (None: Debian's /usr/share/gocode/src).
    Files are named as upstream imports them: ``prefix`` + "/" + each of ``files``;
    for a Go module, ``prefix`` is where the module directory is mounted.
    """
    label: str
    files: tuple[str, ...]
    prefix: str = ""
    module: str | None = None
    version: str | None = None
    debian_package: str | None = None


SOURCES = (
    Source("containerd 1.6.20", prefix=CONTAINERD_1_6, debian_package="golang-github-containerd-containerd-dev",
           files=("api/types/mount.proto", "api/types/task/task.proto", "api/types/metrics.proto",
                  "api/types/platform.proto", "api/events/task.proto",
                  "api/services/ttrpc/events/v1/events.proto", "runtime/v2/task/shim.proto",
                  "runtime/v2/runc/options/oci.proto", "pkg/runtimeoptions/v1/api.proto",
                  "runtime/linux/runctypes/runc.proto")),
    Source("cgroups 1.0.4", prefix="github.com/containerd/cgroups",
           debian_package="golang-github-containerd-cgroups-dev",
           files=("stats/v1/metrics.proto", "v2/stats/metrics.proto")),
    Source("googleapis (gogo 1.4.0)", debian_package="golang-github-gogo-googleapis-dev",
           files=("google/rpc/status.proto",)),
    Source("containerd 2.1.9 (api v1.9.0)", prefix="github.com/containerd/containerd/api",
           module="github.com/containerd/containerd/api", version="v1.9.0",
           files=("types/mount.proto", "types/task/task.proto", "types/metrics.proto", "types/platform.proto",
                  "types/introspection.proto", "types/event.proto", "events/task.proto",
                  "services/ttrpc/events/v1/events.proto", "runtime/task/v2/shim.proto",
                  "runtime/task/v3/shim.proto", "types/runc/options/oci.proto",
                  "types/runtimeoptions/v1/api.proto")),
    Source("cgroups v3.0.5", prefix="github.com/containerd/cgroups/v3",
           module="github.com/containerd/cgroups/v3", version="v3.0.5",
           files=("cgroup1/stats/metrics.proto", "cgroup2/stats/metrics.proto")),
    Source("ttrpc v1.2.7", module="github.com/containerd/ttrpc", version="v1.2.7", files=("request.proto",)),
    Source("containerd 2.3.7 (api v1.11.1)", prefix="github.com/containerd/containerd/api",
           module="github.com/containerd/containerd/api", version="v1.11.1",
           files=("runtime/bootstrap/v1/bootstrap.proto",)),
    Source("containerd 2.4.2 (api v1.12.0)", prefix="github.com/containerd/containerd/api",
           module="github.com/containerd/containerd/api", version="v1.12.0",
           files=("runtime/bootstrap/v1/bootstrap.proto",)),
)


def gomodcache() -> pathlib.Path:
    return pathlib.Path(os.environ.get("PYSHIM_GOMODCACHE") or pathlib.Path.home() / ".cache/pyshim/gomod")


def _go_binary() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if found is None:
        raise Unavailable("the go command is not installed (needed once to download upstream Go modules)")
    return found


def module_dir(module: str, version: str) -> pathlib.Path:
    """The extracted module in the cache, downloading it first if absent."""
    cache = gomodcache()
    target = cache / f"{module}@{version}"   # our module paths have no upper-case letters to escape
    if target.is_dir():
        return target
    env = dict(os.environ, GOMODCACHE=str(cache), GOFLAGS="-mod=mod", GOTOOLCHAIN="local", GO111MODULE="on")
    with tempfile.TemporaryDirectory() as empty:
        try:
            run = subprocess.run([_go_binary(), "mod", "download", f"{module}@{version}"], cwd=empty, env=env,
                                 capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"go mod download {module}@{version} timed out (Go module proxy unreachable?)")
    if run.returncode != 0 or not target.is_dir():
        raise Unavailable(f"go mod download {module}@{version} failed: {run.stderr.strip()[-500:]}")
    return target


def _wkt() -> pathlib.Path:
    try:
        import grpc_tools
    except ImportError:
        raise Unavailable("grpcio-tools is not installed (pip install -e .[dev])")
    return pathlib.Path(grpc_tools.__file__).parent / "_proto"


def protoc_descriptors(includes: list[pathlib.Path], files: list[str]) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Compile ``files`` (named relative to ``includes``) with their imports; {file name: descriptor}."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "set.pb"
        args = ["protoc", *(f"-I{p}" for p in includes), f"-I{_wkt()}", "--include_imports",
                f"--descriptor_set_out={out}", *files]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {files} (includes {includes}); its messages are on stderr")
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: f for f in fds.file}


def _debian_includes(src: Source) -> list[pathlib.Path]:
    probe = GOCODE / src.prefix / src.files[0] if src.prefix else GOCODE / "github.com/gogo/googleapis" / src.files[0]
    if not probe.is_file():
        raise Unavailable(f"Debian package {src.debian_package} is not installed ({probe} missing)")
    if not (GOGO_INCLUDES[0] / "gogoproto/gogo.proto").is_file():
        raise Unavailable("Debian package golang-github-gogo-protobuf-dev is not installed (gogo.proto missing)")
    return [GOCODE, *GOGO_INCLUDES]


def compile_source(src: Source, scratch: pathlib.Path) -> list[Upstream]:
    """Descriptors of every file of ``src``; ``scratch`` holds the include tree for module mounts."""
    if src.module is None:
        includes = _debian_includes(src)
    else:
        moddir = module_dir(src.module, src.version)
        if src.prefix:
            tree = scratch / f"{src.module}@{src.version}".replace("/", "_")
            mount = tree / src.prefix
            if not mount.exists():
                mount.parent.mkdir(parents=True, exist_ok=True)
                mount.symlink_to(moddir, target_is_directory=True)
            includes = [tree]
        else:
            includes = [moddir]
        includes += list(GOGO_INCLUDES)
    result = []
    for rel in src.files:
        name = f"{src.prefix}/{rel}" if src.prefix else rel
        result.append(Upstream(src.label, protoc_descriptors(includes, [name])[name]))
    return result


def load_upstream(sources: tuple[Source, ...] = SOURCES) -> list[Upstream]:
    """Compile every pinned upstream file (raises Unavailable when a prerequisite is missing)."""
    _wkt()
    with tempfile.TemporaryDirectory() as scratch:
        return [u for src in sources for u in compile_source(src, pathlib.Path(scratch))]


def load_ours() -> list[descriptor_pb2.FileDescriptorProto]:
    """Descriptors of pyshim's protos/*.proto, compiled the same way."""
    names = sorted(f"protos/{p.name}" for p in (ROOT / "protos").glob("*.proto"))
    compiled = protoc_descriptors([ROOT], names)
    return [compiled[n] for n in names]


def main() -> int:
    try:
        upstream = load_upstream()
    except Unavailable as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        return 1
    for u in upstream:
        print(f"{u.label:32} {u.file.name}")
    print(f"module cache: {gomodcache()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
