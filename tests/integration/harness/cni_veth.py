#!/usr/bin/python3
"""A CNI plugin for the CRI tests that gives a pod an ``eth0`` with an IPv4 address and touches nothing
outside the pod's network namespace.

Rules:
- ADD creates a veth pair *inside* the pod namespace (``$CNI_IFNAME`` and its peer ``cni-peer0``), brings
  both and ``lo`` up, and puts an address from 10.253.0.0/16 (derived from the container id) on
  ``$CNI_IFNAME``.  No interface, route, address or firewall rule is created in the host namespace, so no
  packet can leave the pod: this is a network for runtimes to be tested on, not a pod network.
- DEL removes the pair if the namespace and interface still exist; like every CNI DEL it is idempotent.
- CHECK succeeds; VERSION lists the versions whose result format this prints.
- Errors follow the CNI spec: a JSON ``{"cniVersion", "code", "msg"}`` on stdout and exit status 1.
- Only the standard library and iproute2's ``ip -n``-less form under ``nsenter`` (util-linux), both
  present wherever containerd runs.
"""
import hashlib
import json
import os
import subprocess
import sys

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
PEER = "cni-peer0"


def ip(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["nsenter", f"--net={netns}", "ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def address(container_id: str) -> str:
    n = int.from_bytes(hashlib.sha256(container_id.encode()).digest()[:2], "big")
    return f"10.253.{n >> 8}.{max(2, n & 0xFF)}/16"


def add(conf: dict, netns: str, ifname: str, container_id: str) -> dict:
    ip(netns, "link", "set", "lo", "up")
    ip(netns, "link", "add", ifname, "type", "veth", "peer", "name", PEER)
    cidr = address(container_id)
    ip(netns, "addr", "add", cidr, "dev", ifname)
    ip(netns, "link", "set", PEER, "up")
    ip(netns, "link", "set", ifname, "up")
    link = json.loads(ip(netns, "-j", "link", "show", ifname).stdout)[0]
    return {
        "cniVersion": conf.get("cniVersion", "0.4.0"),
        "interfaces": [{"name": ifname, "mac": link.get("address", ""), "sandbox": netns}],
        "ips": [{"version": "4", "address": cidr, "interface": 0}] if conf.get("cniVersion", "0.4.0") < "1"
        else [{"address": cidr, "interface": 0}],
        "dns": {},
    }


def main() -> int:
    command = os.environ.get("CNI_COMMAND", "")
    raw = sys.stdin.read()
    conf = json.loads(raw) if raw.strip() else {}
    version = conf.get("cniVersion", "0.4.0")
    try:
        if command == "VERSION":
            print(json.dumps({"cniVersion": version, "supportedVersions": VERSIONS}))
        elif command == "ADD":
            print(json.dumps(add(conf, os.environ["CNI_NETNS"], os.environ["CNI_IFNAME"],
                                 os.environ["CNI_CONTAINERID"])))
        elif command == "DEL":
            netns = os.environ.get("CNI_NETNS", "")
            if netns and os.path.exists(netns):
                ip(netns, "link", "del", os.environ["CNI_IFNAME"], check=False)
        elif command != "CHECK":
            raise RuntimeError(f"unknown CNI_COMMAND {command!r}")
    except (RuntimeError, KeyError, ValueError) as exc:
        print(json.dumps({"cniVersion": version, "code": 100, "msg": str(exc)}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
