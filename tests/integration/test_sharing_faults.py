"""Isolation inside a shared daemon: a fault while serving one container affects only that container.

With pyshim.toml ``sharing = "namespace"`` one daemon serves the tasks of unrelated containers. Every test here
starts its own private containerd and puts three healthy containers and one faulty container into ONE daemon
(the same pid, ``PrivateContainerd.shim_daemon``), injects one fault into the faulty one, and proves with real containerd, runc and
ctr that:
- the faulty container gets a clear error (ctr's stderr names the injected fault, or the runtime's exit status)
  and can still be removed: its task and container are deleted, and no process, runc state, bundle, mount or
  daemon file descriptor of it is left;
- the healthy containers, before the fault, while it lasts and after it, stay RUNNING, answer ``ctr task exec``
  with their own exit codes and byte-exact output (``seq 1 20000``), and report their own exit codes (a TERM
  trap each) when killed at the end; a new foreground container still runs in the same daemon;
- the daemon is the same process all along: it did not crash, and no other daemon was started.

The faults (tests/plugins/pyshim-faults picks its container by the annotation io.pyshim.test.fault):
- a raising backend: a plain RuntimeError (a plugin's bug, not a BackendError) from start, exec or kill;
- a killed runtime call: the runc of the faulty container's create or exec is a wrapper that sleeps, SIGKILLed
  while the daemon waits for it; meanwhile the others' execs are served promptly (timed);
- a hung runtime call: the faulty container's exec never returns; its client is killed, the container killed and
  deleted, while the others' execs are served promptly (timed);
- a broken stdio FIFO: the foreground ``ctr run`` reading a container that floods stdout is SIGKILLed; the
  daemon does not spin on the dead reader, and the others stream on;
- bad requests: straight to the daemon's socket, requests naming the faulty container with an invalid exec
  spec, an unknown exec, a signal no kernel has, an undecodable payload, an unknown method, and bytes that are
  no ttrpc at all: each fails alone with the code containerd expects;
- hung creates: as many faulty containers as the daemon creates at once (CREATE_LIMIT) hang in create; another
  container must still be created in the same daemon meanwhile.
At the end of each test the daemon, left without tasks, must exit after its idle_timeout: nothing of the faulty
container holds it.

Two of these failed until the daemon was fixed, and guard it now: a Create that fails (killed runtime call,
hung create cancelled) frees its reservation at once (shim/occupancy.py), so its place is free and the daemon
leaves after its last task; and a hung create holds the daemon's create limiter for at most CREATE_SLOT_HOLD
seconds (shim/runc/task/tasks.py), so CREATE_LIMIT hung creates cannot block every other container's create.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from google.protobuf import any_pb2, empty_pb2

from protos import task_v2_pb2 as pb
from shim.runc.task.tasks import CREATE_LIMIT
from tests.prereq import unavailable
from ttrpc import blocking
from ttrpc.status import Code, StatusError

from .conftest import _versions, import_image, new_id
from .e2e_helpers import (FLOOD, PYSHIM, cgroup_pids, cleanup, ctr_bytes, deleted_status, finish,
                          flood_then_kill_reader, idle_cpu, start, task_row, trap_init, wait_status, wait_until)
from .harness import ctrout, procs
from .harness.daemon import PrivateContainerd
from .harness.runtime_wrapper import RuntimeWrapper
from .test_sharing import started_daemons

# On 1.6.20 and 2.1.9 (the isolation is the daemon's, not containerd's: the oldest and a 2.x version).
pytestmark = pytest.mark.parametrize("containerd_version", [v for v in _versions() if v in ("1.6.20", "2.1.9")],
                                     indirect=True, ids=lambda v: f"containerd-{v}")

DIST = "pyshim-faults"
FAULT = "io.pyshim.test.fault"
HEALTHY = 3
IDLE = 2.0         # idle_timeout: a daemon without tasks exits after it
PROMPT = 5.0       # seconds: one healthy ctr exec "served promptly", ctr's own start included, on a loaded 2-core host
LINES = 20000
SEQ = "".join(f"{i}\n" for i in range(1, LINES + 1)).encode()


def daemon_fds(pid: int, text: str) -> list[str]:
    """The targets of ``pid``'s open descriptors above stdio that contain ``text`` (a container id: its FIFOs,
    its bundle). Stdio is left out: a daemon's fd 2 is, for life, the log FIFO of the container that started it
    (shim/daemon_log.py)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if int(fd) <= 2:
            continue
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if text in target:
            found.append(target)
    return found


