"""Run containerd's own CRI failpoint tests against pyshim and against Go's failpoint shim, per containerd version.

Usage: python -m tests.conformance.cri_failpoints [--versions 1.6.20,1.7.24,2.1.9] [--shims pyshim,go]
                                                  [--run REGEX] [--junit FILE] [--timeout SECONDS]

containerd's CRI integration tests (``integration/``, built by cri_build.py) that use the runtime handler
``runc-fp`` (FAILPOINT_TESTS) run once per shim: ``pyshim`` serves ``io.containerd.runc-fp.v1`` through a link
named ``containerd-shim-runc-fp-v1`` to pyshim's console script (failpoints on for every task, per task), ``go``
through containerd's own ``containerd-shim-runc-fp-v1`` built from the same tag. Each prints
``cri-failpoints containerd-<v> <shim>: N passed, M failed, K skipped``, and the tests failing for one shim only.

Rules:
- Each run has a private containerd with CRI (harness/cri_daemon.py: own root, state and sockets, images from the
  harness registry on 127.0.0.1, nothing leaves the machine) configured as upstream's script/test/utils.sh
  configures CI: handler ``runc-fp`` with ``pod_annotations = ["io.containerd.runtime.v2.shim.failpoint.*"]``,
  ``cni_max_conf_num = 1`` and a CNI directory of its own whose only network is ``cni-bridge-fp`` (Go, built from
  the tag: it evaluates the tests' CNI failpoints). Upstream's plugin then delegates to ``bridge``; here
  ``bridge`` is the harness's cni_veth.py, which gives the pod an address without touching the host's network.
  Other sandboxes of the tests use ``--runtime-handler``: ``pyshim`` in pyshim's run, ``runc`` (runc.v2) in Go's.
- The tests restart containerd themselves, by name (``pkill -x``, ``pidof``): containerd runs through a link with
  a name of its own (``cfp-<hex>``, under 15 characters), so no other containerd on the machine matches, and
  a keep-alive thread starts it again (same config, directories and log) whenever it is gone, as upstream's
  ``keepalive`` loop does, until the run ends.
- A self-skip other than EXPECTED_SKIPS, a test that never finished, anything the run leaves behind (pods,
  shims, mounts, processes of the instance) counts as a failure. The one exception: a ``cni-bridge-fp`` of this
  instance still asleep in a CNI ADD delay (upstream's CNI delay tests kill containerd during a one-day ADD
  and leave the plugin to its sleep) is killed with a note. Runs are sequential. Logs (test2json events, the test binary's
  stderr, containerd's log) go to build.CACHE/logs/cri-<version>-<shim>/.
- A missing prerequisite fails under CI=true and is reported as not run otherwise. Exit status 1 if anything
  failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conformance import build, cri_build, gotest
from tests.conformance.run import execute, show
from tests.integration.harness import cri_images, cri_registry, dist, procs
from tests.integration.harness.cri_daemon import CriContainerd
from tests.integration.harness.daemon import SCRUB_ENV, SYSTEM_PATH, ContainerdError
from tests.prereq import in_ci

FP_RUNTIME, FP_BINARY, FP_HANDLER = "io.containerd.runc-fp.v1", "containerd-shim-runc-fp-v1", "runc-fp"
PYSHIM_RUNTIME, PYSHIM_BINARY = "io.containerd.pyshim.v1", "containerd-shim-pyshim-v1"
HANDLERS = {"pyshim": PYSHIM_RUNTIME, "runc": "io.containerd.runc.v2", FP_HANDLER: FP_RUNTIME}
DEFAULT_HANDLER = {"pyshim": "pyshim", "go": "runc"}   # --runtime-handler: the tests' other sandboxes
SHIMS = ("pyshim", "go")
DEFAULT_VERSIONS = ("1.6.20", "1.7.24", "2.1.9")
# The tests that run pods on the runc-fp handler (grep failpointRuntimeHandler), in any version that has them.
FAILPOINT_TESTS = (
    "TestRunPodSandboxWithSetupCNIFailure",                 # CNI failpoint only; the shim just runs the pod
    "TestRunPodSandboxWithShimStartFailure",                # Start: 1*error
    "TestRunPodSandboxWithShimDeleteFailure",               # Start: 1*error, Delete: 1*error (+ restart)
    "TestRunPodSandboxWithShimStartAndTeardownCNIFailure",  # Start: 1*error, CNI DEL error (+ restart)
    "TestRunPodSandboxAndTeardownCNISlow",                  # CNI ADD delay, containerd SIGKILLed
    "TestIssue7496_ShouldRetryShutdown",                    # Shutdown: 1*error (1.7+; skipped upstream)
    "TestContainerdRestartSandboxRecover",                  # Create: 1*delay(2000), restart mid-Create (2.x)
    "TestPodSandboxController_ShouldBackoffExitEventWhenFail",  # Delete: 1*error (2.x)
    "TestSandboxStopWithNilCNIResult",                      # CNI ADD delay + DEL error (newer 2.x)
)
EXPECTED_SKIPS = {"TestIssue7496_ShouldRetryShutdown": "Please re-enable me if we can retry Shutdown API"}
FAILPOINT_CNI_CONF = {
    "cniVersion": "1.0.0", "name": "pyshim-failpoint",
    "plugins": [{"type": "cni-bridge-fp", "capabilities": {"io.kubernetes.cri.pod-annotations": True}}],
}
RESTART_WAIT = 1.0  # seconds between containerd's death and its restart (upstream's keepalive waits 10)


class FailpointCri(CriContainerd):
    """A CRI containerd with the runc-fp handler and its CNI network, run under a name of its own."""

    def __init__(self, d: dist.Dist, built: cri_build.Built, *, registry_url: str, shim_dir: Path,
                 log_dir: Path) -> None:
        super().__init__(d, registry_url=registry_url, shim_dirs=[shim_dir], log_dir=log_dir, handlers=HANDLERS)
        self.built = built
        self.name = f"cfp-{secrets.token_hex(4)}"
        self.fp_cni_conf = self.run_dir / "cni" / "failpoint.d"
        self.handler_settings = {FP_HANDLER: {
            "cni_conf_dir": str(self.fp_cni_conf), "cni_max_conf_num": 1,
            "pod_annotations": ["io.containerd.runtime.v2.shim.failpoint.*"]}}

    def _prepare(self) -> None:
        super()._prepare()
        links = {"cni-bridge-fp": self.built.tool("cni-bridge-fp"),
                 "bridge": Path(cri_registry.__file__).with_name("cni_veth.py")}
        for name, target in links.items():
            link = self.cni_bin / name
            if not link.exists():
                link.symlink_to(target)
        self.fp_cni_conf.mkdir(parents=True, exist_ok=True)
        (self.fp_cni_conf / "10-failpoint.conflist").write_text(json.dumps(FAILPOINT_CNI_CONF))
        bindir = self.run_dir / "bin"
        bindir.mkdir(exist_ok=True)
        link = bindir / self.name
        if not link.exists():
            link.symlink_to(self.dist.containerd)
        self.program = link

    def stray_plugins(self) -> list[procs.Proc]:
        """``cni-bridge-fp`` processes this instance's containerd started (still sleeping in a delay)."""
        found = []
        for p in procs.all_processes():
            try:
                exe = os.readlink(f"/proc/{p.pid}/exe")
                environ = Path(f"/proc/{p.pid}/environ").read_bytes()
            except OSError:
                continue
            if exe.startswith(str(self.built.tool("cni-bridge-fp"))) and str(self.cni_bin).encode() in environ:
                found.append(p)
        return found


