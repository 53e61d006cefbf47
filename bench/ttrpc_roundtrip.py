#!/usr/bin/env python3
"""Benchmark (not a test): ttrpc round-trips per second and p50/p99 latency of our trio client against
(1) our trio server in a child process and in the client's own trio loop, (2) containerd 1.6.20's Go
``containerd-shim-runc-v2`` and (3) pyshim's daemon, calling ``containerd.task.v2.Task/Connect``, at
concurrency 1 and 8 (callers sharing one connection).

Usage: /opt/pyshim/venv/bin/python bench/ttrpc_roundtrip.py [--calls N] [--json FILE] [--cases ours,go,pyshim]

Rules:
- Every row: a fresh connection, one probe call whose answer is checked (so we time the intended server),
  ``--warmup`` untimed calls, then ``--calls`` timed calls split evenly over the callers.  Latency is one
  ``client.call`` (queueing on the shared connection included); calls/s is calls over the wall time of the row.
  ours/Go compares calls/s with the Go shim's row of the same concurrency, for the rows whose server runs in
  a process of its own (the same-loop row is shown for what sharing one trio loop costs or saves).
- The echo server (``--serve``) is our child in its own session; it exits when its stdin closes.  It answers
  Connect with ConnectResponse(shim_pid=its pid, version=the request's id): Go's Connect frames plus the id.
- Cleanup runs in ``finally`` blocks shielded from cancellation: the echo child; each container (task SIGKILL,
  ``tasks rm``, ``containers rm``); then the harness's ``teardown`` of the private containerd.  The process
  started from the shell only runs the benchmark in a child of its own session and passes SIGINT/SIGTERM on, so
  Ctrl-C cancels the measuring (partial results are printed) and never kills the ctr commands of the cleanup.
- ``--timeout`` bounds the measuring; cleanup has its own bounds.  A case that cannot run (not root, no pyshim
  binary, a failure) is printed with its reason and makes the exit status 1: no silent skips.
- Shims run with containerd's log level ``info``, so neither shim pays for debug logging.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio  # noqa: E402  (after the path setup above)

from protos import task_v2_pb2 as pb  # noqa: E402
from tests.integration.harness import busybox, dist, interop  # noqa: E402
from tests.integration.harness.daemon import ContainerdError, PrivateContainerd  # noqa: E402
from ttrpc.client import open_unix_client  # noqa: E402
from ttrpc.server import Method, Server  # noqa: E402
from ttrpc.status import ConnectionClosed  # noqa: E402

SERVICE = "containerd.task.v2.Task"
CONCURRENCY = (1, 8)
CONTAINERD = "1.6.20"
PYSHIM_DIR = Path("/usr/local/bin")
RUNTIMES = {"go": "io.containerd.runc.v2", "pyshim": "io.containerd.pyshim.v1"}
LABELS = {"go": "Go runc shim Connect", "pyshim": "pyshim Connect",
          "child": "ours echo (child proc)", "inproc": "ours echo (same loop)"}
COMPARABLE = ("pyshim", "child")  # rows given a ratio to the Go shim


@dataclass(frozen=True)
class Row:
    case: str           # key of LABELS
    concurrency: int
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds


class Run:
    """What one benchmark run has measured so far, and why anything was not measured."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.missing: list[str] = []
        self.keep = False  # a failure: keep the temporary directory (containerd log) for a post-mortem


