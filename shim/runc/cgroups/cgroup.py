"""One container's cgroup: located from its init pid, sampled as the Any payload containerd expects.

Rules:
- Synchronous and trio-free: `sample` runs in a worker thread (shim/runc/task/stats.py bounds how many).
- Located once, when the init exists (after create; again lazily if that failed), from
  /proc/<pid>/cgroup against the host's cgroup mounts (shim/runc/cgroups/paths.py), as the runc shim does.
- The payload is `(type_url, bytes)`: "io.containerd.cgroups.v1.Metrics" on v1 and hybrid hosts,
  "io.containerd.cgroups.v2.Metrics" on unified ones — the names containerd's typeurl registry has for
  them (bare full names, no type.googleapis.com/ prefix), so ctr and CRI decode them.
- v1 only: the network counters of the init's namespace are added (v2's message has no such field).
  A container in the shim's own network namespace gets none, and that is logged once per container.
"""
from __future__ import annotations

import logging

from protos import cgroups_v1_pb2, cgroups_v2_pb2
from shim.runc.cgroups import net, paths, v1, v2

log = logging.getLogger(__name__)

V1_TYPE = cgroups_v1_pb2.Metrics.DESCRIPTOR.full_name  # io.containerd.cgroups.v1.Metrics
V2_TYPE = cgroups_v2_pb2.Metrics.DESCRIPTOR.full_name  # io.containerd.cgroups.v2.Metrics


class ContainerCgroup:
    def __init__(self, container_id: str, where: paths.CgroupPaths) -> None:
        self.container_id = container_id
        self.paths = where
        self._said_host_net = False

    @classmethod
    def locate(cls, container_id: str, pid: int) -> "ContainerCgroup | None":
        try:
            where = paths.paths_of(pid)
        except OSError as e:
            log.warning("cgroup of %s (pid %d): %s", container_id, pid, e)
            return None
        if where is None:
            log.warning("cgroup of %s (pid %d) not found", container_id, pid)
            return None
        return cls(container_id, where)

    @property
    def version(self) -> int:
        return self.paths.version

    def sample(self, pid: int) -> tuple[str, bytes]:
        if self.paths.version == 2:
            return V2_TYPE, v2.read(self.paths.unified).SerializeToString()
        metrics = v1.read(self.paths)
        for iface in self._network(pid):
            metrics.network.add(
                name=iface.name, rx_bytes=iface.rx_bytes, rx_packets=iface.rx_packets,
                rx_errors=iface.rx_errors, rx_dropped=iface.rx_dropped, tx_bytes=iface.tx_bytes,
                tx_packets=iface.tx_packets, tx_errors=iface.tx_errors, tx_dropped=iface.tx_dropped,
            )
        return V1_TYPE, metrics.SerializeToString()

    def _network(self, pid: int) -> list[net.Interface]:
        if pid <= 0:
            return []  # the init has exited: its pid may name another process by now
        try:
            if net.host_netns(pid):
                if not self._said_host_net:
                    self._said_host_net = True
                    log.info("container %s shares the host network namespace: no network stats "
                             "(the host's counters are not the container's)", self.container_id)
                return []
            return net.interfaces(pid)
        except OSError as e:
            log.debug("network stats of %s (pid %d): %s", self.container_id, pid, e)
            return []
