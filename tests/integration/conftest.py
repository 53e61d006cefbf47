"""Fixtures for integration tests: private containerd daemons (1.6.20, 1.7.24, 2.1.9), busybox rootfs and image.

Rules:
- Every test here is marked ``integration`` (added below for tests that forgot).
- A missing prerequisite (not root, a containerd version that cannot be obtained, no busybox-static, no runc)
  skips with the reason on a developer machine and *fails* under ``CI=true``: CI never passes on skips.
- ``PYSHIM_CONTAINERD_VERSIONS=1.6.20,2.1.9`` restricts the version parameter (tools/run-tests runs one
  version per process); test ids carry ``containerd-<version>`` so ``-k containerd-1.7.24`` selects one too.
- ``PYSHIM_E2E_BACKEND=crun|runsc`` configures pyshim for that backend for the whole session (``e2e_backend``);
  scenarios a backend cannot show are strict xfails with the reason from backend_limits.py.
  ``PYSHIM_SHARING=namespace`` runs the session with daemons shared by unrelated containers, the same way.
- Fixtures own what they start: the session ``containerd`` fixture one daemon per version, ``containerd_factory``
  the daemons a test makes.  Teardown removes everything and fails the test if anything was left behind.
"""
from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.prereq import unavailable

from . import backend_limits
from .harness import busybox, dist, hostprep, orphans
from .harness.daemon import ContainerdError, PrivateContainerd

PYSHIM_BINARY = "containerd-shim-pyshim-v1"
E2E_BACKEND = "PYSHIM_E2E_BACKEND"
SHARING = "PYSHIM_SHARING"
LOG_TAIL = 80  # lines of a containerd log a failed test report carries


def _versions() -> tuple[str, ...]:
    wanted = os.environ.get("PYSHIM_CONTAINERD_VERSIONS", "").strip()
    if not wanted:
        return dist.VERSIONS
    chosen = tuple(v.strip() for v in wanted.split(",") if v.strip())
    unknown = [v for v in chosen if v not in dist.VERSIONS]
    if unknown:
        raise pytest.UsageError(f"PYSHIM_CONTAINERD_VERSIONS: unknown {unknown}; known {dist.VERSIONS}")
    return chosen


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    backend = os.environ.get(E2E_BACKEND, "")
    limits = backend_limits.LIMITS.get(backend, {})
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
        reason = limits.get(getattr(item, "originalname", item.name))
        if reason and "pyshim" in item.name:
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"{backend}: {reason}"))


@pytest.fixture(scope="session", autouse=True)
def e2e_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's pyshim configuration: ``PYSHIM_E2E_BACKEND=crun|runsc`` runs it on that backend,
    ``PYSHIM_SHARING=namespace`` with daemons shared by unrelated containers (SHARED_TOML). Either writes a
    pyshim.toml named by $PYSHIM_CONFIG, which every containerd started here (and so every shim) inherits; the
    fixture's value is the backend."""
    backend = os.environ.get(E2E_BACKEND, "")
    shared = os.environ.get(SHARING, "")
    if shared not in ("", "pod", "namespace"):
        raise pytest.UsageError(f"{SHARING}={shared!r}: expected pod or namespace")
    if not backend and shared in ("", "pod"):
        yield "runc"
        return
    backend = backend or "runc"
    if backend == "crun":
        for change in hostprep.crun_cgroups():
            print(f"host prepared for crun: {change}")
    path = tmp_path_factory.mktemp("e2e-backend") / f"pyshim-{backend}.toml"
    versions = _versions()
    if len(versions) != 1:
        raise pytest.UsageError(f"{E2E_BACKEND}/{SHARING} need one containerd version (PYSHIM_CONTAINERD_VERSIONS)")
    path.write_text(backend_limits.pyshim_toml(backend, versions[0])
                    + (backend_limits.SHARED_TOML if shared == "namespace" else ""))
    old = os.environ.get("PYSHIM_CONFIG")
    os.environ["PYSHIM_CONFIG"] = str(path)
    yield backend
    if old is None:
        os.environ.pop("PYSHIM_CONFIG", None)
    else:
        os.environ["PYSHIM_CONFIG"] = old


def session_shared() -> bool:
    """Does this session run pyshim with daemons shared by unrelated containers (PYSHIM_SHARING=namespace)?"""
    return os.environ.get(SHARING) == "namespace"


def session_idle_timeout() -> float:
    """How long this session's pyshim daemons stay without a task: SHARED_IDLE with PYSHIM_SHARING=namespace,
    else 0 (a daemon leaves with its last task)."""
    return backend_limits.SHARED_IDLE if session_shared() else 0.0