class KeepAlive:
    """Starts ``instance`` again whenever it is not running, until ``stop`` (upstream's keepalive loop)."""

    def __init__(self, instance: CriContainerd) -> None:
        self.instance = instance
        self.restarts = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="containerd-keepalive", daemon=True)

    def __enter__(self) -> "KeepAlive":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            if self.instance.pid is not None:
                continue
            if self._stop.wait(RESTART_WAIT):
                return
            try:
                self.instance.start()
                self.restarts += 1
            except ContainerdError as exc:
                self.errors.append(str(exc)[:2000])


@dataclass
class Setup:
    version: str
    built: cri_build.Built
    dist: dist.Dist
    tests: tuple[str, ...]


def shim_dir(where: Path, shim: str, built: cri_build.Built) -> Path:
    """The directory first on containerd's PATH: the runc-fp shim under test, and pyshim for the default handler."""
    where.mkdir(parents=True, exist_ok=True)
    console = Path(sys.executable).parent / PYSHIM_BINARY
    if not console.exists():
        raise dist.Unavailable(f"{console} is missing: pip install pyshim into {sys.prefix}")
    (where / PYSHIM_BINARY).symlink_to(console)
    (where / FP_BINARY).symlink_to(console if shim == "pyshim" else built.tool(FP_BINARY))
    return where


def test_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB_ENV and not k.upper().endswith("_PROXY")}
    env.update(PATH=SYSTEM_PATH, TMPDIR=str(tmp))
    return env


