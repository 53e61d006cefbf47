"""Run containerd's client integration suite against pyshim and runc.v2, per containerd version, and compare.

Usage: python -m tests.conformance.run [--versions 1.7.24,2.1.9] [--runtimes pyshim,runc] [--sharing namespace]
                                       [--junit FILE] [--run REGEX] [--timeout SECONDS]

Rules:
- Each (version, runtime) pair is one run of the version's test binary (build.py) with TEST_RUNTIME set
  and ``-test.root``; the suite starts its own containerd (instance.py) and pulls the images it names from
  a registry on 127.0.0.1 reached as an HTTPS proxy (registry.py, images.py, certs.py).  Runs are
  sequential (the suite's directories are fixed).
- The skip list (skiplist.py) is applied as ``-test.skip``; a self-skip it does not expect, anything the
  run leaves behind, a test that never finished and a non-zero exit without a failing test all count as
  failures.  Each run prints ``conformance containerd-<v> <runtime>: N passed, M failed, K skipped``.
- After both runtimes of a version ran, tests failing only for pyshim are listed apart from those failing
  for both (the machine's problem, not pyshim's).
- ``--sharing namespace`` runs pyshim with daemons shared by unrelated containers (the suite's containerd, and so
  every shim, gets a $PYSHIM_CONFIG with tests/integration/backend_limits.py's SHARED_TOML); such a run is labelled
  ``io.containerd.pyshim.v1 (shared)`` and keeps its logs apart.
- A missing prerequisite (Go build, containerd version, pyshim shim, busybox) fails under CI=true and is
  reported as not run otherwise.  Exit status 1 if anything failed.  Logs (test2json events and the suite's
  containerd log) go to CACHE/logs/<version>-<runtime>/.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.conformance import build, certs, gotest, images, instance, skiplist
from tests.conformance.registry import Registry
from tests.integration.backend_limits import SHARED_IDLE, SHARED_TOML
from tests.integration.harness import busybox, dist, procs
from tests.integration.harness.daemon import SCRUB_ENV
from tests.prereq import in_ci

RUNTIMES = {"pyshim": "io.containerd.pyshim.v1", "runc": "io.containerd.runc.v2"}
DEFAULT_VERSIONS = ("1.7.24", "2.1.9")


def list_tests(binary: Path) -> set[str]:
    """Top-level test names (``-test.short`` makes the suite's TestMain skip starting containerd)."""
    out = subprocess.run([str(binary), "-test.short", "-test.list", ".*"], capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    return {line.strip() for line in out.stdout.splitlines() if line.startswith("Test")}


def suite_env(bindir: Path, d: dist.Dist, runtime: str, tmp: Path, registry: Registry,
              pyshim_config: Path | None = None) -> dict[str, str]:
    proxies = {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in SCRUB_ENV and k.upper() not in proxies}
    env.update(PATH=instance.suite_path(bindir, d.bindir), TEST_RUNTIME=runtime, TMPDIR=str(tmp),
               **registry.proxy_env())
    if pyshim_config is not None:
        env["PYSHIM_CONFIG"] = str(pyshim_config)
    return env


def label(runtime: str, sharing: str) -> str:
    return f"{runtime} (shared)" if sharing == "namespace" and runtime == RUNTIMES["pyshim"] else runtime


def execute(argv: list[str], env: dict[str, str], cwd: Path, logs: Path, timeout: float) -> gotest.RunResult:
    """Run the test binary, its stdout converted by ``go tool test2json``; print top-level results live."""
    result = gotest.RunResult()
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stderr.log", "wb") as stderr, open(logs / "events.jsonl", "w") as events:
        # Like `go test`, run in the package's directory: tests read testdata/ by relative path.
        suite = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=stderr, cwd=cwd,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        conv = subprocess.Popen([build.GO, "tool", "test2json", "-t", "-p", "client"], stdin=suite.stdout,
                                stdout=subprocess.PIPE, text=True, env=build.go_env())
        suite.stdout.close()
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            os.killpg(suite.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        shown: set[str] = set()
        try:
            for line in conv.stdout:
                events.write(line)
                result.feed([line])
                _progress(result, shown)
        finally:
            timer.cancel()
            if suite.poll() is None and sys.exc_info()[0] is not None:
                os.killpg(suite.pid, signal.SIGKILL)  # interrupted (run-tests' time-out): take the suite down too
            result.exit_code = suite.wait()
            conv.wait()
    if expired.is_set():
        result.problems.append(f"killed after the {timeout:.0f}s run time-out")
    return result


def _progress(result: gotest.RunResult, shown: set[str]) -> None:
    for name, t in result.tests.items():
        if "/" not in name and t.status != "run" and name not in shown:
            shown.add(name)
            print(f"    {t.status.upper():4} {name} ({t.seconds:.1f}s)", flush=True)


def one_run(version: str, runtime: str, built: build.Built, d: dist.Dist, entries: list[skiplist.Entry],
            conditions: frozenset[str], registry: Registry, args: argparse.Namespace) -> gotest.RunResult:
    shared = label(runtime, args.sharing) != runtime
    logs = build.CACHE / "logs" / f"{version}-{runtime}{'-shared' if shared else ''}"
    shutil.rmtree(logs, ignore_errors=True)
    shim = Path(sys.executable).parent / instance.PYSHIM_BINARY
    if runtime == RUNTIMES["pyshim"] and not shim.exists():
        return gotest.RunResult(problems=[f"{shim} is missing: pip install pyshim into {sys.prefix}"])
    with instance.exclusive(), tempfile.TemporaryDirectory(prefix="pcs-", dir="/tmp") as tmp:
        tmpdir = Path(tmp)
        foreign = [p for p in procs.all_processes() if "sleep 1" in " ".join(p.argv)]
        if foreign:  # TestContainerKillInit* grep the host's whole `ps ax` for "sleep 1"
            print(f"  note: {len(foreign)} process(es) on this host match \"sleep 1\" (e.g. "
                  f"{' '.join(foreign[0].argv)!r}); TestContainerKillInit* fail on that, whatever the runtime")
        before = instance.leftovers(tmpdir)
        if before:
            print("  cleaning what an earlier run left:", *before, sep="\n    ")
            instance.clean(tmpdir)
        bindir = instance.bin_dir(tmpdir / "bin", d.bindir, shim, sys.executable, built.tools)
        skips = skiplist.excluded(entries, version, runtime, conditions)
        argv = [str(built.binary), "-test.v=test2json", "-test.root", "-test.count=1", f"-test.timeout={args.timeout}s"]
        if skips:
            argv.append("-test.skip=" + skiplist.skip_pattern(skips))
        if args.run:
            argv.append("-test.run=" + args.run)
        work = tmpdir / "tmp"
        work.mkdir()
        config = None
        if shared:
            config = tmpdir / "pyshim.toml"
            config.write_text(SHARED_TOML)
        print(f"  TEST_RUNTIME={runtime} {' '.join(argv)}", flush=True)
        try:
            result = execute(argv, suite_env(bindir, d, runtime, work, registry, config), built.package_dir, logs,
                             args.timeout + 120)
            left = instance.leftovers(tmpdir)
            deadline = time.monotonic() + SHARED_IDLE + 10
            while shared and left and time.monotonic() < deadline:  # a shared daemon leaves idle_timeout after
                time.sleep(0.2)                                     # its last task: give it that, and then some
                left = instance.leftovers(tmpdir)
            result.problems += [f"left behind: {x}" for x in left]
        finally:
            cleanup = instance.clean(tmpdir)
        result.problems += [f"cleanup: {x}" for x in cleanup]
    if not result.leaves():
        said = [ln[:600] for ln in (logs / "stderr.log").read_text(errors="replace").splitlines()
                if ln.strip() and not ln.startswith("time=")]
        result.problems.append(f"no test ran (exit {result.exit_code}); the suite said:\n" + "\n".join(said[-10:]))
    listed = list_tests(built.binary)
    result.excluded = {e.test: e.reason for e in skips if e.test.split("/")[0] in listed}
    for t in result.skips():
        if skiplist.expected_skip(entries, version, runtime, conditions, t.name) is None:
            result.problems.append(f"unexpected self-skip {t.name}: {t.reason(3)}")
    return result


def show(version: str, runtime: str, result: gotest.RunResult) -> None:
    """Print each failure with its output, the runner's problems, a failed binary's own output and the skips."""
    for t in result.failures():
        print(f"\n  --- FAIL {t.name} [{version} {runtime}]" + ("" if t.status == "fail" else " (never finished)"))
        print("      " + t.reason(40).replace("\n", "\n      "))
    for problem in result.problems:
        print(f"\n  --- PROBLEM [{version} {runtime}] {problem}")
    if result.exit_code not in (0, None) and not result.failures():
        print(f"\n  --- test binary exited {result.exit_code}; output outside tests:")
        print("      " + "".join(result.package_output[-60:]).replace("\n", "\n      "))
    for t in result.skips():
        print(f"  skip {t.name}: {t.reason(2).strip()}")


def report(version: str, runtime: str, result: gotest.RunResult, seconds: float) -> str:
    show(version, runtime, result)
    for name, reason in sorted(result.excluded.items()):
        print(f"  skip-list {name}: {reason}")
    passed, failed, skipped = result.counts()
    line = f"conformance containerd-{version} {runtime}: {passed} passed, {failed} failed, {skipped} skipped"
    logs = f"{version}-{runtime.removesuffix(' (shared)')}{'-shared' if runtime.endswith(' (shared)') else ''}"
    print(f"{line}  ({seconds:.0f}s; logs {build.CACHE / 'logs' / logs})", flush=True)
    return line


def compare(version: str, results: dict[str, gotest.RunResult]) -> None:
    if "pyshim" not in results or "runc" not in results:
        return
    bad = {rt: {t.name for t in r.failures()} for rt, r in results.items()}
    print(f"\n  containerd-{version}: failing for both runtimes (environment): {sorted(bad['pyshim'] & bad['runc'])}")
    print(f"  containerd-{version}: failing only for pyshim: {sorted(bad['pyshim'] - bad['runc'])}")
    print(f"  containerd-{version}: failing only for runc.v2: {sorted(bad['runc'] - bad['pyshim'])}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", default=",".join(DEFAULT_VERSIONS))
    ap.add_argument("--runtimes", default="pyshim,runc", help=f"of {sorted(RUNTIMES)}")
    ap.add_argument("--junit", type=Path, help="write one JUnit file, a testsuite per run")
    ap.add_argument("--run", help="-test.run pattern (a subset, for development)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run (go test -timeout)")
    ap.add_argument("--sharing", default="pod", choices=("pod", "namespace"),
                    help="pyshim's daemons: one per pod/group (default), or shared by the namespace's containers")
    ns = ap.parse_args()
    entries = skiplist.load()
    lines: list[str] = []
    runs: list[tuple[str, gotest.RunResult]] = []
    try:
        artifacts = busybox.ensure()
    except dist.Unavailable as exc:
        print(f"conformance: busybox unavailable: {exc}")
        return 1 if in_ci() else 0
    with tempfile.TemporaryDirectory(prefix="pcs-certs-") as tmp:
        served = images.served(artifacts)
        try:
            tls = certs.make(Path(tmp), images.hosts(served))
        except certs.CertError as exc:
            print(f"conformance: {exc}")
            return 1 if in_ci() else 0
        with Registry(served, tls) as registry:
            print(f"conformance: registry {registry.address} serving "
                  + ", ".join(f"{i.repository}:{i.tag}" for i in served), flush=True)
            conditions = skiplist.probe_conditions()
            print(f"conformance: machine conditions: {sorted(conditions) or 'none'}", flush=True)
            failed = run_versions(ns, entries, conditions, registry, lines, runs)
            if ns.junit:
                gotest.write_junit(runs, ns.junit)
            print("\n" + "\n".join(lines), flush=True)
            misses = [r for r in registry.requests if r[3] != 200]
            if misses:
                print("conformance: registry requests not answered 200 (references not served):",
                      *sorted({f"{m} {h}{p} -> {st}" for m, h, p, st in misses}), sep="\n  ")
    return 1 if failed else 0


def run_versions(ns: argparse.Namespace, entries: list[skiplist.Entry], conditions: frozenset[str],
                 registry: Registry, lines: list[str], runs: list[tuple[str, gotest.RunResult]]) -> bool:
    failed = False
    for version in [v for v in ns.versions.split(",") if v]:
        t0 = time.monotonic()
        try:
            built, d = build.test_binary(version), dist.fetch(version)
        except (build.Unavailable, dist.Unavailable) as exc:
            print(f"conformance containerd-{version}: UNAVAILABLE: {exc}", flush=True)
            failed = failed or in_ci()
            continue
        print(f"\n=== conformance containerd-{version}: {built.binary} (ready in {time.monotonic() - t0:.0f}s)")
        results = {}
        for short in [r for r in ns.runtimes.split(",") if r]:
            print(f"\n=== conformance containerd-{version} {RUNTIMES[short]}", flush=True)
            start = time.monotonic()
            results[short] = r = one_run(version, RUNTIMES[short], built, d, entries, conditions, registry, ns)
            name = label(RUNTIMES[short], ns.sharing)
            lines.append(report(version, name, r, time.monotonic() - start))
            failed = failed or r.counts()[1] > 0
            runs.append((f"conformance containerd-{version} {name}", r))
        compare(version, results)
    return failed


if __name__ == "__main__":
    sys.exit(main())
