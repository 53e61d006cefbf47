"""binary:// logging (containerd ``pkg/process/io.go`` ``NewBinaryIO`` at v1.6.20) with a real logger program, spawned through a Spawner.

`PosixSpawner` stands in for the daemon's reaper-backed spawner: posix_spawn with fds moved to 3, 4, 5 and
exits collected by polling waitpid on that one pid (no other reaper runs in these tests).
The logger is a small Python script: it records argv, its initial environment and its open fds, signals
readiness on fd 5, then copies fd 3 and fd 4 to files.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import sys

import pytest
import trio

from shim.io import LoggerStartError, ProcessIO, StdioConfig
from shim.io import logger as logger_mod
from tests.trio.test_io_support import TIMEOUT, Container, no_fd_leaks, write_all  # noqa: F401
from tests.trio.test_io_terminal import hand_over_master

LOGGER = f"""#!{sys.executable}
import json, os, signal, sys, threading, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
d = args["dir"]
if args.get("ignore_term") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
env = dict(kv.split("=", 1) for kv in open("/proc/self/environ").read().split("\\0") if kv)
def link(f):
    try:
        return os.readlink("/proc/self/fd/" + f)
    except OSError:  # listdir's own fd, gone by now
        return None
fds = {{int(f): link(f) for f in os.listdir("/proc/self/fd")}}
info = {{"argv": sys.argv, "env": env, "fds": {{f: t for f, t in fds.items() if t is not None}}}}
json.dump(info, open(d + "/info.json", "w"))
if args.get("exit_early") == "1":
    sys.exit(3)
time.sleep(float(args.get("delay", "0")))
open(d + "/ready", "w").close()
os.write(5, b"R")
os.close(5)
def copy(fd, name):
    with open(d + "/" + name, "wb") as f:
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            f.write(b)
    os.rename(d + "/" + name, d + "/" + name + ".done")
ts = [threading.Thread(target=copy, args=(3, "stdout")), threading.Thread(target=copy, args=(4, "stderr"))]
for t in ts: t.start()
for t in ts: t.join()
if args.get("linger") == "1":
    time.sleep(3600)
