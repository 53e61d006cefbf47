"""One private containerd daemon of a given version, for integration tests.

Rules:
- Everything is private to the instance: root /var/lib/pyshim-test/<unique>, state /run/pyshim-test/<unique>/state
  (with ``state_size``, a tmpfs of that size mounted there by ``start`` and unmounted by ``teardown``),
  gRPC and ttrpc sockets next to the state dir (short paths), a containerd namespace named after <unique>,
  a config file written by us (CRI, NRI, tracing, the opt plugin and unused snapshotters disabled; overlayfs kept).
- containerd's PATH is ``shim_dirs`` first, then the version's own bin dir, then the usual system dirs, so a
  shim binary under test placed in a chosen directory wins, and a version's runc shim is its own.
- This object owns the containerd process (its child, own session).  ``stop`` = SIGTERM, 10 s, SIGKILL, and
  ``crash`` = SIGKILL; neither touches shims, so ``restart`` leaves containers running as a real containerd
  restart does.
- ``teardown`` removes what the namespace holds through ctr, stops containerd, then checks nothing of this
  instance is left (shims given its socket, processes in its namespace's cgroups, mounts below its dirs,
  the runc state dir of its namespace).  Leftovers are killed/unmounted *and reported* so the caller fails.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

from . import ctrout, procs
from .dist import Dist

LIB_BASE = Path("/var/lib/pyshim-test")
RUN_BASE = Path("/run/pyshim-test")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Environment variables that would redirect containerd, ctr or a shim away from this instance.
SCRUB_ENV = ("NOTIFY_SOCKET", "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "CONTAINERD_SNAPSHOTTER",
             "CONTAINERD_RUNTIME", "TTRPC_ADDRESS", "GRPC_ADDRESS", "NAMESPACE", "MAX_SHIM_VERSION")
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",                      # 1.x CRI, 2.x CRI gRPC service
    "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",  # 2.x CRI
    "io.containerd.podsandbox.controller.v1.podsandbox",             # 2.x, needs CRI
    "io.containerd.nri.v1.nri",                      # would listen on the global /var/run/nri/nri.sock
    "io.containerd.internal.v1.opt",                 # would prepend <path>/bin to containerd's PATH
    "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs",
)


class ContainerdError(Exception):
    """containerd did not start, or a ctr command failed; the message carries the output."""


class PrivateContainerd:
    disabled_plugins: tuple[str, ...] = DISABLED_PLUGINS  # a subclass may keep some (harness/cri_daemon.py)

    def __init__(self, dist: Dist, *, shim_dirs: Sequence[Path] = (), log_dir: Path | None = None,
                 log_level: str = "debug", unique: str | None = None, state_size: str = "") -> None:
        self.dist = dist
        self.unique = unique or f"{dist.version.replace('.', '')}-{os.getpid()}-{secrets.token_hex(3)}"
        self.namespace = f"pyshim-{self.unique}"
        self.root = LIB_BASE / self.unique
        self.run_dir = RUN_BASE / self.unique
        self.state = self.run_dir / "state"
        self.address = str(self.run_dir / "grpc.sock")
        self.ttrpc_address = str(self.run_dir / "ttrpc.sock")
        self.config_path = self.run_dir / "config.toml"
        self.log_path = (log_dir or self.run_dir) / f"containerd-{self.unique}.log"
        self.shim_dirs = tuple(Path(d) for d in shim_dirs)
        self.log_level = log_level
        self.state_size = state_size  # "" or a tmpfs size ("1m"): the state directory is a tmpfs of its own
        self.path_env = ":".join([*map(str, self.shim_dirs), str(dist.bindir), SYSTEM_PATH])
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.program = dist.containerd  # what ``start`` executes (a differently named link to it, say)

    # -- addresses of things containerd creates -------------------------------------------------------------
    def bundle(self, container_id: str) -> Path:
        """The runtime-v2 bundle directory of a task (shim cwd; holds address / bootstrap.json)."""
        return self.state / "io.containerd.runtime.v2.task" / self.namespace / container_id

    def shim_endpoint(self, container_id: str) -> tuple[str, int]:
        """(address, task API version) of a task's shim as containerd recorded it: ``bootstrap.json``
        (2.x, written by containerd) or ``address`` (1.x, written by the shim, meaning version 2)."""
        bundle = self.bundle(container_id)
        if (bundle / "bootstrap.json").exists():
            params = json.loads((bundle / "bootstrap.json").read_text())
            return params["address"], int(params.get("version", 2))
        return (bundle / "address").read_text(), 2

    def shim_daemon(self, container_id: str) -> int:
        """The pid of the shim daemon serving a task: the process listening on its recorded address."""
        address, _ = self.shim_endpoint(container_id)
        path = address.removeprefix("unix://")
        inode = procs.socket_inode(path)
        daemons = [p for p in procs.shims_of(self.address) if "start" not in p.argv and "delete" not in p.argv]
        holders = procs.holders_of_socket(inode, daemons) if inode is not None else []
        if not holders:
            raise AssertionError(f"no daemon listens on {path} for {container_id}")
        return holders[0]

    @property
    def runc_root(self) -> Path:
        """Where the runc shim keeps runc's state for this namespace (hard-coded by upstream)."""
        return Path("/run/containerd/runc") / self.namespace

    @property
    def runtime_roots(self) -> tuple[Path, ...]:
        """State roots of every OCI runtime a test may use here: runc, crun and runsc (pyshim's defaults)."""
        return tuple(Path(f"/run/containerd/{r}") / self.namespace for r in ("runc", "crun", "runsc"))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUB_ENV}
        env["PATH"] = self.path_env
        # ctr 2.x prints every server deprecation to stderr before its own output; 2.2+ always has one on a
        # cgroup v1 host ("The support for cgroup v1 is deprecated"), which would change every ctr's stderr.
        env["CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS"] = "1"
        return env

    # -- lifecycle -------------------------------------------------------------------------------------------
    def config_text(self) -> str:
        q = lambda s: '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731  (TOML string)
        disabled = ", ".join(q(p) for p in self.disabled_plugins)
        return "\n".join([
            f"version = {self.dist.config_version}",
            f"root = {q(self.root)}",
            f"state = {q(self.state)}",
            f"disabled_plugins = [{disabled}]",
            "", "[grpc]", f"  address = {q(self.address)}",
            "", "[ttrpc]", f"  address = {q(self.ttrpc_address)}",
            "", "[debug]", f"  level = {q(self.log_level)}", "",
        ])

    def start(self, timeout: float = 30.0) -> None:
        if self.pid is not None:
            raise ContainerdError(f"containerd {self.unique} already running")
        for d in (self.root, self.state):
            d.mkdir(parents=True, exist_ok=True, mode=0o711)
        if self.state_size and str(self.state) not in procs.mounts_under(self.state):
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.state_size},mode=0711", "tmpfs",
                            str(self.state)], check=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        with open(self.log_path, "ab") as log:
            log.write(f"--- pyshim harness: starting containerd {self.dist.version} ({self.starts})\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [str(self.program), "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                cwd=self.run_dir, start_new_session=True)
        self.starts += 1
        (self.run_dir / "containerd.pid").write_text(str(self._proc.pid))  # for harness/orphans.py
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise ContainerdError(f"containerd {self.dist.version} exited during startup:\n{self.log_tail()}")
            if os.path.exists(self.ttrpc_address):
                res = self.ctr("version", check=False, timeout=5)
                if res.returncode == 0:
                    return
                last = res.stderr
            time.sleep(0.1)
        self.stop()
        raise ContainerdError(f"containerd {self.dist.version} not ready after {timeout}s: {last}\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop containerd only (SIGTERM, then SIGKILL after ``timeout``); shims keep running."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def crash(self) -> None:
        """SIGKILL containerd: no shutdown of its own, as a crash or an OOM kill; shims keep running. ``start``
        brings it back on the same directories and sockets."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop containerd without touching shims and start it again on the same directories and sockets."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # -- ctr -------------------------------------------------------------------------------------------------
    def ctr_argv(self, *args: str) -> list[str]:
        return [str(self.dist.ctr), "--address", self.address, "--namespace", self.namespace, *args]

    def ctr(self, *args: str, check: bool = True, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run this version's ctr against this instance; raises ContainerdError on failure when ``check``."""
        argv = self.ctr_argv(*args)
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env(),
                                 input=input, stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ContainerdError(f"{' '.join(argv)}: timed out after {timeout}s\n{self.log_tail()}") from exc
        if check and res.returncode != 0:
            raise ContainerdError(f"{' '.join(argv)}: exit {res.returncode}\nstdout: {res.stdout}\n"
                                  f"stderr: {res.stderr}")
        return res

    def ctr_popen(self, *args: str, **kwargs) -> subprocess.Popen:
        """Start a long-running ctr (e.g. ``events``); the caller owns the process and must end it."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.ctr_argv(*args), env=self.env(), **kwargs)

    # -- teardown --------------------------------------------------------------------------------------------
    def remove_namespace_contents(self) -> list[str]:
        """Kill and delete every task, then containers, images and snapshots of the namespace."""
        problems: list[str] = []
        tasks = ctrout.tasks(self.ctr("tasks", "ls").stdout)
        for t in tasks:
            if t.status not in ("STOPPED", "UNKNOWN"):
                self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", t.id, check=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(t.status != "RUNNING" and t.status != "PAUSED"
                   for t in ctrout.tasks(self.ctr("tasks", "ls").stdout)):
                break
            time.sleep(0.1)
        for t in tasks:
            res = self.ctr("tasks", "rm", "--force", t.id, check=False, timeout=30)
            if res.returncode != 0:
                problems.append(f"ctr tasks rm {t.id}: {res.stderr.strip()}")
        for cid in self.ctr("containers", "ls", "--quiet").stdout.split():
            res = self.ctr("containers", "rm", cid, check=False)
            if res.returncode != 0:
                problems.append(f"ctr containers rm {cid}: {res.stderr.strip()}")
        images = self.ctr("images", "ls", "--quiet").stdout.split()
        if images:
            res = self.ctr("images", "rm", "--sync", *images, check=False)
            if res.returncode != 0:
                problems.append(f"ctr images rm: {res.stderr.strip()}")
        problems += self._remove_snapshots()
        return problems

    def _remove_snapshots(self) -> list[str]:
        for _ in range(20):  # leaves first: a parent cannot go while it has children
            snaps = ctrout.snapshots(self.ctr("snapshots", "ls").stdout)
            if not snaps:
                return []
            parents = {s.parent for s in snaps}
            for s in snaps:
                if s.key not in parents:
                    self.ctr("snapshots", "rm", s.key, check=False)
        left = ctrout.snapshots(self.ctr("snapshots", "ls").stdout)
        return [f"snapshots left in {self.namespace}: {[s.key for s in left]}"] if left else []

    def shim_sockets(self) -> list[Path]:
        """Socket files of the shims of bundles still present: the address in ``address``/``bootstrap.json``,
        plus upstream's computed names (sha256 of ``<grpc address>/<ns>/<id>``, and 2.x's ``.../debug``)."""
        found: set[Path] = set()
        for bundle in sorted((self.state / "io.containerd.runtime.v2.task" / self.namespace).glob("*")):
            address = ""
            if (bundle / "bootstrap.json").exists():
                address = json.loads((bundle / "bootstrap.json").read_text()).get("address", "")
            elif (bundle / "address").exists():
                address = (bundle / "address").read_text()
            if address.startswith("unix://"):
                found.add(Path(address[len("unix://"):]))
            found.update(self.computed_shim_sockets(bundle.name))
        return sorted(p for p in found if p.exists())

    def computed_shim_sockets(self, group_id: str) -> tuple[Path, Path]:
        """Upstream's socket names for a shim of grouping id ``group_id`` (containerd ``pkg/shim/util_unix.go`` ``SocketAddress`` at v1.6.20), and 2.x's debug one."""
        base = f"{self.address}/{self.namespace}/{group_id}"
        return tuple(Path("/run/containerd/s") / hashlib.sha256(n.encode()).hexdigest() for n in (base, base + "/debug"))

    def leftovers(self) -> list[str]:
        """What this instance left behind after ``stop``: shims, container processes, mounts, runc state."""
        found = []
        for p in procs.shims_of(self.address):
            found.append(f"shim process {p.pid} still running: {' '.join(p.argv)}")
        for p in procs.in_namespace_cgroup(self.namespace):
            found.append(f"process {p.pid} still in cgroup /{self.namespace}/: {' '.join(p.argv)}")
        for m in procs.mounts_under(self.root, self.run_dir):
            if not (self.state_size and m == str(self.state)):  # our own tmpfs, unmounted by teardown
                found.append(f"mount left: {m}")
        for root in self.runtime_roots:
            if root.exists() and any(root.iterdir()):
                found.append(f"{root.parent.name} state left in {root}: {sorted(os.listdir(root))}")
        return found

    def teardown(self) -> list[str]:
        """Clean everything up; returns the problems seen (empty = clean).  Always leaves nothing running."""
        problems: list[str] = []
        if self.pid is not None:
            try:
                problems += self.remove_namespace_contents()
            except ContainerdError as exc:
                problems.append(str(exc))
        self.stop()
        # A shim told to shut down (or whose last task was just deleted) exits on its own a moment later;
        # only one still there after a grace period is a leak.
        deadline = time.monotonic() + 5
        while procs.shims_of(self.address) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.leftovers()
        problems += left
        if left:  # force: kill what is ours, unmount, so later tests start clean
            procs.kill_all(procs.shims_of(self.address) + procs.in_namespace_cgroup(self.namespace))
            problems += procs.unmount(procs.mounts_under(self.root, self.run_dir))
        for sock in self.shim_sockets():  # a killed shim cannot unlink its socket
            problems.append(f"shim socket left: {sock}")
            sock.unlink(missing_ok=True)
        for root in self.runtime_roots:
            if root.exists():
                shutil.rmtree(root, ignore_errors=True)
        problems += procs.remove_cgroups(self.namespace)
        if self.state_size and str(self.state) in procs.mounts_under(self.state):  # not if force-cleaned above
            problems += procs.unmount([str(self.state)])
        for d in (self.root, self.run_dir):
            if d.exists() and not procs.mounts_under(d):
                shutil.rmtree(d, ignore_errors=True)
        return problems
