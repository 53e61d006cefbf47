"""A fork server directory seen from a test: its server, zygotes and log; a raw ttrpc call; a request.

Rules:
- Tests give every fork server a private directory (``private_dir``) under /run/pyshim-test, so they never
  meet the machine's /run/pyshim servers, and only ever signal processes whose command line names that
  directory (``pyshim-forkserver <dir>``, ``pyshim-forkserver-zygote <dir>``).
- ``FsDir.stop`` ends the server (SIGTERM), checks its zygotes went with it and returns what was left
  (killed, and reported so the test fails).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from google.protobuf import empty_pb2

from protos import task_v2_pb2
from shim.forkserver import client as forkserver_client
from shim.forkserver import protocol as proto
from shim.runc.manager import MANAGER
from ttrpc import blocking

from .harness import procs

BASE = Path("/run/pyshim-test")


def private_dir() -> Path:
    d = BASE / f"fs-{uuid.uuid4().hex[:8]}"
    d.mkdir(parents=True, mode=0o700)
    return d


def wait_for(what: str, check, timeout: float = 60.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class FsDir:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _titled(self, name: str) -> list[int]:
        title = (name, str(self.directory))
        return [p.pid for p in procs.all_processes() if p.argv[:2] == title]

    def servers(self) -> list[int]:
        return self._titled("pyshim-forkserver")

    def zygotes(self) -> list[int]:
        return self._titled("pyshim-forkserver-zygote")

    def files(self, suffix: str) -> list[Path]:
        return sorted(self.directory.glob(f"fs-*.{suffix}"))

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.files("log"))

    def daemons(self) -> dict[int, tuple[str, str]]:
        """pid -> (namespace, id) of every daemon a zygote of this directory became (from the server log)."""
        found = {}
        for line in self.log().splitlines():
            words = line.split()
            if len(words) >= 6 and words[2] == "daemon":
                found[int(words[3])] = (words[4], words[5])
        return found

    def server_of(self, daemon: int) -> int:
        """The live server whose log names ``daemon`` as one of its daemons (0 if none): a directory may hold one
        server per manager (protocol.key), e.g. the example shims' beside pyshim's."""
        for log in self.files("log"):
            words = (line.split() for line in log.read_text(errors="replace").splitlines())
            if any(len(w) >= 4 and w[2] == "daemon" and w[3] == str(daemon) for w in words):
                try:
                    pid = int(log.with_suffix(".pid").read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    return 0
                return pid if pid in self.servers() else 0
        return 0

    def wait_serving(self, timeout: float = 60.0, zygotes: int = 1) -> int:
        """The server's pid once it serves with at least ``zygotes`` zygotes waiting."""
        def ready():
            servers = self.servers()
            if len(servers) == 1 and self.files("sock") and len(self.zygotes()) >= zygotes:
                return servers[0]
            return None
        return wait_for(f"a fork server serving in {self.directory}", ready, timeout)

    def stop(self, timeout: float = 15.0) -> list[str]:
        for pid in self.servers():
            os.kill(pid, signal.SIGTERM)
        try:
            wait_for("the fork server and its zygotes to exit", lambda: not self.servers() and not self.zygotes(),
                     timeout)
            return []
        except AssertionError:
            left = self.servers() + self.zygotes()
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            return [f"fork server processes left in {self.directory}: {left}"]

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def start_server(directory: Path, root: str, executable: str = sys.executable,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """Our own child: a fork server for the code at ``root``."""
    argv = [executable, "-P", "-m", "shim.forkserver", str(directory), MANAGER.forkserver,
            " " * forkserver_client.TITLE_SPACE]
    env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": root, **(env or {})}
    return subprocess.Popen(argv, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def daemon_request(cid: str, cwd: Path, env: dict[str, str] | None = None) -> proto.Request:
    env = dict(os.environ if env is None else env)
    return proto.Request(argv=("-namespace", "fs-test", "-id", cid, "-address", "/run/pyshim-test/none.sock"),
                         env=tuple(os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()),
                         cwd=os.fsencode(str(cwd)), umask=0o022, program=(sys.executable, "-m", "shim"))


def ttrpc_call(path: str, method: str, request, response_type):
    """One unary call of containerd.task.v2.Task on a fresh connection (Shutdown may close it unanswered)."""
    return blocking.call(path, "containerd.task.v2.Task", method, request, response_type)


def connect(path: str) -> task_v2_pb2.ConnectResponse:
    return ttrpc_call(path, "Connect", task_v2_pb2.ConnectRequest(id="x"), task_v2_pb2.ConnectResponse)


def shutdown(path: str) -> None:
    try:
        ttrpc_call(path, "Shutdown", task_v2_pb2.ShutdownRequest(id="x"), empty_pb2.Empty)
    except (ConnectionError, OSError):
        pass  # the daemon may close the connection as it exits