@dataclass
class Shared:
    """One private containerd whose pyshim daemon is shared by ``healthy`` containers and a faulty one."""

    c: PrivateContainerd
    ref: str
    tmp: Path
    cfg: Path | None = None                                # the pyshim.toml every container is run with
    healthy: dict[str, int] = field(default_factory=dict)  # id -> the exit code of its TERM trap
    owned: list[str] = field(default_factory=list)         # every container id made here (cleanup)
    daemon: int = 0
    daemons_started: int = 0
    checks: int = 0

    def configure(self, runc_binary: str = "", max_tasks: int = 32) -> None:
        text = (f'sharing = "namespace"\nmax_tasks_per_daemon = {max_tasks}\nidle_timeout = {IDLE}\n'
                'backend = "faulty"\n[backends.faulty]\ntype = "faults"\n')
        if runc_binary:
            text += f'[backends.faulty.runc]\nbinary_name = "{runc_binary}"\n'
        self.cfg = self.tmp / "faults.toml"
        self.cfg.write_text(text)

    def run_argv(self, cid: str, *argv: str, fault: str = "", detach: bool = True) -> tuple[str, ...]:
        self.owned.append(cid)
        return ("run", *(("-d",) if detach else ("--rm",)), "--runtime", PYSHIM, "--runtime-config-path",
                str(self.cfg), *(("--annotation", f"{FAULT}={fault}") if fault else ()), self.ref, cid, *argv)

    def run_d(self, cid: str, *argv: str, fault: str = "") -> subprocess.CompletedProcess:
        return finish(start(self.c, *self.run_argv(cid, *argv, fault=fault)), timeout=60)

    def start_healthy(self) -> None:
        """HEALTHY containers, one daemon; then the first check."""
        if self.cfg is None:
            self.configure()
        for i in range(HEALTHY):
            cid = new_id(f"ok{i}")
            res = self.run_d(cid, *trap_init(41 + i))
            assert res.returncode == 0, (cid, res.stderr)
            wait_status(self.c, cid, "RUNNING")
            self.healthy[cid] = 41 + i
        daemons = {cid: self.c.shim_daemon(cid) for cid in self.healthy}
        assert len(set(daemons.values())) == 1, daemons
        self.daemon = next(iter(daemons.values()))
        self.daemons_started = started_daemons(self.c)
        self.check_healthy()

    def in_daemon(self, cid: str) -> None:
        """``cid`` is served by the shared daemon."""
        assert self.c.shim_daemon(cid) == self.daemon, cid

    def exec_timed(self, cid: str, code: int) -> float:
        """One ``ctr task exec`` in ``cid`` streaming LINES lines, then exiting ``code``; returns its seconds."""
        for _ in range(2):  # once more after ctr's own race (code right, nothing printed: harness/churn.py)
            self.checks += 1
            began = time.monotonic()
            out = ctr_bytes(self.c, "task", "exec", "--exec-id", f"chk{self.checks}", cid, "/bin/sh", "-c",
                            f"seq 1 {LINES}; exit {code}")
            took = time.monotonic() - began
            if (out.returncode, out.stdout) != (code, b""):
                break
        assert out.returncode == code, (cid, out.returncode, out.stderr)
        assert out.stdout == SEQ, (cid, len(out.stdout), out.stdout[-100:])
        return took

    def check_healthy(self, prompt: bool = False) -> None:
        """The daemon is the same process; each healthy container is RUNNING in it, and an exec in each streams
        its own output and returns its own exit code (within PROMPT seconds each when ``prompt``)."""
        assert procs.alive(self.daemon), f"the shared daemon {self.daemon} is gone"
        for i, cid in enumerate(self.healthy):
            row = task_row(self.c, cid)
            assert row is not None and row.status == "RUNNING", (cid, row)
            self.in_daemon(cid)
            took = self.exec_timed(cid, 10 + i)
            if prompt:
                assert took < PROMPT, f"exec in {cid} took {took:.1f} s while the fault was in progress"

    def foreground(self) -> None:
        """A new foreground container streams and exits with its code, in the same daemon (none was started)."""
        for _ in range(2):  # once more after ctr's own race, as exec_timed
            cid = new_id("fg")
            out = ctr_bytes(self.c, *self.run_argv(cid, "/bin/sh", "-c", f"seq 1 {LINES}; exit 3", detach=False),
                            timeout=60)
            if (out.returncode, out.stdout) != (3, b""):
                break
        assert (out.returncode, out.stdout) == (3, SEQ), (out.returncode, out.stderr)
        assert started_daemons(self.c) == self.daemons_started, \
            f"another daemon was started for {cid}: the shared daemon {self.daemon} refused it (full?)"

    def run_faulty(self, code: int, fault: str = "", cid: str = "") -> str:
        """A faulty container (init: ``trap_init(code)``) RUNNING in the shared daemon; returns its id."""
        cid = cid or new_id("bad")
        res = self.run_d(cid, *trap_init(code), fault=fault)
        assert res.returncode == 0, res.stderr
        wait_status(self.c, cid, "RUNNING")
        self.in_daemon(cid)
        return cid

    def wait_hang(self, cid: str, call: str) -> None:
        """Until the faulty container's ``call`` hangs in the backend (the plugin logs it into containerd's log)."""
        line = f"{FAULT}=hang:{call} in container {cid} hangs"
        wait_until(f"{cid}'s {call} to hang", lambda: line in self.c.log_path.read_text(errors="replace"), 60)

    def end(self, cid: str, code: int, *kill: str) -> None:
        """``ctr task kill [kill...]`` the container, then ``remove`` it, expecting exit status ``code``."""
        self.c.ctr("task", "kill", *kill, cid)
        wait_status(self.c, cid, "STOPPED")
        self.remove(cid, code)

    def remove(self, cid: str, code: int) -> None:
        """Delete the STOPPED task ``cid`` (ctr reports its exit status: ``code``) and its container,
        then check nothing of it is left."""
        res = self.c.ctr("task", "rm", cid, check=False, timeout=30)
        assert deleted_status(res) == code, (cid, res.returncode, res.stderr)
        self.c.ctr("container", "rm", cid, timeout=30)
        self.assert_gone(cid)

    def assert_gone(self, cid: str) -> None:
        """Nothing of ``cid`` is left: no task, container, process, runc state, bundle, mount, or descriptor of
        the shared daemon."""
        assert cid not in [t.id for t in ctrout.tasks(self.c.ctr("task", "ls").stdout)]
        assert cid not in self.c.ctr("container", "ls", "--quiet").stdout.split()
        assert not cgroup_pids(self.c.namespace, cid), cid
        assert not (self.c.runc_root / cid).exists(), f"runc state of {cid} left"
        bundle = self.c.bundle(cid)
        wait_until(f"{cid}'s bundle to go", lambda: not bundle.exists(), 15)
        assert not [m for m in procs.mounts_under(self.c.root, self.c.run_dir) if cid in m], cid
        wait_until(f"the daemon to close every descriptor of {cid}",
                   lambda: not daemon_fds(self.daemon, cid), 15)

    def after(self) -> None:
        """The fault is over: the healthy containers go on, take a new one, and end with their own codes."""
        self.check_healthy()
        self.foreground()
        self.check_healthy()
        assert procs.alive(self.daemon), f"the shared daemon {self.daemon} is gone"
        for cid in self.healthy:
            self.c.ctr("task", "kill", cid)  # SIGTERM: the trap exits with the container's own code
        for cid, code in self.healthy.items():
            wait_status(self.c, cid, "STOPPED")
            self.remove(cid, code)
        assert started_daemons(self.c) == self.daemons_started
        # nothing of the faulty container holds the daemon either: without tasks it leaves after idle_timeout
        wait_until(f"the shared daemon {self.daemon} to exit {IDLE} s after its last task",
                   lambda: not procs.alive(self.daemon), IDLE + 15)


