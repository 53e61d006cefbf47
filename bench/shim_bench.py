#!/usr/bin/env python3
"""Benchmark (not a test): pyshim against containerd's Go shim io.containerd.runc.v2 (and the Rust runc shim when
bench/build-rust-shim built it), side by side on one private containerd: start latency and its parts, delete,
exec, State round-trips, memory per container, CPU per lifecycle, concurrent and grouped starts. Prints one
table of medians with pyshim's ratios to the others, writes JSON.

Usage: /opt/pyshim/venv/bin/python bench/shim_bench.py [--runs N] [--quick] [--json FILE] [--cases a,b,...]

Rules:
- One private containerd (tests/integration/harness) runs every shim; the pyshim binary is the installed one
  (``--pyshim``, default /usr/local/bin/containerd-shim-pyshim-v1, i.e. install.sh's), the Go shim the one of
  that containerd version, the Rust shim ``--rust`` or the build for this containerd's major version (rust_shim;
  without it the table has two columns). pyshim gets a fork server of its own (a private
  PYSHIM_FORKSERVER_DIR), started by its first start as in production; warm-up runs of every shim come before
  anything is timed.
- Timed cases rotate the runtimes run by run (A/B/C, then B/C/A, ...), so drifting load hits all alike.
  Cases: a = ``ctr run --rm --rootfs`` latency; b = the shim's start/Shutdown/delete commands timed directly
  (bench/shimbench/direct.py), pyshim through the fork server and fresh; c = memory of all shim processes
  (fork server and zygotes included) for 1/10/100 tasks and 10 groups of 10; d = concurrent ``ctr run -d``
  (20, 50, and 20 in one group); e = ``ctr task exec``; f = State calls/s and p99 at 1 and 8 callers; g = shim
  CPU per ``ctr run --rm`` lifecycle (measure.py: a cgroup around containerd); i = churn: ``--churn``
  create/start/exec/kill/delete lifecycles through one shared daemon (tests/integration/harness/churn.py), its
  descriptors, threads and RSS with their slopes per 1,000 lifecycles, and what was left behind (not in the
  default set: it takes ~10 minutes for 2,000).
- Everything started is removed in finally blocks; the containerd teardown reports leftovers, which make the
  exit status 1, as does a case that failed (its error is printed, the other cases still run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.shimbench import cases, direct, report  # noqa: E402
from bench.shimbench.measure import CpuMeter, memory  # noqa: E402
from tests.integration.forkserver_helpers import FsDir  # noqa: E402
from tests.integration.harness import busybox, dist  # noqa: E402
from tests.integration.harness.churn import Soak  # noqa: E402
from tests.integration.harness.daemon import PrivateContainerd  # noqa: E402

RUNTIMES: dict[str, cases.Runtime] = {}  # column key -> Runtime, filled by main(): pyshim, shared, go, maybe rust
SHARED_TOML = 'sharing = "namespace"\nmax_tasks_per_daemon = {max}\nidle_timeout = 5\n'  # the shared column

RUST_SHIM_VERSIONS = {1: "0.1.1", 2: "0.2.0"}  # containerd-runc-shim crate: 0.2 prints 2.x's JSON bootstrap


def rust_shim(containerd_major: int) -> Path:
    """Where bench/build-rust-shim installs the Rust runc shim that speaks this containerd's start protocol."""
    version = RUST_SHIM_VERSIONS[min(containerd_major, 2)]
    return Path(f"/var/cache/pyshim/rust/{version}/bin/containerd-shim-runc-v2-rs")


def alternate(runs: int, keys: list[str]):
    """Yield each round's order of the runtime keys: A/B(/C), then rotated by one each round."""
    for i in range(runs):
        k = i % len(keys)
        yield keys[k:] + keys[:k]


def stop_shared_daemons(c) -> None:
    """SIGTERM pyshim's shared daemons of ``c`` (case b leaves one holding reservations no Create will use)."""
    if "shared" not in RUNTIMES:
        return
    for pid in cases.shim_pids(c, RUNTIMES["shared"], []):
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass


