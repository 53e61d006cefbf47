"""Network counters of another process's namespace (shim/runc/cgroups/net.py) on the real kernel: a process in a
fresh network namespace with a dummy and a veth interface, checked against /proc/<pid>/net/dev (the kernel's
other view of the same counters), and the caller's own namespace, threads and fds left as they were."""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid

import pytest

from shim.runc.cgroups import net
from tests.prereq import unavailable


def _netdev(pid: int) -> dict[str, list[int]]:
    out = {}
    for line in open(f"/proc/{pid}/net/dev").read().splitlines()[2:]:
        name, _, rest = line.partition(":")
        out[name.strip()] = [int(x) for x in rest.split()]
    return out


def _ns_of_all_threads() -> set[str]:
    return {os.readlink(f"/proc/self/task/{t}/ns/net") for t in os.listdir("/proc/self/task")}


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def netns_process():
    """A sleeping process in its own network namespace holding two veth ends, `d0` and `eth0`."""
    if os.geteuid() != 0:
        unavailable("another network namespace needs root")
    proc = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    host_if = f"vt{uuid.uuid4().hex[:8]}"
    try:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare never entered its namespace"
            time.sleep(0.01)
        pid = str(proc.pid)
        ip = lambda *a: subprocess.run(["ip", *a], check=True, capture_output=True, timeout=30)  # noqa: E731
        ip("link", "add", f"u{host_if}", "type", "veth", "peer", "name", "d0", "netns", pid)
        ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", pid)
        for cmd in (["link", "set", "d0", "up"], ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"],
                    ["addr", "add", "169.254.77.2/30", "dev", "eth0"]):
            subprocess.run(["nsenter", "-t", pid, "-n", "ip", *cmd], check=True, capture_output=True, timeout=30)
        ip("addr", "add", "169.254.77.1/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(5):
                s.sendto(b"x" * 100, ("169.254.77.2", 9))
                time.sleep(0.02)
        yield proc.pid
    finally:
        for name in (host_if, f"u{host_if}"):
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=30)
        proc.kill()
        proc.wait()


def test_counters_of_the_other_namespace(netns_process):
    before_ns, before_threads, before_fds = _ns_of_all_threads(), threading.active_count(), _fds()
    assert not net.host_netns(netns_process)
    got = {i.name: i for i in net.interfaces(netns_process)}
    later = _netdev(netns_process)
    assert sorted(got) == ["d0", "eth0"]  # lo skipped; the shim's own interfaces are not there
    eth0 = got["eth0"]
    # /proc/net/dev columns: rx bytes packets errs drop fifo frame compressed multicast, tx bytes packets errs drop
    rx_b, rx_p, rx_e, rx_d, *_, tx_b, tx_p, tx_e, tx_d = later["eth0"][:12]
    assert eth0.rx_packets >= 5 and 0 < eth0.rx_bytes <= rx_b and eth0.rx_packets <= rx_p
    assert 0 < eth0.tx_packets <= tx_p and 0 < eth0.tx_bytes <= tx_b
    assert (eth0.rx_errors, eth0.rx_dropped, eth0.tx_errors) == (rx_e, rx_d, tx_e)
    # a joined thread's /proc/self/task entry can outlive join() by a moment (the kernel wakes the joiner
    # before it releases the task): wait for it to go, a thread that stays in the other namespace still fails
    deadline = time.monotonic() + 2
    while _ns_of_all_threads() != before_ns and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _ns_of_all_threads() == before_ns
    assert threading.active_count() == before_threads
    assert _fds() == before_fds


def test_host_namespace_and_dead_process():
    assert net.host_netns(os.getpid())
    before = _fds()
    dead = subprocess.Popen(["true"])
    dead.wait()
    with pytest.raises(OSError):
        net.interfaces(dead.pid)
    with pytest.raises(OSError):
        net.host_netns(dead.pid)
    assert _fds() == before


def test_pyroute2_loads_with_the_first_dump_not_with_the_daemon() -> None:
    """A daemon that never reports network counters never pays for pyroute2 (asyncio, sqlite3, ...); the fork
    server's warm-up loads it once for every daemon it forks."""
    import subprocess
    import sys

    code = ("import sys; import shim.runc.service, shim.runc.task.tasks, shim.daemon; "
            "assert 'pyroute2' not in sys.modules and 'asyncio' not in sys.modules, 'loaded with the daemon'; "
            "from shim.runc.manager import MANAGER; MANAGER.warm_up(); assert 'pyroute2.netlink.rtnl.ifinfmsg' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