@pytest.fixture
def faults_installed() -> None:
    try:
        metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        unavailable(f"{DIST} is not installed in this venv (./install.sh --dev, as root, installs tests/plugins/{DIST})")


@pytest.fixture
def shared(containerd_factory, pyshim_binary, busybox_artifacts, faults_installed, tmp_path):
    c = containerd_factory()
    s = Shared(c, import_image(c, busybox_artifacts), tmp_path)
    try:
        yield s
    finally:
        cleanup(c, *s.owned)


# -- a raising backend ----------------------------------------------------------------------------------------

def test_a_raising_start_fails_only_its_container(shared):
    s = shared
    s.start_healthy()
    bad = new_id("bad")
    res = s.run_d(bad, *trap_init(50), fault="raise:start")
    assert res.returncode != 0
    assert f"injected fault raise:start in container {bad}" in res.stderr.decode(), res.stderr
    row = task_row(s.c, bad)
    assert row is not None and row.status == "CREATED", row  # created, never started
    s.in_daemon(bad)
    s.check_healthy()
    s.end(bad, 137, "--signal", "SIGKILL")  # a created task is killed, then deleted
    s.after()


def test_a_raising_exec_fails_only_that_exec(shared):
    s = shared
    s.start_healthy()
    bad = s.run_faulty(51, fault="raise:exec")
    for attempt in range(2):
        out = ctr_bytes(s.c, "task", "exec", "--exec-id", f"x{attempt}", bad, "/bin/echo", "never")
        assert out.returncode != 0 and out.stdout == b"", out
        assert f"injected fault raise:exec in container {bad}" in out.stderr.decode(), out.stderr
        s.check_healthy()
    infos = [p.info for p in ctrout.task_processes(s.c.ctr("task", "ps", bad).stdout)]
    assert not [i for i in infos if "x0" in i or "x1" in i], infos  # the failed execs are gone
    s.end(bad, 51)
    s.after()