def percentile(sorted_ns: list[int], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    return sorted_ns[max(0, math.ceil(p * len(sorted_ns)) - 1)] / 1e6


async def measure(case: str, address: str, cid: str, concurrency: int, calls: int, warmup: int,
                  check) -> Row:
    req = pb.ConnectRequest(id=cid)
    async with open_unix_client(address) as client:
        check(await client.call(SERVICE, "Connect", req, pb.ConnectResponse))

        async def caller(n: int, out: list[int] | None) -> None:
            for _ in range(n):
                t0 = time.perf_counter_ns()
                try:
                    await client.call(SERVICE, "Connect", req, pb.ConnectResponse)
                except ConnectionClosed:  # a cancelled sibling broke the connection: report the cancellation
                    await trio.lowlevel.checkpoint()
                    raise
                if out is not None:
                    out.append(time.perf_counter_ns() - t0)

        async def burst(total: int, out: list[int] | None) -> float:
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for i in range(concurrency):
                    nursery.start_soon(caller, total // concurrency + (i < total % concurrency), out)
            return time.perf_counter() - t0

        await burst(warmup, None)
        latencies: list[int] = []
        seconds = await burst(calls, latencies)
    latencies.sort()
    return Row(case, concurrency, calls, seconds, percentile(latencies, 0.50), percentile(latencies, 0.99))


def expect(what: str, ok: bool) -> None:
    if not ok:
        raise RuntimeError(f"probe call answered wrongly: {what}")


# -- (1) our server ----------------------------------------------------------------------------------------------

async def echo(ctx, r: pb.ConnectRequest) -> pb.ConnectResponse:
    return pb.ConnectResponse(shim_pid=os.getpid(), version=r.id)


async def start_echo_server(path: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    server = Server()
    server.register(SERVICE, {"Connect": Method(pb.ConnectRequest, echo)})
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(64)
    await server.serve(trio.SocketListener(sock), task_status=task_status)


async def serve_until_stdin_closes(path: str) -> None:
    """The child's whole life (``--serve PATH``): serve, say ``ready``, stop when the parent closes stdin."""
    async with trio.open_nursery() as nursery:
        await nursery.start(start_echo_server, path)
        print("ready", flush=True)
        async with trio.lowlevel.FdStream(os.dup(0)) as stdin:
            while await stdin.receive_some():
                pass
        nursery.cancel_scope.cancel()


async def bench_ours(args, run: Run, tmp: Path) -> None:
    cid = "echo-" + uuid.uuid4().hex[:8]
    path = str(tmp / "echo.sock")
    proc = await trio.lowlevel.open_process([sys.executable, __file__, "--serve", path], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, start_new_session=True)
    try:
        said = b""
        with trio.fail_after(20):
            while b"\n" not in said and (chunk := await proc.stdout.receive_some()):
                said += chunk
        expect(f"child echo server said {said!r}, not ready", said == b"ready\n")
        for conc in CONCURRENCY:
            run.rows.append(await measure("child", path, cid, conc, args.calls, args.warmup, lambda r: expect(
                "echo from the child", r.version == cid and r.shim_pid == proc.pid)))
    finally:
        with trio.CancelScope(shield=True):
            await proc.stdin.aclose()
            with trio.move_on_after(5):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    path = str(tmp / "inproc.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(start_echo_server, path)
        for conc in CONCURRENCY:
            run.rows.append(await measure("inproc", path, cid, conc, args.calls, args.warmup, lambda r: expect(
                "echo in process", r.version == cid and r.shim_pid == os.getpid())))
        nursery.cancel_scope.cancel()


# -- (2), (3) real shims under a private containerd --------------------------------------------------------------

async def bench_container(args, run: Run, c: PrivateContainerd, case: str, rootfs: Path) -> None:
    cid = f"bench-{case}-{uuid.uuid4().hex[:8]}"
    try:
        await interop.ctr(c, "run", "-d", "--runtime", RUNTIMES[case], "--rootfs", str(rootfs), cid,
                          "/bin/sleep", "300")
        task = await interop.wait_task(c, cid, "RUNNING")
        address, version = c.shim_endpoint(cid)
        expect(f"task API version {version}, not 2", version == 2)
        for conc in CONCURRENCY:
            run.rows.append(await measure(case, address, cid, conc, args.calls, args.warmup, lambda r: expect(
                f"Connect.task_pid {r.task_pid} != ctr's {task.pid}", r.task_pid == task.pid)))
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(40):
            await trio.to_thread.run_sync(lambda: c.ctr("tasks", "kill", "--signal", "SIGKILL", cid, check=False))
            with trio.move_on_after(15):
                await interop.wait_task(c, cid, "STOPPED")
            await trio.to_thread.run_sync(lambda: c.ctr("tasks", "rm", "--force", cid, check=False))
            await trio.to_thread.run_sync(lambda: c.ctr("containers", "rm", cid, check=False))


async def bench_shims(args, run: Run, cases: list[str], tmp: Path) -> None:
    if os.geteuid() != 0:
        run.missing += [f"{LABELS[k]}: not run: needs root (containerd, runc)" for k in cases]
        return
    if "pyshim" in cases and not (PYSHIM_DIR / "containerd-shim-pyshim-v1").exists():
        run.missing.append(f"{LABELS['pyshim']}: not run: no {PYSHIM_DIR}/containerd-shim-pyshim-v1")
        cases = [k for k in cases if k != "pyshim"]
    try:
        artefacts = await trio.to_thread.run_sync(busybox.ensure)
        d = await trio.to_thread.run_sync(dist.fetch, CONTAINERD)
    except dist.Unavailable as exc:
        run.missing += [f"{LABELS[k]}: not run: {exc}" for k in cases]
        return
    c = PrivateContainerd(d, shim_dirs=[PYSHIM_DIR], log_dir=tmp, log_level="info")
    try:
        try:
            await trio.to_thread.run_sync(c.start)
        except ContainerdError as exc:
            run.missing += [f"{LABELS[k]}: not run: {exc}" for k in cases]
            run.keep = True
            return
        for case in cases:
            rootfs = await trio.to_thread.run_sync(busybox.copy_rootfs, artefacts.rootfs, tmp / f"rootfs-{case}")
            try:
                await bench_container(args, run, c, case, rootfs)
            except Exception as exc:  # report it, go on with the next case; the finally above cleaned up
                run.missing.append(f"{LABELS[case]}: failed: {type(exc).__name__}: {exc}")
                run.keep = True
    finally:
        with trio.CancelScope(shield=True):
            problems = await trio.to_thread.run_sync(c.teardown)
        run.missing += [f"cleanup: {p}" for p in problems]
        run.keep = run.keep or bool(problems)


# -- driver ------------------------------------------------------------------------------------------------------

async def watch_signals(scope: trio.CancelScope, run: Run, sigs) -> None:
    async for signum in sigs:
        run.missing.append(f"interrupted by {signal.Signals(signum).name}: results are partial")
        scope.cancel()
        return


async def bench_all(args, run: Run, tmp: Path) -> None:
    cases = args.cases.split(",")
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:  # active through every cleanup
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals, nursery.cancel_scope, run, sigs)
            with trio.move_on_after(args.timeout) as bound:
                if "ours" in cases:
                    await bench_ours(args, run, tmp)
                shims = [k for k in ("go", "pyshim") if k in cases]
                if shims:
                    await bench_shims(args, run, shims, tmp)
            if bound.cancelled_caught:
                run.missing.append(f"--timeout {args.timeout}s reached: results are partial")
            nursery.cancel_scope.cancel()


def machine() -> dict[str, object]:
    os_name = next((ln.split("=", 1)[1].strip('"') for ln in Path("/etc/os-release").read_text().splitlines()
                    if ln.startswith("PRETTY_NAME=")), "?")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "cpu": cpu, "loadavg_1m": os.getloadavg()[0], "os": os_name, "kernel": platform.release(),
            "python": platform.python_version(), "trio": trio.__version__, "containerd": CONTAINERD}


def table(run: Run) -> str:
    go = {r.concurrency: r.per_second for r in run.rows if r.case == "go"}
    lines = [f"{'case':<24} {'conc':>4} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ours/Go':>8}"]
    for r in sorted(run.rows, key=lambda r: (r.concurrency, list(LABELS).index(r.case))):
        ratio = f"{r.per_second / go[r.concurrency]:.2f}" if r.case in COMPARABLE and r.concurrency in go else ""
        lines.append(f"{LABELS[r.case]:<24} {r.concurrency:>4} {r.per_second:>9.0f} {r.p50_ms:>8.3f} "
                     f"{r.p99_ms:>8.3f} {ratio:>8}".rstrip())
    return "\n".join(lines + run.missing)


def front(argv: list[str]) -> int:
    """Run the benchmark in a child of its own session; pass each SIGINT/SIGTERM on to it; return its status."""
    worker = subprocess.Popen([sys.executable, __file__, "--worker", *argv], start_new_session=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda n, _frame: worker.send_signal(n))
    return worker.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3000, help="timed calls per row (default 3000)")
    ap.add_argument("--warmup", type=int, default=200, help="untimed calls before each row (default 200)")
    ap.add_argument("--cases", default="ours,go,pyshim", help="comma-separated subset of ours,go,pyshim")
    ap.add_argument("--timeout", type=float, default=600.0, help="bound on all measuring, seconds (default 600)")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    ap.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)  # internal: the child echo server
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: see front()
    args = ap.parse_args()
    if args.serve:
        trio.run(serve_until_stdin_closes, args.serve)
        return 0
    if not args.worker:
        return front(sys.argv[1:])
    if args.calls < 1 or args.warmup < 0 or not set(args.cases.split(",")) <= {"ours", "go", "pyshim"}:
        ap.error("--calls must be >= 1, --warmup >= 0, --cases a subset of ours,go,pyshim")
    run, started = Run(), time.strftime("%Y-%m-%d %H:%M:%S %z")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ttrpc-", dir="/tmp"))
    try:
        trio.run(bench_all, args, run, tmp)
    finally:
        if run.keep:
            print(f"kept {tmp} (containerd log, rootfs copies) for a post-mortem", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    info = machine()
    print(f"{started}  {info['cores']} cores {info['cpu']}, {info['os']}, kernel {info['kernel']}, "
          f"python {info['python']}, trio {info['trio']}, containerd {CONTAINERD}, load {info['loadavg_1m']:.2f}")
    print(f"{args.calls} timed calls per row after {args.warmup} warm-up; conc = callers on one connection; "
          "ours/Go = calls/s over the Go runc shim's at the same concurrency (servers in their own process)")
    print(table(run))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": started, "machine": info, "calls": args.calls, "warmup": args.warmup,
            "rows": [{**asdict(r), "label": LABELS[r.case], "calls_per_s": r.per_second} for r in run.rows],
            "problems": run.missing}, indent=2) + "\n")
    return 1 if run.missing else 0


if __name__ == "__main__":
    sys.exit(main())
