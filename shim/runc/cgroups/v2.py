"""cgroup v2 metrics: one container's unified group read into io.containerd.cgroups.v2.Metrics.

Rules:
- Pure and synchronous (no trio): called from a worker thread by shim/runc/cgroups/stats.py.
- Field for field what containerd's cgroups library fills (v3.0.5 `Manager.Stat`, the superset of
  v1.0.4's): pids (a "max" limit is 2**64-1), cpu.stat, every memory.stat key, memory.current/max,
  memory.swap.current/max, memory.peak/swap.peak (max_usage, swap_max_usage), memory.events (only when
  the file has content), io.stat, rdma, hugetlb per host page size, and PSI (cpu/memory/io.pressure) when
  the kernel has the files. cpu, memory, pids, io and rdma are always present, as upstream.
- Deliberate differences: cpu.stat and memory.stat are read whenever they exist (upstream only when the
  controller is listed in cgroup.controllers; cpu.stat exists without the controller and is true data);
  hugetlb entries come in the order of /sys/kernel/mm/hugepages (upstream: Go map order).
- The v2 message has no network field (protos/cgroups_v2.proto, as upstream): network counters exist for
  v1 only.
"""
from __future__ import annotations

import os
from typing import Sequence

from protos import cgroups_v2_pb2 as v2
from shim.runc.cgroups import readfs
from shim.runc.cgroups.v1 import host_hugepage_sizes

MAX = readfs.MAX_U64

_CPU = ("usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec")
_MEMORY = (
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty", "file_writeback",
    "anon_thp", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
    "slab_reclaimable", "slab_unreclaimable", "pgfault", "pgmajfault", "workingset_refault",
    "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan", "pgsteal", "pgactivate",
    "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc",
)
_MEMORY_FILES = (("usage", "memory.current"), ("usage_limit", "memory.max"), ("max_usage", "memory.peak"),
                 ("swap_usage", "memory.swap.current"), ("swap_limit", "memory.swap.max"),
                 ("swap_max_usage", "memory.swap.peak"))
_EVENTS = ("low", "high", "max", "oom", "oom_kill")
_IO = ("rbytes", "wbytes", "rios", "wios")


def read(group: str, *, hugepage_sizes: Sequence[str] | None = None) -> v2.Metrics:
    m = v2.Metrics()
    j = os.path.join

    m.pids.current = readfs.single(readfs.read(j(group, "pids.current")), MAX) or 0
    m.pids.limit = readfs.single(readfs.read(j(group, "pids.max")), MAX) or 0

    cpu = readfs.kv(readfs.read(j(group, "cpu.stat")))
    m.cpu.SetInParent()
    for name in _CPU:
        setattr(m.cpu, name, cpu.get(name, 0))
    _psi(m.cpu.psi, readfs.read(j(group, "cpu.pressure")))

    mem = readfs.kv(readfs.read(j(group, "memory.stat")))
    m.memory.SetInParent()
    for name in _MEMORY:
        setattr(m.memory, name, mem.get(name, 0))
    for name, filename in _MEMORY_FILES:
        setattr(m.memory, name, readfs.single(readfs.read(j(group, filename)), MAX) or 0)
    _psi(m.memory.psi, readfs.read(j(group, "memory.pressure")))

    events = readfs.kv(readfs.read(j(group, "memory.events")))
    if events:
        for name in _EVENTS:
            setattr(m.memory_events, name, events.get(name, 0))

    m.io.SetInParent()
    for major, minor, values in readfs.io_stat(readfs.read(j(group, "io.stat"))):
        m.io.usage.add(major=major, minor=minor, **{k: values.get(k, 0) for k in _IO})
    _psi(m.io.psi, readfs.read(j(group, "io.pressure")))

    m.rdma.SetInParent()
    for target, filename in ((m.rdma.current, "rdma.current"), (m.rdma.limit, "rdma.max")):
        for device, handles, objects in readfs.rdma(readfs.read(j(group, filename))):
            target.add(device=device, hca_handles=handles, hca_objects=objects)

    sizes = host_hugepage_sizes() if hugepage_sizes is None else hugepage_sizes
    for size in sizes:
        current = readfs.read(j(group, f"hugetlb.{size}.current"))
        limit = readfs.read(j(group, f"hugetlb.{size}.max"))
        if current is None and limit is None:
            continue
        m.hugetlb.add(pagesize=size, current=readfs.single(current, MAX) or 0,
                      max=readfs.single(limit, MAX) or 0)
    return m


def _psi(target: v2.PSIStats, data: bytes | None) -> None:
    parsed = readfs.psi(data)
    if parsed is None:
        return
    target.SetInParent()
    for line, values in parsed.items():
        d = getattr(target, line)
        d.SetInParent()
        d.avg10 = float(values.get("avg10", 0.0))
        d.avg60 = float(values.get("avg60", 0.0))
        d.avg300 = float(values.get("avg300", 0.0))
        d.total = int(values.get("total", 0))