def test_a_raising_kill_fails_only_that_kill(shared):
    s = shared
    s.start_healthy()
    bad = s.run_faulty(52, fault="raise:kill")
    for args in ((), ("--all",), ("--signal", "SIGKILL")):
        out = s.c.ctr("task", "kill", *args, bad, check=False)
        assert out.returncode != 0, out
        assert f"injected fault raise:kill in container {bad}" in out.stderr, out.stderr
        assert task_row(s.c, bad).status == "RUNNING"
        s.check_healthy()
    # the container's own processes can still end it: its init's trap exits 52
    out = ctr_bytes(s.c, "task", "exec", "--exec-id", "term", bad, "/bin/sh", "-c", "kill -TERM 1")
    assert out.returncode == 0, out.stderr
    wait_status(s.c, bad, "STOPPED")
    s.remove(bad, 52)
    s.after()


# -- a killed runtime call ------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["create", "exec"])
def test_a_killed_runtime_call_fails_only_its_container(shared, op):
    s = shared
    bad = new_id("bad")
    wrapper = RuntimeWrapper(s.tmp / "wrapper", bad, "sleep")
    wrapper.arm(op)
    # the shard has room for exactly the healthy ones and the faulty one: once the faulty one is gone, its place
    # must be free again, for the foreground container of ``after`` (else that one starts another daemon)
    s.configure(runc_binary=str(wrapper.path), max_tasks=HEALTHY + 1)
    s.start_healthy()
    if op == "create":
        client = start(s.c, *s.run_argv(bad, *trap_init(53)))
    else:
        s.run_faulty(53, cid=bad)
        client = start(s.c, "task", "exec", "--exec-id", "killed", bad, "/bin/echo", "never")
    hung = wrapper.wait_faulted(still=lambda: client.poll() is None)
    s.check_healthy(prompt=True)      # served while the daemon waits for the faulty container's runtime call
    assert client.poll() is None and procs.alive(hung), "the runtime call ended before the others were checked"
    os.kill(hung, signal.SIGKILL)
    res = finish(client, timeout=60)
    assert res.returncode != 0 and res.stdout == b"", res
    assert "exit status 137" in res.stderr.decode(), res.stderr
    if op == "create":
        wait_until(f"{bad}'s task to go", lambda: task_row(s.c, bad) is None, 15)
        s.c.ctr("container", "rm", bad, check=False)
        s.assert_gone(bad)
    else:
        assert task_row(s.c, bad).status == "RUNNING"
        out = ctr_bytes(s.c, "task", "exec", "--exec-id", "again", bad, "/bin/echo", "again")
        assert (out.returncode, out.stdout) == (0, b"again\n"), out.stderr  # the container itself goes on
        s.end(bad, 53)
    s.after()