def one_run(setup: Setup, shim: str, registry: cri_registry.Registry, args: argparse.Namespace) -> gotest.RunResult:
    logs = build.CACHE / "logs" / f"cri-{setup.version}-{shim}"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="pyshim-crifp-", dir="/tmp") as tmp:
        work = Path(tmp)
        (work / "tmp").mkdir()
        instance = FailpointCri(setup.dist, setup.built, registry_url=registry.url,
                                shim_dir=shim_dir(work / "shims", shim, setup.built), log_dir=logs)
        pattern = args.run or "^(" + "|".join(setup.tests) + ")$"
        argv = [str(setup.built.binary), "-test.v=test2json", "-test.count=1", f"-test.timeout={args.timeout}s",
                f"-test.run={pattern}", f"--cri-endpoint=unix://{instance.address}",
                f"--runtime-handler={DEFAULT_HANDLER[shim]}", f"--containerd-bin={instance.name}"]
        result = gotest.RunResult()
        try:
            instance.start()
            with KeepAlive(instance) as keepalive:
                print(f"  containerd {instance.name} ({instance.unique}); {' '.join(argv)}", flush=True)
                result = execute(argv, test_env(work / "tmp"), setup.built.package_dir, logs, args.timeout + 120)
            print(f"  containerd restarted {keepalive.restarts} time(s) by the tests", flush=True)
            result.problems += [f"containerd restart failed: {e}" for e in keepalive.errors]
        except ContainerdError as exc:
            result.problems.append(f"containerd did not start: {exc}")
        finally:
            stray = instance.stray_plugins()  # upstream's CNI delay tests leave them asleep for a day, by design
            if stray:
                print(f"  killing {len(stray)} cni-bridge-fp left sleeping in a CNI ADD delay", flush=True)
            procs.kill_all(stray)
            result.problems += [f"left behind: {p}" for p in instance.teardown()]
    for t in result.skips():
        if t.name.split("/")[0] not in EXPECTED_SKIPS:
            result.problems.append(f"unexpected self-skip {t.name}: {t.reason(3)}")
    if not result.leaves():
        result.problems.append(f"no test ran (exit {result.exit_code}): see {logs}")
    return result


def report(version: str, shim: str, result: gotest.RunResult, seconds: float) -> str:
    show(version, shim, result)
    passed, failed, skipped = result.counts()
    line = f"cri-failpoints containerd-{version} {shim}: {passed} passed, {failed} failed, {skipped} skipped"
    print(f"{line}  ({seconds:.0f}s; logs {build.CACHE / 'logs' / f'cri-{version}-{shim}'})", flush=True)
    return line


def compare(version: str, results: dict[str, gotest.RunResult]) -> None:
    if set(results) != set(SHIMS):
        return
    bad = {shim: {t.name for t in r.failures()} for shim, r in results.items()}
    print(f"\n  containerd-{version}: failing for both shims: {sorted(bad['pyshim'] & bad['go'])}")
    print(f"  containerd-{version}: failing only for pyshim: {sorted(bad['pyshim'] - bad['go'])}")
    print(f"  containerd-{version}: failing only for Go's runc-fp: {sorted(bad['go'] - bad['pyshim'])}", flush=True)


def prepare(version: str) -> Setup:
    built = cri_build.test_binary(version)
    present = cri_build.tests(built)
    return Setup(version, built, dist.fetch(version), tuple(t for t in FAILPOINT_TESTS if t in present))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", default=",".join(DEFAULT_VERSIONS))
    ap.add_argument("--shims", default=",".join(SHIMS), help=f"of {list(SHIMS)}")
    ap.add_argument("--run", help="-test.run pattern instead of every failpoint test (development)")
    ap.add_argument("--junit", type=Path, help="write one JUnit file, a testsuite per run")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run (go test -timeout)")
    args = ap.parse_args()
    shims = [s for s in args.shims.split(",") if s]
    if any(s not in SHIMS for s in shims):
        ap.error(f"--shims: expected some of {SHIMS}")
    lines: list[str] = []
    runs: list[tuple[str, gotest.RunResult]] = []
    failed = False
    try:
        images = cri_images.catalogue()
    except dist.Unavailable as exc:
        print(f"cri-failpoints: images unavailable: {exc}")
        return 1 if in_ci() else 0
    with cri_registry.Registry(images) as registry:
        for version in [v for v in args.versions.split(",") if v]:
            t0 = time.monotonic()
            try:
                setup = prepare(version)
            except (build.Unavailable, dist.Unavailable) as exc:
                print(f"cri-failpoints containerd-{version}: UNAVAILABLE: {exc}", flush=True)
                failed = failed or in_ci()
                continue
            print(f"\n=== cri-failpoints containerd-{version}: {setup.built.binary} (ready in "
                  f"{time.monotonic() - t0:.0f}s); tests: {', '.join(setup.tests)}", flush=True)
            results = {}
            for shim in shims:
                print(f"\n=== cri-failpoints containerd-{version} {shim}", flush=True)
                start = time.monotonic()
                try:
                    results[shim] = result = one_run(setup, shim, registry, args)
                except dist.Unavailable as exc:
                    results[shim] = result = gotest.RunResult(problems=[str(exc)])
                lines.append(report(version, shim, result, time.monotonic() - start))
                runs.append((f"cri-failpoints containerd-{version} {shim}", result))
                failed = failed or result.counts()[1] > 0
            compare(version, results)
    if args.junit:
        gotest.write_junit(runs, args.junit)
    print("\n" + "\n".join(lines), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