def bench(args, c, fs: FsDir, meter: CpuMeter, rootfs: str, ref: str, tmp: Path, res: dict,
          shared_toml: Path) -> None:
    want = set(args.cases.split(","))
    fork_pids = lambda: fs.servers() + fs.zygotes()  # noqa: E731
    keys = list(RUNTIMES)
    for key in keys + keys:  # warm-up; pyshim's first start revives its fork server
        cases.run_rm(c, RUNTIMES[key], rootfs)
    fs.wait_serving()
    if want & {"a", "g"}:
        lat, cpu = {k: [] for k in keys}, {k: [] for k in keys}
        for order in alternate(args.runs, keys):
            for key in order:
                before = meter.shim_seconds() if meter.available else 0.0
                lat[key].append(cases.run_rm(c, RUNTIMES[key], rootfs))
                time.sleep(0.15)  # background work of this lifecycle (zygote refill, shim exit) lands here
                if meter.available:
                    cpu[key].append(meter.shim_seconds() - before)
        res["a_run_rm"] = lat
        if meter.available:
            res["g_cpu"] = cpu
    if "b" in want:
        go_binary = str(c.dist.bindir / "containerd-shim-runc-v2")
        service = "containerd.task.v3.Task" if c.dist.major >= 2 else "containerd.task.v2.Task"
        runner = direct.Runner(c, meter.path / "cgroup.procs" if meter.available else None, tmp / "direct",
                               service)
        (tmp / "direct").mkdir()
        variants = {"pyshim": (args.pyshim, {}, None, False),
                    "pyshim_fresh": (args.pyshim, {"PYSHIM_FORKSERVER": "off"}, None, False),
                    "go": (go_binary, {}, None, False)}
        if "shared" in RUNTIMES:  # a start that joins a live shared daemon (the first one, untimed, starts it)
            variants["shared"] = (args.pyshim, {"PYSHIM_CONFIG": str(shared_toml)}, None, True)
        if "rust" in RUNTIMES:
            variants["rust"] = (str(args.rust), {}, direct.rust_options(str(args.rust)), False)
        res["b_direct"] = {k: [] for k in variants}
        try:
            if "shared" in variants:
                runner.lifecycle(*variants["shared"])
            for order in alternate(args.runs, list(variants)):
                for key in order:
                    res["b_direct"][key].append(runner.lifecycle(*variants[key]))
        finally:
            runner.close()
            stop_shared_daemons(c)
    if "e" in want:
        res["e_exec"] = {k: cases.exec_latency(c, rt, ref, args.exec_runs) for k, rt in RUNTIMES.items()}
    if "f" in want:
        res["f_state"] = {k: cases.state_rpc(c, rt, ref, args.calls) for k, rt in RUNTIMES.items()}
    if "d" in want:
        res["d_concurrent"] = {k: {} for k in RUNTIMES}
        for n in args.concurrent:
            for key in keys:
                res["d_concurrent"][key][f"separate_{n}"] = cases.concurrent_starts(c, RUNTIMES[key], ref, n)
        for key in keys:
            res["d_concurrent"][key]["grouped_20"] = cases.concurrent_starts(c, RUNTIMES[key], ref, 20, group=True)
    if "c" in want:
        res["c_memory"] = {}
        for key, rt in RUNTIMES.items():
            with cases.Fleet(c, rt, ref) as fleet:  # one container: the daemon alone, as the issue reports it
                fleet.start_many(1)
                time.sleep(1.0)
                daemons = cases.shim_pids(c, rt, [])
                res["c_memory"][f"{key}_daemon_1"] = memory(daemons[0]) if len(daemons) == 1 else {}
            res["c_memory"][key] = cases.memory_rows(c, rt, ref, fork_pids, tuple(args.counts),
                                                     tuple(args.groups))
        res["c_memory"]["forkserver_alone"] = {str(p): memory(p) for p in fork_pids()}
    if "i" in want:
        soak = Soak(c, cases.PYSHIM, ref, "shared", tmp, every=100)
        soak.run(args.churn)
        res["i_churn"] = soak.summary()