def new_id(prefix: str = "t") -> str:
    """A container id unique across tests, processes and runs (valid containerd identifier)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def integration_host() -> None:
    """Root, runc and overlayfs: what every integration test needs from the machine."""
    if os.geteuid() != 0:
        unavailable("integration tests need root (containerd, runc, mounts)")
    if shutil.which("runc") is None:
        unavailable("runc is not installed (./install.sh, as root)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        unavailable("the kernel has no overlay filesystem (needed by the overlayfs snapshotter)")


@pytest.fixture(scope="session", autouse=True)
def reap_orphaned_daemons() -> None:
    """Clean up private containerds left by test processes that died (e.g. killed at a CI time-out)."""
    if os.geteuid() == 0:
        for unique, problems in orphans.reap_all().items():
            print(f"reaped orphaned test containerd {unique}: {problems}")


@pytest.fixture(scope="session", params=_versions(), ids=lambda v: f"containerd-{v}")
def containerd_version(request: pytest.FixtureRequest) -> str:
    """The containerd version under test; override with ``indirect`` parametrisation to pin one."""
    return request.param


@pytest.fixture(scope="session")
def containerd_dist(integration_host: None, containerd_version: str) -> dist.Dist:
    try:
        return dist.fetch(containerd_version)
    except dist.Unavailable as exc:
        unavailable(f"containerd {containerd_version} unavailable: {exc}")
        raise  # not reached: unavailable() always raises


@pytest.fixture(scope="session")
def busybox_artifacts(integration_host: None) -> busybox.Busybox:
    try:
        return busybox.ensure()
    except dist.Unavailable as exc:
        unavailable(str(exc))
        raise


@pytest.fixture
def busybox_rootfs(busybox_artifacts: busybox.Busybox, tmp_path: Path) -> Path:
    """A private writable copy of the busybox rootfs, for ``ctr run --rootfs``."""
    return busybox.copy_rootfs(busybox_artifacts.rootfs, tmp_path / "rootfs")


@pytest.fixture(scope="session")
def shim_bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory placed first in containerd's PATH.  By default it links the pyshim binary installed beside
    the running interpreter (the venv's console script), if there is one.  Override to test other shims."""
    d = tmp_path_factory.mktemp("shim-bin")
    script = Path(sys.executable).parent / PYSHIM_BINARY
    if script.exists():
        (d / PYSHIM_BINARY).symlink_to(script)
    return d


@pytest.fixture
def pyshim_binary(shim_bin_dir: Path) -> Path:
    """The pyshim shim binary containerd will find, or skip/fail when it is not installed."""
    path = shim_bin_dir / PYSHIM_BINARY
    if not path.exists():
        unavailable(f"{PYSHIM_BINARY} not installed beside {sys.executable} (pip install the project)")
    return path


@pytest.fixture(scope="session")
def containerd_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """containerd logs are kept here (pytest keeps the last few base temp dirs) for post-mortems."""
    return tmp_path_factory.mktemp("containerd-logs")


def _finish(instance: PrivateContainerd) -> None:
    problems = instance.teardown()
    if problems:
        pytest.fail(f"containerd {instance.dist.version} ({instance.unique}) left things behind:\n  "
                    + "\n  ".join(problems) + f"\nlog: {instance.log_path}", pytrace=False)


def _start(instance: PrivateContainerd) -> PrivateContainerd:
    try:
        instance.start()
    except ContainerdError as exc:
        instance.teardown()
        pytest.fail(str(exc), pytrace=False)
    return instance


@pytest.fixture(scope="session")
def containerd(containerd_dist: dist.Dist, shim_bin_dir: Path, containerd_log_dir: Path) -> Iterator[PrivateContainerd]:
    """One private containerd per version for the whole session (tests must use unique container ids)."""
    instance = _start(PrivateContainerd(containerd_dist, shim_dirs=[shim_bin_dir], log_dir=containerd_log_dir))
    yield instance
    _finish(instance)


@pytest.fixture
def containerd_factory(integration_host: None, containerd_dist: dist.Dist, shim_bin_dir: Path,
                       containerd_log_dir: Path) -> Iterator[Callable[..., PrivateContainerd]]:
    """``make(shim_dirs=None, log_level="debug", **options)`` starts a fresh private containerd of the parametrised
    version for this test only (``options``: more PrivateContainerd arguments); all are torn down (and checked)
    when the test ends."""
    made: list[PrivateContainerd] = []

    def make(shim_dirs: list[Path] | None = None, log_level: str = "debug", **options) -> PrivateContainerd:
        inst = PrivateContainerd(containerd_dist, shim_dirs=shim_dirs if shim_dirs is not None else [shim_bin_dir],
                                 log_dir=containerd_log_dir, log_level=log_level, **options)
        made.append(inst)
        return _start(inst)

    yield make
    problems = []
    for inst in made:
        problems += [f"{inst.unique}: {p}" for p in inst.teardown()]
    if problems:
        pytest.fail("private containerd left things behind:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def busybox_image(containerd: PrivateContainerd, busybox_artifacts: busybox.Busybox) -> str:
    """The busybox image imported into the session containerd; returns its reference."""
    return import_image(containerd, busybox_artifacts)


def import_image(instance: PrivateContainerd, artifacts: busybox.Busybox) -> str:
    """Import the busybox OCI image into ``instance`` (unpacked for overlayfs) unless already there."""
    if artifacts.ref not in instance.ctr("images", "ls", "--quiet").stdout.split():
        instance.ctr("images", "import", str(artifacts.image), timeout=120)
    return artifacts.ref


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test's report carries the tail of each containerd log it used (with the shims' lines relayed
    into it): CI keeps only the report, and a temp directory with the whole log may be pruned by then."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.when == "collect":
        return
    for name in ("containerd", "cri", "cri3"):
        instance = getattr(item, "funcargs", {}).get(name)
        if isinstance(instance, PrivateContainerd) and instance.log_path.exists():
            report.sections.append((f"containerd {instance.dist.version} log, last {LOG_TAIL} lines "
                                    f"({instance.log_path})", instance.log_tail(LOG_TAIL)))
