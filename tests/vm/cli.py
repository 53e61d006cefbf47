"""tools/vm-test: run a pytest selection inside a pure cgroup v2 Debian VM (qemu) and report the result.

Usage: tools/vm-test [options] [-- PYTEST_ARGS...]
Without PYTEST_ARGS the default selection runs (DEFAULT_ARGS: the vm-marked tests, the core e2e scenarios
with pyshim, tests/vm/guest_checks.py).  Exit status: the guest pytest's, 124 on a time-out, 125 when the VM
never reported (see results.py), 2 for a usage error or a failed image build.

Rules:
- Root only (image build, and the guest runs containers as root).  The image is built once per set of inputs
  and cached (build.py); the checkout travels with every run (payload.py).
- Time-outs are for emulation: TCG runs 10-20x slower than the host, so the guest pytest gets ``--timeout``
  (default 660 s) and qemu that plus BOOT_SLACK before it is killed.
- The guest's serial console is shown live, prefixed ``vm| ``.  The results directory (pytest.log, junit.xml,
  facts.json, dmesg, containerd logs on failure) is kept and named at the end; ``--junitxml`` copies the
  guest's JUnit report there so tools/run-tests can count it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from . import build, payload, qemu, results

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ARGS = ("tests/integration", "tests/vm/guest_checks.py", "-p", "tests.vm.selection", "-v",
                "--durations=15")
BOOT_SLACK = 180.0  # boot, guest set-up, results write-back, poweroff (TCG)
RESULTS_BASE = Path("/var/tmp/pyshim-vm")
KEEP_RESULTS = 10
UPTIMES = ("init_uptime", "pytest_start_uptime", "pytest_done_uptime", "done_uptime")


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tools/vm-test", description=__doc__.splitlines()[0])
    ap.add_argument("--accel", default="auto", choices=("auto", "tcg", "kvm"),
                    help="qemu accelerator; auto = kvm only with real VMX/SVM (never on a PVM host)")
    ap.add_argument("--timeout", type=float, default=660.0, help="seconds for pytest inside the guest")
    ap.add_argument("--containerd", default="1.6.20",
                    help="containerd versions in the guest, comma-separated (others come from the host cache)")
    ap.add_argument("--junitxml", type=Path, help="copy the guest's JUnit report here")
    ap.add_argument("--results", type=Path, help=f"keep the results here (default: a new dir in {RESULTS_BASE})")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--memory", type=int, default=2048, help="guest memory, MiB")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment variable for pytest in the guest (repeatable)")
    ap.add_argument("--build-only", action="store_true", help="build (or find) the cached image and stop")
    ap.add_argument("pytest_args", nargs="*", help="pytest arguments (after --); default: the VM selection")
    ns = ap.parse_args(argv)
    versions = tuple(v.strip() for v in ns.containerd.split(",") if v.strip())
    if not versions:
        ap.error("--containerd names no version")
    ns.versions = versions
    bad = [e for e in ns.env if "=" not in e or not e.split("=", 1)[0]]
    if bad:
        ap.error(f"--env wants NAME=VALUE, got {bad}")
    return ns


def guest_config(ns: argparse.Namespace) -> payload.GuestConfig:
    return payload.GuestConfig(pytest_args=tuple(ns.pytest_args) or DEFAULT_ARGS, timeout=ns.timeout,
                               versions=ns.versions, env=dict(e.split("=", 1) for e in ns.env))


def extra_versions(versions: tuple[str, ...]) -> dict[str, Path]:
    """Payload files for containerd versions other than the guest's own 1.6.20, from the host's cache."""
    from tests.integration.harness import dist  # host side only; stdlib

    files: dict[str, Path] = {}
    for version in versions:
        if version == dist.SYSTEM_VERSION:
            continue
        d = dist.fetch(version)
        base = f"cache/containerd/{version}"
        for name in dist.BINARIES:
            files[f"{base}/root/usr/bin/{name}"] = d.bindir / name
        files[f"{base}/complete"] = dist.version_dir(version) / "complete"
    return files


def results_dir(ns: argparse.Namespace) -> Path:
    if ns.results:
        ns.results.mkdir(parents=True, exist_ok=True)
        return ns.results
    RESULTS_BASE.mkdir(parents=True, exist_ok=True)
    old = sorted((p for p in RESULTS_BASE.glob("run-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for stale in old[:-KEEP_RESULTS + 1]:
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("run-%Y%m%d-%H%M%S-"), dir=RESULTS_BASE))


def read_text(path: Path) -> str | None:
    return path.read_text(errors="replace") if path.is_file() else None


def report(res_dir: Path, markers: dict[str, str], run: qemu.Run, image: build.Image) -> None:
    facts = json.loads(read_text(res_dir / "facts.json") or "{}")
    cg = facts.get("cgroup", {})
    print(f"vm: image {image.key} ({image.manifest.get('kernel')}, "
          + ", ".join(f"{k} {v}" for k, v in sorted(image.manifest.get("packages", {}).items())) + ")")
    print(f"vm: qemu wall {run.seconds:.1f}s, exit {run.returncode}; guest uptime at "
          + ", ".join(f"{k.removesuffix('_uptime')} {markers.get(k, '?')}s" for k in UPTIMES))
    if cg:
        print(f"vm: /sys/fs/cgroup is {cg.get('fstype')}; controllers {' '.join(cg.get('controllers', []))}; "
              f"runner in {cg.get('self')}; kernel {facts.get('kernel')}")
    if "criu_check" in facts:
        print(f"vm: criu check exit {facts['criu_check']['rc']}: {facts['criu_check']['out'].splitlines()[-1:]}")
    print(f"vm: results in {res_dir}")


def main(argv: list[str] | None = None) -> int:
    ns = parse(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("tools/vm-test: must run as root (image build with debootstrap; containers in the guest)",
              file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        image, built = build.ensure(build.current_spec(ROOT))
    except build.BuildError as exc:
        print(f"tools/vm-test: image build failed: {exc}", file=sys.stderr)
        return 2
    print(f"vm: image {image.key} {'built' if built else 'cached'} in {time.monotonic() - t0:.1f}s "
          f"({image.directory})", flush=True)
    if ns.build_only:
        return 0
    if shutil.which(qemu.QEMU) is None:
        print(f"tools/vm-test: {qemu.QEMU} not found (install Debian's qemu-system-x86: ./install.sh, as root)",
              file=sys.stderr)
        return 2
    cpuinfo = Path("/proc/cpuinfo").read_text()
    accel = qemu.choose_accel(ns.accel, cpuinfo, os.access("/dev/kvm", os.W_OK))
    res_dir = results_dir(ns)
    with tempfile.TemporaryDirectory(prefix="pyshim-vm-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        exchange = work / "exchange.img"
        size = payload.write(exchange, ROOT, guest_config(ns), extra_versions(ns.versions))
        machine = qemu.Machine(kernel=image.kernel, initrd=image.initrd, rootfs=image.rootfs, exchange=exchange,
                               serial=work / "serial.log", accel=accel, cpus=ns.cpus, memory_mb=ns.memory)
        print(f"vm: payload {size / 1e6:.1f} MB; booting ({accel}, {ns.cpus} cpus, {ns.memory} MiB); "
              f"pytest {' '.join(guest_config(ns).pytest_args)}", flush=True)
        run = qemu.run(machine, ns.timeout + BOOT_SLACK, on_line=lambda line: print(f"vm| {line}", flush=True))
        shutil.copy2(machine.serial, res_dir / "serial.log")
        if run.stderr.strip():
            (res_dir / "qemu.stderr").write_text(run.stderr)
            print(f"vm: qemu stderr: {run.stderr.strip()[-2000:]}")
        try:
            names = payload.read_results(exchange, res_dir)
        except (payload.NoResults, tarfile.ReadError) as exc:
            names = []
            print(f"vm: no results tar on the exchange disk: {exc}")
    markers = qemu.markers(read_text(res_dir / "serial.log") or "")
    v = results.verdict(run.returncode, read_text(res_dir / "run.rc") if "run.rc" in names else None)
    junit = res_dir / "junit.xml"
    if junit.is_file():
        print(f"vm: {results.junit_counts(junit.read_text())}")
        if ns.junitxml:
            shutil.copy2(junit, ns.junitxml)
    report(res_dir, markers, run, image)
    print(f"vm: exit {v.code}: {v.reason} ({time.monotonic() - t0:.0f}s in all)", flush=True)
    return v.code
