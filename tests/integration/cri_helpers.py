"""Fixtures and helpers for the CRI tests (test_cri_*.py): a local registry and a private containerd with the
CRI plugin, and small builders for pods and containers.

Rules:
- Test modules import the fixtures they use from here (``from .cri_helpers import cri, cri_registry``);
  ``cri`` is module-scoped, so each test module gets its own containerd per version, torn down (and checked
  for leftovers, failing the module's last test) when the module is done.
- A missing prerequisite (containernetworking-plugins, gcc, grpcio-tools, Go) goes through ``unavailable``:
  skip on a developer machine, fail under CI.
- Waits poll with a deadline and fail with what they last saw; no bare sleeps.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

from tests.prereq import unavailable

from .harness import cri_images, cri_registry as registry_mod, dist, procs
from .harness.cri_daemon import CriContainerd
from .harness.daemon import ContainerdError

T = TypeVar("T")


@pytest.fixture(scope="session")
def cri_registry(integration_host: None) -> Iterator[registry_mod.Registry]:
    try:
        images = cri_images.catalogue()
    except dist.Unavailable as exc:
        unavailable(str(exc))
    with registry_mod.Registry(images) as reg:
        yield reg


def serve(instance: CriContainerd) -> Iterator[CriContainerd]:
    """Start ``instance``, yield it, tear it down and fail if it left anything: the body of a CRI fixture
    (``yield from serve(CriContainerd(...))``), for any handler set."""
    try:
        instance.start()
        instance.client.call("Version")
    except dist.Unavailable as exc:
        instance.teardown()
        unavailable(str(exc))
    except ContainerdError as exc:
        instance.teardown()
        pytest.fail(str(exc), pytrace=False)
    yield instance
    problems = instance.teardown()
    if problems:
        pytest.fail(f"CRI containerd {instance.dist.version} ({instance.unique}) left things behind:\n  "
                    + "\n  ".join(problems) + f"\nlog: {instance.log_path}", pytrace=False)


@pytest.fixture(scope="module")
def cri(containerd_dist: dist.Dist, shim_bin_dir: Path, containerd_log_dir: Path,
        cri_registry: registry_mod.Registry) -> Iterator[CriContainerd]:
    """A private containerd of the parametrised version with CRI (handlers pyshim and runc), for this module."""
    yield from serve(CriContainerd(containerd_dist, registry_url=cri_registry.url, shim_dirs=[shim_bin_dir],
                                   log_dir=containerd_log_dir))


@pytest.fixture
def make_pod(cri: CriContainerd) -> Iterator[Callable[[str, str], "Pod"]]:
    """``make_pod(name, handler)`` runs a pod sandbox; pods the test did not remove are removed afterwards,
    so one failed test does not leave a shim that makes the next one fail too."""
    made: list[Pod] = []

    def make(name: str, handler: str) -> Pod:
        made.append(Pod(cri, name, handler))
        return made[-1]

    yield make
    import grpc

    for pod in made:
        try:
            pod.stop_and_remove()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value not in (None, False):
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(interval)


def shim_daemons(instance: CriContainerd) -> list[procs.Proc]:
    """Long-lived shim processes of ``instance`` (its gRPC socket on their command line, no action word)."""
    return [p for p in procs.shims_of(instance.address) if p.argv[-1] not in ("start", "delete")]


class Pod:
    """One pod sandbox created through CRI, with helpers for its containers."""

    def __init__(self, instance: CriContainerd, name: str, handler: str) -> None:
        self.instance, self.handler = instance, handler
        pb = instance.client.pb
        self.log_dir = instance.pod_logs / name
        self.config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="pyshim-test"),
            hostname=name, log_directory=str(self.log_dir),
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=instance.cgroup_parent))
        self.id = instance.client.call("RunPodSandbox", config=self.config, runtime_handler=handler).pod_sandbox_id

    def create(self, name: str, command: list[str], image: str = cri_images.BUSYBOX_REF) -> str:
        pb = self.instance.client.pb
        self.instance.client.pull(image)
        config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
                                    command=command, log_path=f"{name}.log")
        return self.instance.client.call("CreateContainer", pod_sandbox_id=self.id, config=config,
                                         sandbox_config=self.config).container_id

    def run(self, name: str, command: list[str]) -> str:
        cid = self.create(name, command)
        self.instance.client.call("StartContainer", container_id=cid)
        return cid

    def status(self, cid: str):
        return self.instance.client.call("ContainerStatus", container_id=cid).status

    def wait_exited(self, cid: str, timeout: float = 30.0):
        exited = self.instance.client.pb.CONTAINER_EXITED
        return wait_for(f"container {cid[:12]} to exit",
                        lambda: (lambda s: s if s.state == exited else None)(self.status(cid)), timeout)

    def log(self, name: str) -> list[tuple[str, str, str]]:
        """The container's CRI log file as (stream, tag, text) lines, timestamps dropped."""
        lines = (self.log_dir / f"{name}.log").read_text().splitlines()
        return [tuple(line.split(" ", 3)[1:]) for line in lines]  # type: ignore[misc]

    def stop_and_remove(self) -> None:
        self.instance.client.call("StopPodSandbox", pod_sandbox_id=self.id)
        self.instance.client.call("RemovePodSandbox", pod_sandbox_id=self.id)