# -- a hung runtime call --------------------------------------------------------------------------------------

def test_a_hung_exec_holds_only_its_container(shared):
    s = shared
    s.start_healthy()
    bad = s.run_faulty(54, fault="hang:exec")
    client = start(s.c, "task", "exec", "--exec-id", "hung", bad, "/bin/echo", "never")
    s.wait_hang(bad, "exec")
    assert client.poll() is None, finish(client)
    s.check_healthy(prompt=True)     # served while the faulty container's exec hangs
    s.foreground()
    assert client.poll() is None, finish(client)  # ... the hang lasted throughout
    client.kill()
    finish(client)
    s.check_healthy(prompt=True)
    began = time.monotonic()
    s.end(bad, 54)                               # its init is not held by the hung exec
    assert time.monotonic() - began < 30
    s.after()


# -- a broken stdio FIFO --------------------------------------------------------------------------------------

def test_a_dead_stdio_reader_affects_only_its_container(shared):
    s = shared
    s.start_healthy()
    bad = new_id("bad")
    fifo_dir = s.tmp / "fifos"
    fifo_dir.mkdir()
    argv = list(s.run_argv(bad, *FLOOD, detach=False))[1:]  # without "run"
    argv[argv.index("--rm") + 1:argv.index("--rm") + 1] = ["--fifo-dir", str(fifo_dir)]

    def streaming() -> None:
        s.in_daemon(bad)
        assert any(bad in t and "stdout" in t for t in daemon_fds(s.daemon, bad))
    flood_then_kill_reader(s.c, tuple(argv), streaming)
    assert task_row(s.c, bad).status == "RUNNING"  # the container goes on (blocked on its full pipe)
    spent = idle_cpu(s.daemon)
    assert spent < 1.0, f"the daemon spent {spent:.2f} s of CPU in 3 s with a dead FIFO reader"
    s.check_healthy(prompt=True)
    s.foreground()
    s.end(bad, 137, "--signal", "SIGKILL")      # its exit status is still reported
    s.after()


# -- hung creates ---------------------------------------------------------------------------------------------

