"""Helpers of the Stats/OOM integration tests (test_stats_oom.py, test_stats_scale.py).

Rules:
- The container's cgroup is found from /proc/<init pid>/cgroup by hand, independently of shim/cgroups,
  so the test compares pyshim's numbers with files it located itself.
- ``veth_netns`` owns a network namespace with one veth pair (host end + ``eth0`` inside) and removes both,
  whatever happens; addresses are link-local /30s picked at random so parallel runs do not collide.
- ``metrics`` is ``ctr task metrics --format json``, parsed (Go's encoding/json of the cgroups structs:
  snake_case keys, zero values and nil messages omitted).
"""
from __future__ import annotations

import json
import random
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .harness.daemon import PrivateContainerd

CGROUP_ROOT = Path("/sys/fs/cgroup")


def unified_host() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def cgroup_dir(pid: int, controller: str) -> Path:
    """The directory of `pid`'s cgroup for a v1 controller, or its v2 group on a unified host."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, ctrls, path = line.split(":", 2)
        if unified_host():
            if hid == "0":
                return CGROUP_ROOT / path.lstrip("/")
        elif controller in ctrls.split(","):
            return CGROUP_ROOT / controller / path.lstrip("/")
    raise AssertionError(f"no {controller} cgroup for pid {pid}")


def read_int(path: Path) -> int:
    text = path.read_text().strip()
    return 2**64 - 1 if text == "max" else int(text)


def metrics(c: PrivateContainerd, cid: str) -> dict:
    return json.loads(c.ctr("task", "metrics", "--format", "json", cid).stdout)


def sections(m: dict, prefix: str = "") -> set[str]:
    """Dotted paths of every object-valued key: the messages present (deterministic, unlike zero leaves)."""
    out = set()
    for key, value in m.items():
        if isinstance(value, dict):
            out.add(prefix + key)
            out |= sections(value, prefix + key + ".")
    return out


@dataclass(frozen=True)
class Netns:
    name: str
    path: str
    host_if: str
    host_ip: str
    container_ip: str


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@contextmanager
def veth_netns(tag: str) -> Iterator[Netns]:
    a, b = random.randrange(1, 255), random.randrange(0, 64) * 4
    ns = Netns(f"pyshim-{tag}", f"/var/run/netns/pyshim-{tag}", f"vh{tag[-10:]}",
               f"169.254.{a}.{b + 1}", f"169.254.{a}.{b + 2}")
    try:
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.container_ip}/30", "dev", "eth0")
        _ip("-n", ns.name, "link", "set", "eth0", "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        _ip("link", "del", ns.host_if, check=False)
        _ip("netns", "del", ns.name, check=False)


def link_stats(ns: Netns, ifname: str = "eth0") -> dict:
    """{"rx": {bytes, packets, errors, dropped, ...}, "tx": {...}} of an interface inside `ns`."""
    out = json.loads(_ip("-n", ns.name, "-s", "-j", "link", "show", ifname).stdout)
    return out[0]["stats64"]


def send_udp(ns: Netns, count: int) -> None:
    """Datagrams from the host to the container's address (each answered by an ICMP port unreachable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(b"pyshim-stats-%d" % i, (ns.container_ip, 9))
            time.sleep(0.02)


def event_time(line: str) -> datetime:
    """The envelope timestamp at the start of a ``ctr events`` line (Go's time.Time String form)."""
    date, clock = line.split()[:2]
    whole, _, frac = clock.partition(".")
    micro = int((frac + "000000")[:6]) if frac else 0
    t = datetime.strptime(f"{date} {whole}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return t.replace(microsecond=micro)
