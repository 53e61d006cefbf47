"""cgroup v1 metrics: one container's hierarchies read into io.containerd.cgroups.v1.Metrics.

Rules:
- Pure and synchronous (no trio): called from a worker thread by shim/runc/cgroups/stats.py.
- Field for field what containerd's cgroups library (v1.0.4 `Stat`, unchanged in v3's cgroup1) fills:
  cpu (cpu.stat throttling; cpuacct usage, per-cpu, user/kernel in ns from USER_HZ ticks), memory
  (every memory.stat key, usage/memsw/kmem/kmem.tcp entries, memory.oom_control), pids (a "max" limit is
  0), blkio (the CFQ *_recursive files when the kernel has them, else the throttle counters), hugetlb per
  host page size, rdma. `cpu` with its `usage` and `throttling` is always present (ctr dereferences them);
  the other sections appear when their controller is there.
- Deliberate differences: a missing file leaves only its own fields zero (upstream abandons the rest of
  that controller, e.g. kmem after a missing memsw); a malformed line is skipped instead of failing the
  call; the blkio throttle fallback prefers `throttle.*_recursive` (same value for a leaf cgroup, and
  right for a container with sub-cgroups) and falls back to upstream's non-recursive files.
- `network` and `cgroup_stats` are not cgroup files: network is added by shim/runc/cgroups/net.py, and
  cgroup_stats (taskstats over netlink) stays empty as upstream.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Sequence

from protos import cgroups_v1_pb2 as v1
from shim.runc.cgroups import readfs
from shim.runc.cgroups.paths import CgroupPaths

NS_PER_SEC = 1_000_000_000

_MEMORY_STAT = {  # MemoryStat field -> memory.stat key (where they differ by more than the name)
    "cache": "cache", "rss": "rss", "rss_huge": "rss_huge", "mapped_file": "mapped_file", "dirty": "dirty",
    "writeback": "writeback", "pg_pg_in": "pgpgin", "pg_pg_out": "pgpgout", "pg_fault": "pgfault",
    "pg_maj_fault": "pgmajfault", "inactive_anon": "inactive_anon", "active_anon": "active_anon",
    "inactive_file": "inactive_file", "active_file": "active_file", "unevictable": "unevictable",
}
_MEMORY_EXTRA = {"hierarchical_memory_limit": "hierarchical_memory_limit",
                 "hierarchical_swap_limit": "hierarchical_memsw_limit"}
_MEMORY_ENTRIES = (("usage", "memory."), ("swap", "memory.memsw."), ("kernel", "memory.kmem."),
                   ("kernel_tcp", "memory.kmem.tcp."))
_ENTRY_FILES = (("usage", "usage_in_bytes"), ("max", "max_usage_in_bytes"), ("failcnt", "failcnt"),
                ("limit", "limit_in_bytes"))
_BLKIO_CFQ = (("sectors_recursive", "sectors_recursive"),
              ("io_service_bytes_recursive", "io_service_bytes_recursive"),
              ("io_serviced_recursive", "io_serviced_recursive"),
              ("io_queued_recursive", "io_queued_recursive"),
              ("io_service_time_recursive", "io_service_time_recursive"),
              ("io_wait_time_recursive", "io_wait_time_recursive"),
              ("io_merged_recursive", "io_merged_recursive"),
              ("io_time_recursive", "time_recursive"))
_BLKIO_THROTTLE = (("io_serviced_recursive", "throttle.io_serviced"),
                   ("io_service_bytes_recursive", "throttle.io_service_bytes"))


@functools.cache
def host_hugepage_sizes() -> tuple[str, ...]:
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except FileNotFoundError:
        return ()
    return tuple(n for n in map(readfs.hugepage_size_name, sorted(names)) if n)


def read(paths: CgroupPaths, *, hugepage_sizes: Sequence[str] | None = None,
         partitions_path: str = "/proc/partitions", clock_ticks: int | None = None) -> v1.Metrics:
    m = v1.Metrics()
    m.cpu.usage.SetInParent()
    m.cpu.throttling.SetInParent()
    j = os.path.join
    if (d := paths.dir("pids")) is not None:
        _pids(m, d, j)
    if (d := paths.dir("cpu")) is not None:
        stat = readfs.kv(readfs.read(j(d, "cpu.stat")))
        t = m.cpu.throttling
        t.periods = stat.get("nr_periods", 0)
        t.throttled_periods = stat.get("nr_throttled", 0)
        t.throttled_time = stat.get("throttled_time", 0)
    if (d := paths.dir("cpuacct")) is not None:
        _cpuacct(m, d, j, clock_ticks or os.sysconf("SC_CLK_TCK"))
    if (d := paths.dir("memory")) is not None:
        _memory(m, d, j)
    if (d := paths.dir("blkio")) is not None:
        _blkio(m, d, j, partitions_path)
    if (d := paths.dir("hugetlb")) is not None:
        sizes = host_hugepage_sizes() if hugepage_sizes is None else hugepage_sizes
        _hugetlb(m, d, j, sizes)
    if (d := paths.dir("rdma")) is not None:
        _rdma(m, d, j)
    return m


def _pids(m: v1.Metrics, d: str, j: Callable) -> None:
    current = readfs.single(readfs.read(j(d, "pids.current")))
    limit = readfs.read(j(d, "pids.max"))
    if current is None and limit is None:
        return
    m.pids.current = current or 0
    m.pids.limit = readfs.single(limit, max_value=0) or 0


def _cpuacct(m: v1.Metrics, d: str, j: Callable, ticks: int) -> None:
    u = m.cpu.usage
    u.total = readfs.single(readfs.read(j(d, "cpuacct.usage"))) or 0
    per_cpu = readfs.read(j(d, "cpuacct.usage_percpu"))
    if per_cpu:
        u.per_cpu.extend(v for v in map(readfs.uint, per_cpu.split()) if v is not None)
    stat = readfs.kv(readfs.read(j(d, "cpuacct.stat")))
    u.user = stat.get("user", 0) * NS_PER_SEC // ticks
    u.kernel = stat.get("system", 0) * NS_PER_SEC // ticks


def _memory(m: v1.Metrics, d: str, j: Callable) -> None:
    mem = m.memory
    raw = readfs.kv(readfs.read(j(d, "memory.stat")))
    for name, key in _MEMORY_STAT.items():
        setattr(mem, name, raw.get(key, 0))
        setattr(mem, "total_" + name, raw.get("total_" + key, 0))
    for name, key in _MEMORY_EXTRA.items():
        setattr(mem, name, raw.get(key, 0))
    for name, prefix in _MEMORY_ENTRIES:
        entry = getattr(mem, name)
        entry.SetInParent()
        for field, suffix in _ENTRY_FILES:
            setattr(entry, field, readfs.single(readfs.read(j(d, prefix + suffix))) or 0)
    oom = readfs.read(j(d, "memory.oom_control"))
    if oom is not None:
        values = readfs.kv(oom)
        m.memory_oom_control.oom_kill_disable = values.get("oom_kill_disable", 0)
        m.memory_oom_control.under_oom = values.get("under_oom", 0)
        m.memory_oom_control.oom_kill = values.get("oom_kill", 0)


def _blkio(m: v1.Metrics, d: str, j: Callable, partitions_path: str) -> None:
    b = m.blkio
    b.SetInParent()
    rows: list[tuple[str, list]] = []
    if os.path.lexists(j(d, "blkio.io_serviced_recursive")):
        rows = [(field, list(readfs.blkio_lines(readfs.read(j(d, "blkio." + name)))))
                for field, name in _BLKIO_CFQ]
    if not any(entries for _, entries in rows):
        rows = []
        for field, name in _BLKIO_THROTTLE:
            data = readfs.read(j(d, f"blkio.{name}_recursive"))
            if data is None:
                data = readfs.read(j(d, "blkio." + name))
            rows.append((field, list(readfs.blkio_lines(data))))
    if not any(entries for _, entries in rows):
        return
    devices = readfs.partitions(readfs.read(partitions_path))
    for field, entries in rows:
        target = getattr(b, field)
        for major, minor, op, value in entries:
            target.add(op=op, device=devices.get((major, minor), ""), major=major, minor=minor, value=value)


def _hugetlb(m: v1.Metrics, d: str, j: Callable, sizes: Sequence[str]) -> None:
    for size in sizes:
        prefix = j(d, f"hugetlb.{size}.")
        usage = readfs.read(prefix + "usage_in_bytes")
        if usage is None:
            continue
        m.hugetlb.add(
            pagesize=size, usage=readfs.single(usage) or 0,
            max=readfs.single(readfs.read(prefix + "max_usage_in_bytes")) or 0,
            failcnt=readfs.single(readfs.read(prefix + "failcnt")) or 0,
        )


def _rdma(m: v1.Metrics, d: str, j: Callable) -> None:
    current, limit = readfs.read(j(d, "rdma.current")), readfs.read(j(d, "rdma.max"))
    if current is None or limit is None or current.count(b"\n") != limit.count(b"\n"):
        return  # a device went away between the two reads: no rdma section, as upstream
    m.rdma.SetInParent()
    for target, data in ((m.rdma.current, current), (m.rdma.limit, limit)):
        for device, handles, objects in readfs.rdma(data):
            target.add(device=device, hca_handles=handles, hca_objects=objects)
