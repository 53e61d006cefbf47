"""Per-interface network counters of a container's network namespace, through pyroute2's netlink codec.

Rules:
- The shim's own threads never change namespace. A netlink socket belongs to the network namespace it was
  created in, so a dedicated short-lived thread enters the init's namespace (setns on /proc/<pid>/ns/net),
  creates the socket and ends: its namespace dies with it, so there is nothing to restore and nothing can
  leak into a reused worker thread. The dump then runs on the calling thread with that socket.
- pyroute2's message class `ifinfmsg` encodes the RTM_GETLINK dump and decodes the replies (name and
  IFLA_STATS64). pyroute2 is imported at the first dump, not with this module: importing it loads asyncio,
  sqlite3 and multiprocessing, about a third of a fresh daemon's memory (bench/README.md), which a daemon
  nobody asks for network counters (no Stats, or a host-network container) never needs. pyroute2's IPRoute is not used: it builds and tears down an asyncio loop per instance, several
  times this path's cost (bench/README.md).
- Loopback interfaces are skipped (IFF_LOOPBACK, read from the message header before decoding):
  traffic inside the container is not network usage; cAdvisor/kubelet and Docker's stats do the same.
- `host_netns(pid)` tells whether the process shares the shim's network namespace (same inode and
  device of /proc/<pid>/ns/net): the caller then reports no interfaces instead of the host's counters.
- Every fd opened here is closed before returning, on success and on error.
"""
from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

CLONE_NEWNET = 0x40000000
IFF_LOOPBACK = 0x8
NETLINK_ROUTE = 0
RECV_TIMEOUT = 2.0
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Interface:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def host_netns(pid: int) -> bool:
    """True if `pid` is in this process's network namespace. Raises OSError if the process is gone."""
    theirs = os.stat(f"/proc/{pid}/ns/net")
    ours = os.stat("/proc/self/ns/net")
    return (theirs.st_ino, theirs.st_dev) == (ours.st_ino, ours.st_dev)


def _socket_in_netns(pid: int) -> socket.socket:
    """A NETLINK_ROUTE socket created in the network namespace of `pid`, by a thread that then ends."""
    ns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    result: list = []

    def enter_and_create() -> None:
        try:
            if _libc.setns(ns_fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns(/proc/{pid}/ns/net): {os.strerror(err)}")
            result.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                        NETLINK_ROUTE))
        except BaseException as e:  # handed to the caller below
            result.append(e)

    try:
        t = threading.Thread(target=enter_and_create, name=f"netns-{pid}")
        t.start()
        t.join()
    finally:
        os.close(ns_fd)
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def load_netlink():
    """pyroute2's constants and message class (imported on first use, see the module rules)."""
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR
    from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_NEWLINK
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    return NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, RTM_GETLINK, RTM_NEWLINK, ifinfmsg


def _dump_request(seq: int) -> bytes:
    NLM_F_DUMP, NLM_F_REQUEST, _, _, RTM_GETLINK, _, ifinfmsg = load_netlink()
    req = ifinfmsg()
    req["family"] = socket.AF_UNSPEC
    req["header"]["type"] = RTM_GETLINK
    req["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    req["header"]["sequence_number"] = seq
    req.encode()
    return bytes(req.data)


_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFI_FLAGS = struct.Struct("=I")  # ifinfomsg.ifi_flags at offset 8 of the payload


def interfaces(pid: int) -> list[Interface]:
    """Counters of every non-loopback interface in the network namespace of `pid`."""
    sock = _socket_in_netns(pid)
    with sock:
        sock.settimeout(RECV_TIMEOUT)
        sock.bind((0, 0))
        sock.send(_dump_request(1))
        return _read_dump(sock)


def _read_dump(sock: socket.socket) -> list[Interface]:
    _, _, NLMSG_DONE, NLMSG_ERROR, _, RTM_NEWLINK, _ = load_netlink()
    out: list[Interface] = []
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + _HDR.size <= len(data):
            length, kind, _flags, _seq, _pid = _HDR.unpack_from(data, off)
            if length < _HDR.size:
                raise OSError("malformed netlink message")
            if kind == NLMSG_DONE:
                return out
            if kind == NLMSG_ERROR:
                code = struct.unpack_from("=i", data, off + _HDR.size)[0]
                raise OSError(-code, f"RTM_GETLINK: {os.strerror(-code)}")
            if kind == RTM_NEWLINK:
                flags = _IFI_FLAGS.unpack_from(data, off + _HDR.size + 8)[0]
                if not flags & IFF_LOOPBACK:
                    iface = _decode(data[off:off + length])
                    if iface is not None:
                        out.append(iface)
            off += (length + 3) & ~3


def _decode(raw: bytes) -> Interface | None:
    msg = load_netlink()[-1](raw)
    msg.decode()
    name = msg.get_attr("IFLA_IFNAME")
    st = msg.get_attr("IFLA_STATS64") or msg.get_attr("IFLA_STATS")
    if not name or st is None:
        return None
    return Interface(name, st["rx_bytes"], st["rx_packets"], st["rx_errors"], st["rx_dropped"],
                     st["tx_bytes"], st["tx_packets"], st["tx_errors"], st["tx_dropped"])
