"""(b) A shim's own commands timed from outside: ``start`` until the socket answers, ``Shutdown``, ``delete``.

Rules:
- The shim binary is run exactly as containerd 1.6 runs it (containerd ``runtime/v2/binary.go`` ``Start`` at v1.6.20): the same argv, containerd's
  environment plus GOMAXPROCS=2 and TTRPC_ADDRESS (1.7+: GRPC_ADDRESS, NAMESPACE, MAX_SHIM_VERSION too),
  cwd = a bundle with config.json and a ``log`` FIFO held open read-write (as containerd holds it), stdin
  /dev/null, in the cgroup containerd is in (forked by launcher.py, which joined it once). Timestamps are
  ours (perf_counter around the process and the RPCs): the same clock and the same overhead for both shims.
- ``start`` is timed until it exits, and until a Connect call on the printed address is answered (the
  daemon serves; the Rust shim answers NOT_FOUND without a container, which counts as answered).
  ``Shutdown`` is timed until its answer (what containerd waits for) and until the daemon process is gone
  (pidfd). ``delete`` is then run for the same id in a bundle holding what each shim's Create writes for it
  (Go: ``runtime``; Rust: ``runtime`` and ``options.json``; pyshim: ``pyshim.json``); no container was
  created, so the runtime has no state, which is what containerd's cleanup after a normal task deletion finds.
  (Go's and Rust's delete run ``runc delete --force`` regardless.) ``start`` may print a plain address or
  2.x's JSON bootstrap.
- CPU of the start and delete processes comes from wait4's rusage (the daemon's own CPU is not in it).
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

from google.protobuf import empty_pb2

from protos import task_v2_pb2
from ttrpc import blocking
from ttrpc.status import Code, StatusError

from tests.integration.harness import procs



def shim_env(c) -> dict[str, str]:
    env = c.env()
    env.update(GOMAXPROCS="2", TTRPC_ADDRESS=c.ttrpc_address)
    if c.dist.version != "1.6.20":
        env.update(GRPC_ADDRESS=c.address, NAMESPACE=c.namespace, MAX_SHIM_VERSION="2")
    return env


def call(path: str, service: str, method: str, request, response_type):
    """One call on a fresh connection; None when closed unanswered (Shutdown may do that). An error status
    raises ttrpc's StatusError (the call was served)."""
    return blocking.call(path, service, method, request, response_type)


def daemon_pid(address: str, cid: str, missing_ok: bool = False) -> int:
    """The shim daemon process (not start or delete) serving ``cid`` for containerd ``address``."""
    for p in procs.shims_of(address):
        if "-id" in p.argv and p.argv[p.argv.index("-id") + 1] == cid and not {"start", "delete"} & set(p.argv):
            return p.pid
    if missing_ok:
        return 0
    raise RuntimeError(f"no shim daemon for {cid}")