def test_hung_creates_hold_only_their_containers(shared):
    """As many hung creates as the daemon runs at once (shim/runc/task/tasks.py CREATE_LIMIT) must not keep
    another container from being created in the same daemon."""
    s = shared
    s.start_healthy()
    hung: dict[str, subprocess.Popen] = {}
    late: subprocess.Popen | None = None
    try:
        for _ in range(CREATE_LIMIT):
            bad = new_id("bad")
            hung[bad] = start(s.c, *s.run_argv(bad, *trap_init(55), fault="hang:create"))
        for bad in hung:
            s.wait_hang(bad, "create")
        s.check_healthy(prompt=True)
        fresh = new_id("late")
        began = time.monotonic()
        late = start(s.c, *s.run_argv(fresh, *trap_init(56)))
        try:
            res = finish(late, timeout=30)
        except subprocess.TimeoutExpired:
            res = None
        assert res is not None, (f"creating {fresh} in the shared daemon did not end within 30 s: it waits behind "
                                 f"the {CREATE_LIMIT} hung creates of other containers")
        assert res.returncode == 0 and time.monotonic() - began < PROMPT * 2, res
        s.healthy[fresh] = 56
        s.check_healthy(prompt=True)
        assert all(p.poll() is None for p in hung.values())  # the hangs lasted throughout
    finally:
        for p in hung.values():
            p.kill()
            finish(p)
        if late is not None and late.poll() is None:
            finish(late, timeout=60)
    for bad in hung:
        wait_until(f"{bad}'s task to go", lambda bad=bad: task_row(s.c, bad) is None, 30)
        s.c.ctr("container", "rm", bad, check=False)
        s.assert_gone(bad)
    s.after()


# -- bad requests ---------------------------------------------------------------------------------------------

class _Raw:
    """A request whose bytes are given as they are (an undecodable payload)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def SerializeToString(self) -> bytes:  # noqa: N802 - the protobuf Message interface blocking.call uses
        return self._data


def test_bad_requests_fail_alone(shared):
    """Requests a client should never send, straight to the shared daemon's socket: each fails on its own
    (with the code containerd expects), and neither the faulty container they name nor the others notice."""
    s = shared
    s.start_healthy()
    bad = s.run_faulty(57)
    path = s.c.shim_endpoint(bad)[0].removeprefix("unix://")
    task = "containerd.task.v2.Task"
    junk = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Process", value=b"{not json")
    calls = [
        ("Exec", pb.ExecProcessRequest(id=bad, exec_id="junk", spec=junk), Code.INVALID_ARGUMENT),
        ("Start", pb.StartRequest(id=bad, exec_id="junk"), Code.NOT_FOUND),
        ("Delete", pb.DeleteRequest(id=bad, exec_id="junk"), Code.NOT_FOUND),
        ("State", pb.StateRequest(id=new_id("nobody")), Code.NOT_FOUND),
        ("Create", pb.CreateTaskRequest(id=new_id("nobundle"), bundle=str(s.tmp / "no-such-bundle")),
         Code.INVALID_ARGUMENT),
        ("Exec", _Raw(b"\xff\xff\xff\xff"), Code.INTERNAL),
        ("NoSuchMethod", pb.StateRequest(id=bad), Code.UNIMPLEMENTED),
    ]
    for method, request, code in calls:
        with pytest.raises(StatusError) as failed:
            blocking.call(path, task, method, request, empty_pb2.Empty, timeout=PROMPT)
        assert failed.value.code == code, (method, failed.value.code, failed.value)
    with pytest.raises(StatusError):  # a signal no kernel has: the runtime refuses it, the container runs on
        blocking.call(path, task, "Kill", pb.KillRequest(id=bad, signal=1000), empty_pb2.Empty, timeout=PROMPT)
    for garbage in (b"\x7f\xff\xff\xff\x00\x00\x00\x01\x01\x00" + b"x" * 64, os.urandom(4096)):
        with socket.socket(socket.AF_UNIX) as sock:   # bytes that are no ttrpc at all, then gone
            sock.connect(path)
            sock.sendall(garbage)
    assert task_row(s.c, bad).status == "RUNNING"
    s.check_healthy(prompt=True)
    out = ctr_bytes(s.c, "task", "exec", "--exec-id", "fine", bad, "/bin/sh", "-c", f"seq 1 {LINES}; exit 9")
    assert (out.returncode, out.stdout) == (9, SEQ), out.stderr
    s.end(bad, 57)
    s.after()