def machine(c) -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    os_name = next((ln.split("=", 1)[1].strip('"') for ln in Path("/etc/os-release").read_text().splitlines()
                    if ln.startswith("PRETTY_NAME=")), "?")
    return {"cores": os.cpu_count(), "cpu": cpu, "os": os_name, "kernel": platform.release(),
            "python": platform.python_version(), "containerd": c.dist.version, "load_1m": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containerd", default="1.6.20")
    ap.add_argument("--pyshim", default="/usr/local/bin/containerd-shim-pyshim-v1")
    ap.add_argument("--rust", type=Path, help="a Rust runc shim binary for a third column (default: the one "
                    "bench/build-rust-shim installed for this containerd version, if it is there)")
    ap.add_argument("--runs", type=int, default=30, help="rotating rounds of the timed cases a, b, g (default 30)")
    ap.add_argument("--exec-runs", type=int, default=30)
    ap.add_argument("--calls", type=int, default=4000, help="State calls per row of case f")
    ap.add_argument("--counts", default="1,10,100", help="single-container task counts of case c")
    ap.add_argument("--groups", default="10x10", help="groups x size of case c")
    ap.add_argument("--concurrent", default="20,50", help="concurrent ctr run -d of case d")
    ap.add_argument("--cases", default="a,b,c,d,e,f,g", help="a..g, and i (churn, not by default)")
    ap.add_argument("--churn", type=int, default=2000, help="lifecycles of case i (default 2000)")
    ap.add_argument("--quick", action="store_true", help="--runs 10 --exec-runs 10 --counts 1,10 --groups 2x5 "
                    "--concurrent 20 --calls 1000")
    ap.add_argument("--max-tasks", type=int, default=64, help="max_tasks_per_daemon of the shared column")
    ap.add_argument("--no-shared", action="store_true", help="leave out the shared-daemon column")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.runs, args.exec_runs, args.counts, args.groups, args.concurrent, args.calls = 10, 10, "1,10", "2x5", \
            "20", 1000
    args.counts = [int(x) for x in args.counts.split(",")]
    args.groups = [int(x) for x in args.groups.split("x")]
    args.concurrent = [int(x) for x in args.concurrent.split(",")]
    if os.geteuid() != 0:
        print("shim_bench: needs root (containerd, runc, cgroups)", file=sys.stderr)
        return 1
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    tmp = Path(tempfile.mkdtemp(prefix="shim-bench-"))
    fs = FsDir(Path("/run/pyshim-test") / f"bench-fs-{uuid.uuid4().hex[:8]}")
    os.environ["PYSHIM_FORKSERVER_DIR"] = str(fs.directory)
    os.environ.pop("PYSHIM_FORKSERVER", None)
    shim_dir = tmp / "bin"
    shim_dir.mkdir()
    (shim_dir / "containerd-shim-pyshim-v1").symlink_to(args.pyshim)
    d = dist.fetch(args.containerd)
    shared_toml = tmp / "pyshim-shared.toml"
    shared_toml.write_text(SHARED_TOML.format(max=args.max_tasks))
    pyshim_bin = "containerd-shim-pyshim-v1"
    RUNTIMES.update(pyshim=cases.Runtime("pyshim", cases.PYSHIM, pyshim_bin, fork_server=True))
    if not args.no_shared:
        RUNTIMES["shared"] = cases.Runtime("shared", cases.PYSHIM, pyshim_bin,
                                           ("--runtime-config-path", str(shared_toml)), shared=True)
    RUNTIMES["go"] = cases.Runtime("go", cases.GO, "containerd-shim-runc-v2")
    args.rust = args.rust or rust_shim(d.major)
    if args.rust.exists():
        rust_bin = f"containerd-shim-{cases.RUST.split('.')[2]}-v2"
        (shim_dir / rust_bin).symlink_to(args.rust)
        RUNTIMES["rust"] = cases.Runtime("rust", cases.RUST, rust_bin, target=args.rust.resolve().name)
    else:
        print(f"shim_bench: no Rust runc shim at {args.rust} (bench/build-rust-shim builds it): two columns",
              file=sys.stderr)
    c = PrivateContainerd(d, shim_dirs=[shim_dir], log_dir=tmp, log_level="info")
    meter = CpuMeter(f"pyshim-bench-{os.getpid()}")
    res: dict = {}
    errors: list[str] = []
    try:
        c.start()
        if meter.available:
            meter.adopt(c.pid)
        artefacts = busybox.ensure()
        rootfs = str(busybox.copy_rootfs(artefacts.rootfs, tmp / "rootfs"))
        ref = artefacts.ref
        c.ctr("images", "import", str(artefacts.image), timeout=120)
        bench(args, c, fs, meter, rootfs, ref, tmp, res, shared_toml)
    except Exception as exc:  # print what was measured, then the error
        import traceback

        errors.append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    finally:
        errors += [f"cleanup: {p}" for p in c.teardown()]
        errors += fs.stop()
        fs.remove()
        meter.remove()
    info = machine(c)
    info["rust_shim"] = str(args.rust) if "rust" in RUNTIMES else None
    info["shared"] = "shared" in RUNTIMES
    try:
        print(report.table(res, info, started, args))
    except Exception as exc:  # a partial result the table cannot show: the JSON still has it
        errors.append(f"table: {type(exc).__name__}: {exc}")
    for e in errors:
        print("ERROR", e)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": started, "machine": info, "results": res, "errors": errors},
                                        indent=1))
    if errors:
        print(f"kept {tmp} (containerd log) for a post-mortem", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
