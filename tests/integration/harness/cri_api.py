"""A Python CRI (runtime.v1) client, with its protobuf and gRPC code generated at test time from the
api.proto of the k8s.io/cri-api Go module.

Rules:
- Generated code is never committed: grpc_tools' protoc writes it to GO_CACHE/cri-api-py/<version>/ (built in
  a temporary directory, renamed into place), under the package name ``k8s_cri`` so its descriptor
  (``k8s_cri/api.proto``) cannot collide with any other ``api.proto`` in the process.
- ``load()`` returns the two generated modules (messages, services) and needs grpcio and grpcio-tools (the
  project's ``dev`` extra, which CI installs); their absence raises ``Unavailable``.
- ``Client`` owns one gRPC channel to containerd's socket and closes it in ``close()``.  Every call has a
  deadline (CALL_TIMEOUT, longer for pulls); errors propagate as ``grpc.RpcError``.
"""
from __future__ import annotations

import fcntl
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from . import cri_tools
from .dist import Unavailable

CALL_TIMEOUT = 120.0
PULL_TIMEOUT = 300.0
PACKAGE = "k8s_cri"


def _generate(dest: Path) -> None:
    try:
        from grpc_tools import protoc
    except ImportError:
        raise Unavailable("grpcio-tools is needed to generate the CRI client (pip install -e '.[dev]')") from None
    source = cri_tools.cri_api_proto()
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".gen-"))
    try:
        (tmp / PACKAGE).mkdir()
        shutil.copyfile(source, tmp / PACKAGE / "api.proto")
        (tmp / PACKAGE / "__init__.py").write_text("")
        include = Path(protoc.__file__).parent / "_proto"
        code = protoc.main(["protoc", f"-I{tmp}", f"-I{include}", f"--python_out={tmp}",
                            f"--grpc_python_out={tmp}", f"{PACKAGE}/api.proto"])
        if code != 0:
            raise Unavailable(f"protoc failed ({code}) on {source}")
        (tmp / PACKAGE / "api.proto").unlink()
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load() -> tuple[ModuleType, ModuleType]:
    """(api_pb2, api_pb2_grpc) of the CRI runtime.v1 API."""
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise Unavailable("grpcio is needed for the CRI client (pip install -e '.[dev]')") from None
    dest = cri_tools.GO_CACHE / "cri-api-py" / cri_tools.CRI_API_VERSION
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not dest.is_dir():
                _generate(dest)
    if str(dest) not in sys.path:
        sys.path.insert(0, str(dest))
    return importlib.import_module(f"{PACKAGE}.api_pb2"), importlib.import_module(f"{PACKAGE}.api_pb2_grpc")


class Client:
    """Runtime and image services of one containerd CRI endpoint (a unix socket path)."""

    def __init__(self, socket_path: str) -> None:
        import grpc

        self.pb, services = load()
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.runtime = services.RuntimeServiceStub(self._channel)
        self.images = services.ImageServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def call(self, method: str, deadline: float = CALL_TIMEOUT, **fields: object):
        """``runtime.<method>(<method>Request(**fields))``, e.g. ``call("StartContainer", container_id=c)``;
        ``deadline`` is the gRPC deadline in seconds (a request's own ``timeout`` field is just a field)."""
        request = getattr(self.pb, f"{method}Request")(**fields)
        return getattr(self.runtime, method)(request, timeout=deadline)

    def pull(self, ref: str) -> str:
        req = self.pb.PullImageRequest(image=self.pb.ImageSpec(image=ref))
        return self.images.PullImage(req, timeout=PULL_TIMEOUT).image_ref

    # -- cleanup, used by teardown: remove every pod (and so every container) -------------------------------
    def remove_all(self) -> list[str]:
        """Stop and remove every pod sandbox and container; returns error messages (empty when clean)."""
        import grpc

        problems = []
        for c in self.call("ListContainers").containers:
            try:
                self.call("StopContainer", container_id=c.id, timeout=10)
                self.call("RemoveContainer", container_id=c.id)
            except grpc.RpcError as exc:
                problems.append(f"container {c.id}: {exc.code()} {exc.details()}")
        for p in self.call("ListPodSandbox").items:
            try:
                self.call("StopPodSandbox", pod_sandbox_id=p.id)
                self.call("RemovePodSandbox", pod_sandbox_id=p.id)
            except grpc.RpcError as exc:
                problems.append(f"pod {p.id}: {exc.code()} {exc.details()}")
        return problems