"""


class PollChild:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None

    async def wait(self) -> int:
        while self.status is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(st)
                self.status = 128 - code if code < 0 else code
            else:
                await trio.sleep(0.01)
        return self.status

    def signal(self, sig: int) -> None:
        if self.status is None:
            os.kill(self.pid, sig)


class PosixSpawner:
    def __init__(self) -> None:
        self.children: list[PollChild] = []

    async def spawn(self, argv, *, env, extra_fds) -> PollChild:  # type: ignore[no-untyped-def]
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in extra_fds]  # never clobber a source
        try:
            # pytest's process holds inheritable fds of its own; a logger must see only 0-5
            inheritable = [fd for fd in map(int, os.listdir("/proc/self/fd")) if fd > 2 and _inheritable(fd)]
            actions = [(os.POSIX_SPAWN_CLOSE, fd) for fd in inheritable if fd not in high]
            actions += [(os.POSIX_SPAWN_OPEN, i, os.devnull, os.O_RDWR, 0) for i in range(3)]
            actions += [(os.POSIX_SPAWN_DUP2, fd, 3 + i) for i, fd in enumerate(high)]
            pid = os.posix_spawn(argv[0], list(argv), dict(env), file_actions=actions)
        finally:
            for fd in high:
                os.close(fd)
        self.children.append(PollChild(pid))
        return self.children[-1]


def _inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False


@pytest.fixture
def logger_script(tmp_path) -> str:
    path = tmp_path / "logger.py"
    path.write_text(LOGGER)
    path.chmod(0o755)
    return str(path)


async def until_exists(path: str) -> None:
    while not os.path.exists(path):
        await trio.sleep(0.01)


async def test_logger_gets_argv_env_fds_and_the_output(tmp_path, logger_script, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        d = str(tmp_path)
        uri = f"binary://{logger_script}?dir={d}&delay=0.3"
        spawner = PosixSpawner()
        pio = await ProcessIO.prepare(StdioConfig("", uri, uri), container_id="c1", namespace="ns1",
                                      spawner=spawner)
        assert os.path.exists(f"{d}/ready")  # prepare returned only after the readiness byte
        info = json.load(open(f"{d}/info.json"))
        assert info["argv"] == [logger_script, "dir", d, "delay", "0.3"]
        assert info["env"] == {"CONTAINER_ID": "c1", "CONTAINER_NAMESPACE": "ns1"}
        fds = {int(k): v for k, v in info["fds"].items()}
        assert sorted(fds) == [0, 1, 2, 3, 4, 5]
        assert [fds[i] for i in (0, 1, 2)] == ["/dev/null"] * 3
        assert all(fds[i].startswith("pipe:") for i in (3, 4, 5)) and len({fds[3], fds[4], fds[5]}) == 3
        assert pio.runtime_stdio[0] is None and None not in pio.runtime_stdio[1:]
        box = Container(pio)
        await pio.start(nursery)
        await write_all(box.stdout, b"out" * 100_000)
        await write_all(box.stderr, b"err\n")
        box.close()
        assert await pio.drain(1)  # nothing to copy in the shim: the logger reads the pipes itself
        await until_exists(f"{d}/stdout.done")
        await until_exists(f"{d}/stderr.done")
        assert open(f"{d}/stdout.done", "rb").read() == b"out" * 100_000
        assert open(f"{d}/stderr.done", "rb").read() == b"err\n"
        await pio.aclose()
        assert spawner.children[0].status is not None  # stopped and reaped


async def test_logger_ignoring_sigterm_is_killed(tmp_path, logger_script, nursery, monkeypatch) -> None:
    monkeypatch.setattr(logger_mod, "TERM_GRACE", 0.5)
    with trio.fail_after(TIMEOUT):
        uri = f"binary://{logger_script}?dir={tmp_path}&ignore_term=1&linger=1"
        spawner = PosixSpawner()
        pio = await ProcessIO.prepare(StdioConfig("", uri, uri), container_id="c1", namespace="ns",
                                      spawner=spawner)
        box = Container(pio)
        await pio.start(nursery)
        box.close()
        with trio.fail_after(3):
            await pio.aclose()
        assert spawner.children[0].status == 128 + signal.SIGKILL


async def test_logger_exiting_before_ready_counts_as_ready(tmp_path, logger_script, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        uri = f"binary://{logger_script}?dir={tmp_path}&exit_early=1"
        spawner = PosixSpawner()
        pio = await ProcessIO.prepare(StdioConfig("", uri, ""), container_id="c1", namespace="ns",
                                      spawner=spawner)
        assert await spawner.children[0].wait() == 3
        await pio.aclose()


async def test_cancelled_readiness_wait_stops_the_logger(tmp_path, logger_script, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        uri = f"binary://{logger_script}?dir={tmp_path}&delay=60"
        spawner = PosixSpawner()
        with trio.move_on_after(0.5) as scope:
            await ProcessIO.prepare(StdioConfig("", uri, ""), container_id="c1", namespace="ns", spawner=spawner)
        assert scope.cancelled_caught
        assert spawner.children[0].status == 128 + signal.SIGTERM


async def test_missing_logger_binary(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        uri = f"binary://{tmp_path}/no-such-logger"
        with pytest.raises(LoggerStartError, match="no-such-logger"):
            await ProcessIO.prepare(StdioConfig("", uri, ""), container_id="c1", namespace="ns",
                                    spawner=PosixSpawner())


async def test_terminal_output_to_a_logger(tmp_path, logger_script, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        d = str(tmp_path)
        uri = f"binary://{logger_script}?dir={d}"
        spawner = PosixSpawner()
        pio = await ProcessIO.prepare(StdioConfig("", uri, uri, True), container_id="c1", namespace="ns",
                                      spawner=spawner)
        await until_exists(f"{d}/stderr.done")  # fd 4 is an unused pipe with no writer: EOF at once
        slave = hand_over_master(pio.console_socket_path)
        await pio.start(nursery)
        os.write(slave, b"from the tty\n")
        os.close(slave)
        assert await pio.drain(5)
        await until_exists(f"{d}/stdout.done")  # the shim closed the logger's pipe after the tty's EOF
        assert open(f"{d}/stdout.done", "rb").read() == b"from the tty\r\n"
        await pio.aclose()