def rust_options(binary: str) -> str:
    """The options.json a Rust runc shim's Create writes (its delete refuses a missing field, and an unknown one:
    0.1 requires criu_path, 0.2 dropped it). 0.2+ prints its version for -v, 0.1 refuses the flag."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stdout
    old = "Version: 0." not in out or "Version: 0.1." in out
    fields = ["shim_cgroup", "binary_name", "root", "criu_image_path", "criu_work_path"]
    return json.dumps(dict.fromkeys(fields + ["criu_path"] * old, ""))


class Runner:
    def __init__(self, c, cgroup_procs: Path | None, workdir: Path, service: str) -> None:
        self.c = c
        self.cgroup_procs = cgroup_procs
        self.workdir = workdir
        self.service = service
        self.launcher: subprocess.Popen | None = None  # launcher.py, in containerd's cgroup

    def _launcher(self) -> subprocess.Popen:
        if self.launcher is None:
            procs = self.cgroup_procs

            def join_cgroup() -> None:
                if procs is not None:
                    procs.write_text(str(os.getpid()))
            self.launcher = subprocess.Popen([sys.executable, "-I", str(Path(__file__).with_name("launcher.py"))],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                             preexec_fn=join_cgroup)
        return self.launcher

    def close(self) -> None:
        if self.launcher is not None:
            self.launcher.stdin.close()
            self.launcher.wait(30)
            self.launcher = None

    def _run(self, argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float, bytes]:
        """(perf_counter at fork, wall seconds, CPU seconds, stdout) of one short-lived command."""
        launcher = self._launcher()
        launcher.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env}) + "\n")
        launcher.stdin.flush()
        line = launcher.stdout.readline()
        if not line:
            raise RuntimeError(f"launcher exited ({launcher.poll()})")
        r = json.loads(line)
        out = bytes.fromhex(r["out"])
        if r["rc"]:
            raise RuntimeError(f"{' '.join(argv)}: exit {r['rc']}: {out[-500:]!r}")
        return r["t0"], r["t1"] - r["t0"], r["cpu"], out

    def _shutdown(self, path: str, cid: str, pid: int) -> tuple[float, float]:
        """(seconds until Shutdown was answered, until the daemon was gone)."""
        pidfd = os.pidfd_open(pid)
        try:
            t1 = time.perf_counter()
            try:
                call(path, self.service, "Shutdown", task_v2_pb2.ShutdownRequest(id=cid), empty_pb2.Empty)
            except (ConnectionError, OSError):
                pass
            answered = time.perf_counter() - t1
            if not select.select([pidfd], [], [], 30)[0]:
                raise RuntimeError(f"shim {pid} did not exit after Shutdown")
            return answered, time.perf_counter() - t1
        finally:
            os.close(pidfd)

    def lifecycle(self, binary: str, extra_env: dict[str, str] | None = None,
                  options_json: str | None = None, shared: bool = False) -> dict[str, float]:
        """One start/Connect/Shutdown/delete of ``binary``; ``options_json``: the Rust shim's options.json.
        ``shared``: pyshim with a shared daemon (its config in ``extra_env``): the start that joins a live
        daemon is timed, and there is no Shutdown to time (the daemon stays for the next container)."""
        c = self.c
        cid = f"direct-{uuid.uuid4().hex[:10]}"
        bundle = self.workdir / cid
        bundle.mkdir()
        (bundle / "config.json").write_text("{}")
        # what each shim's Create leaves for its delete: Go's `runtime` (it always runs `runc delete --force`),
        # Rust's `runtime` and options.json (the same), pyshim's pyshim.json (it runs the runtime only when the
        # runtime's state directory exists)
        (bundle / "runtime").write_text("runc")
        if options_json is not None:
            (bundle / "options.json").write_text(options_json)
        root = f"/run/containerd/runc/{c.namespace}"
        (bundle / "pyshim.json").write_text(json.dumps({"runtime": {
            "binary": "runc", "root": root, "global_args": [], "state_path": f"{root}/{cid}"}}))
        os.mkfifo(bundle / "log")
        log = os.open(bundle / "log", os.O_RDWR | os.O_NONBLOCK)
        env = {**shim_env(c), **(extra_env or {})}
        common = [binary, "-namespace", c.namespace, "-address", c.address, "-publish-binary",
                  str(c.dist.containerd), "-id", cid]
        try:
            t0, start_wall, start_cpu, out = self._run([*common, "start"], bundle, env)
            text = out.decode().strip()
            path = (json.loads(text)["address"] if text.startswith("{") else text).removeprefix("unix://")
            try:
                pid = call(path, self.service, "Connect", task_v2_pb2.ConnectRequest(id=cid),
                           task_v2_pb2.ConnectResponse).shim_pid
            except StatusError as exc:  # the Rust shim answers Connect only for a created container: NOT_FOUND
                if exc.code != Code.NOT_FOUND:
                    raise
                pid = 0
            answered = time.perf_counter() - t0
            shutdown = shutdown_answer = None
            if not shared:  # a shared daemon stays for the next container: no Shutdown to time
                shutdown_answer, shutdown = self._shutdown(path, cid, pid or daemon_pid(c.address, cid))
            _, delete_wall, delete_cpu, out = self._run([*common, "-bundle", str(bundle), "delete"], bundle, env)
            if not out:
                raise RuntimeError("delete printed no DeleteResponse")
        except BaseException:
            if not shared and (pid := daemon_pid(c.address, cid, missing_ok=True)):
                os.kill(pid, 9)
            raise
        finally:
            os.close(log)
        return {"start_exit": start_wall, "start_answer": answered, "shutdown": shutdown,
                "shutdown_answer": shutdown_answer, "delete": delete_wall,
                "start_cpu": start_cpu, "delete_cpu": delete_cpu}
