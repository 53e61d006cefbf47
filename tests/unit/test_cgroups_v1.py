"""cgroup v1 reader (shim/runc/cgroups/v1.py) against fake cgroupfs trees: table-driven, one case per controller
shape the kernel produces, each expectation the value containerd's cgroups library would put there."""
from __future__ import annotations

import pytest

from protos import cgroups_v1_pb2
from shim.runc.cgroups import v1
from shim.runc.cgroups.paths import CgroupPaths
from tests.unit.cgroupfs import build, lookup

MEMORY_STAT = """cache 10145792
rss 13303808
rss_huge 2097152
shmem 9084928
mapped_file 7725056
dirty 102400
writeback 4096
swap 0
pgpgin 164225
pgpgout 158500
pgfault 352928
pgmajfault 7
inactive_anon 11
active_anon 1531904
inactive_file 12288
active_file 1048576
unevictable 20856832
hierarchical_memory_limit 9223372036854771712
hierarchical_memsw_limit 18446744073709551615
total_cache 4621234176
total_rss 459587584
total_rss_huge 1
total_mapped_file 119656448
total_dirty 201842688
total_writeback 49152
total_pgpgin 115209431
total_pgpgout 114438904
total_pgfault 153154146
total_pgmajfault 6979
total_inactive_anon 446070784
total_active_anon 1716224
total_inactive_file 2625056768
total_active_file 33
total_unevictable 44
"""

MEMORY_FILES = {
    "memory/c/memory.stat": MEMORY_STAT,
    "memory/c/memory.oom_control": "oom_kill_disable 0\nunder_oom 1\noom_kill 3\n",
    "memory/c/memory.usage_in_bytes": "4096000\n",
    "memory/c/memory.max_usage_in_bytes": "5000000\n",
    "memory/c/memory.failcnt": "12\n",
    "memory/c/memory.limit_in_bytes": "9223372036854771712\n",
    "memory/c/memory.memsw.usage_in_bytes": "4100000\n",
    "memory/c/memory.memsw.max_usage_in_bytes": "5100000\n",
    "memory/c/memory.memsw.failcnt": "0\n",
    "memory/c/memory.memsw.limit_in_bytes": "9223372036854771712\n",
    "memory/c/memory.kmem.usage_in_bytes": "300\n",
    "memory/c/memory.kmem.max_usage_in_bytes": "400\n",
    "memory/c/memory.kmem.failcnt": "1\n",
    "memory/c/memory.kmem.limit_in_bytes": "500\n",
    "memory/c/memory.kmem.tcp.usage_in_bytes": "6\n",
    "memory/c/memory.kmem.tcp.max_usage_in_bytes": "7\n",
    "memory/c/memory.kmem.tcp.failcnt": "8\n",
    "memory/c/memory.kmem.tcp.limit_in_bytes": "9\n",
}

PARTITIONS = "major minor  #blocks  name\n\n 254        0  268435456 vda\n   8       16   1000 sdb\n"

CASES = [
    pytest.param(
        {"cpu/c/cpu.stat": "nr_periods 10\nnr_throttled 3\nthrottled_time 12345\nnr_bursts 0\nburst_time 0\n",
         "cpuacct/c/cpuacct.usage": "3244346569754\n",
         "cpuacct/c/cpuacct.usage_percpu": "1513977888681 1730368319073 \n",
         "cpuacct/c/cpuacct.stat": "user 208480\nsystem 115954\n"},
        {"cpu.throttling.periods": 10, "cpu.throttling.throttled_periods": 3,
         "cpu.throttling.throttled_time": 12345, "cpu.usage.total": 3244346569754,
         "cpu.usage.per_cpu": [1513977888681, 1730368319073],
         "cpu.usage.user": 208480 * 10_000_000, "cpu.usage.kernel": 115954 * 10_000_000},
        id="cpu-and-cpuacct",
    ),
    pytest.param(
        MEMORY_FILES,
        {"memory.cache": 10145792, "memory.rss": 13303808, "memory.rss_huge": 2097152,
         "memory.mapped_file": 7725056, "memory.dirty": 102400, "memory.writeback": 4096,
         "memory.pg_pg_in": 164225, "memory.pg_pg_out": 158500, "memory.pg_fault": 352928,
         "memory.pg_maj_fault": 7, "memory.inactive_anon": 11, "memory.active_anon": 1531904,
         "memory.inactive_file": 12288, "memory.active_file": 1048576, "memory.unevictable": 20856832,
         "memory.hierarchical_memory_limit": 9223372036854771712,
         "memory.hierarchical_swap_limit": 18446744073709551615,
         "memory.total_cache": 4621234176, "memory.total_rss": 459587584, "memory.total_rss_huge": 1,
         "memory.total_mapped_file": 119656448, "memory.total_dirty": 201842688,
         "memory.total_writeback": 49152, "memory.total_pg_pg_in": 115209431,
         "memory.total_pg_pg_out": 114438904, "memory.total_pg_fault": 153154146,
         "memory.total_pg_maj_fault": 6979, "memory.total_inactive_anon": 446070784,
         "memory.total_active_anon": 1716224, "memory.total_inactive_file": 2625056768,
         "memory.total_active_file": 33, "memory.total_unevictable": 44,
         "memory.usage.usage": 4096000, "memory.usage.max": 5000000, "memory.usage.failcnt": 12,
         "memory.usage.limit": 9223372036854771712, "memory.swap.usage": 4100000, "memory.swap.max": 5100000,
         "memory.swap.limit": 9223372036854771712, "memory.kernel.usage": 300, "memory.kernel.max": 400,
         "memory.kernel.failcnt": 1, "memory.kernel.limit": 500, "memory.kernel_tcp.usage": 6,
         "memory.kernel_tcp.max": 7, "memory.kernel_tcp.failcnt": 8, "memory.kernel_tcp.limit": 9,
         "memory_oom_control.oom_kill_disable": 0, "memory_oom_control.under_oom": 1,
         "memory_oom_control.oom_kill": 3},
        id="memory-full",
    ),
    pytest.param(
        {"memory/c/memory.stat": "cache 1\nrss 2\n", "memory/c/memory.usage_in_bytes": "10\n",
         "memory/c/memory.kmem.usage_in_bytes": "20\n"},
        {"memory.cache": 1, "memory.rss": 2, "memory.usage.usage": 10, "memory.swap.usage": 0,
         "memory.kernel.usage": 20, "memory.HasField('swap')": True},
        id="memory-without-swap-accounting-keeps-kmem",
    ),
    pytest.param(
        {"pids/c/pids.current": "4\n", "pids/c/pids.max": "max\n"},
        {"pids.current": 4, "pids.limit": 0},
        id="pids-unlimited-is-0",
    ),
    pytest.param(
        {"pids/c/pids.current": "4\n", "pids/c/pids.max": "100\n"},
        {"pids.current": 4, "pids.limit": 100},
        id="pids-limit",
    ),
    pytest.param(
        {"blkio/c/blkio.io_serviced_recursive": "254:0 Read 5\n254:0 Write 6\n254:0 Sync 7\n254:0 Async 4\n"
                                                "254:0 Discard 0\n254:0 Total 11\nTotal 11\n",
         "blkio/c/blkio.io_service_bytes_recursive": "8:16 Read 4096\nTotal 4096\n",
         "blkio/c/blkio.sectors_recursive": "254:0 96\n",
         "blkio/c/blkio.io_queued_recursive": "Total 0\n",
         "blkio/c/blkio.io_service_time_recursive": "Total 0\n",
         "blkio/c/blkio.io_wait_time_recursive": "Total 0\n",
         "blkio/c/blkio.io_merged_recursive": "Total 0\n",
         "blkio/c/blkio.time_recursive": "254:0 77\n",
         "proc/partitions": PARTITIONS},
        {"blkio.io_serviced_recursive[0].op": "Read", "blkio.io_serviced_recursive[0].device": "/dev/vda",
         "blkio.io_serviced_recursive[0].major": 254, "blkio.io_serviced_recursive[0].value": 5,
         "blkio.io_serviced_recursive[5].op": "Total", "blkio.io_serviced_recursive[5].value": 11,
         "len(blkio.io_serviced_recursive)": 6,
         "blkio.io_service_bytes_recursive[0].device": "/dev/sdb",
         "blkio.io_service_bytes_recursive[0].minor": 16,
         "blkio.sectors_recursive[0].op": "", "blkio.sectors_recursive[0].value": 96,
         "blkio.io_time_recursive[0].value": 77, "len(blkio.io_queued_recursive)": 0},
        id="blkio-cfq",
    ),
    pytest.param(
        {"blkio/c/blkio.throttle.io_serviced_recursive": "254:0 Read 3\n254:0 Write 9\n254:0 Total 12\nTotal 12\n",
         "blkio/c/blkio.throttle.io_service_bytes_recursive": "254:0 Read 12288\n254:0 Write 0\nTotal 12288\n",
         "blkio/c/blkio.throttle.io_serviced": "254:0 Read 1\nTotal 1\n",
         "proc/partitions": PARTITIONS},
        {"blkio.io_serviced_recursive[1].op": "Write", "blkio.io_serviced_recursive[1].value": 9,
         "blkio.io_service_bytes_recursive[0].value": 12288,
         "blkio.io_service_bytes_recursive[0].device": "/dev/vda", "len(blkio.sectors_recursive)": 0},
        id="blkio-throttle-recursive",
    ),
    pytest.param(
        {"blkio/c/blkio.throttle.io_serviced": "254:0 Read 1\nTotal 1\n",
         "blkio/c/blkio.throttle.io_service_bytes": "254:0 Read 512\nTotal 512\n",
         "blkio/c/blkio.io_serviced_recursive": "Total 0\n",
         "proc/partitions": PARTITIONS},
        {"blkio.io_serviced_recursive[0].value": 1, "blkio.io_service_bytes_recursive[0].value": 512,
         "len(blkio.io_service_bytes_recursive)": 1},
        id="blkio-cfq-empty-falls-back-to-throttle",
    ),
    pytest.param(
        {"blkio/c/blkio.throttle.io_serviced": "Total 0\n", "blkio/c/blkio.throttle.io_service_bytes": "Total 0\n"},
        {"HasField('blkio')": True, "len(blkio.io_serviced_recursive)": 0},
        id="blkio-idle",
    ),
    pytest.param(
        {"hugetlb/c/hugetlb.2MB.usage_in_bytes": "2097152\n", "hugetlb/c/hugetlb.2MB.max_usage_in_bytes": "4194304\n",
         "hugetlb/c/hugetlb.2MB.failcnt": "2\n", "hugetlb/c/hugetlb.1GB.usage_in_bytes": "0\n",
         "hugetlb/c/hugetlb.1GB.max_usage_in_bytes": "0\n", "hugetlb/c/hugetlb.1GB.failcnt": "0\n"},
        {"hugetlb[0].pagesize": "1GB", "hugetlb[1].pagesize": "2MB", "hugetlb[1].usage": 2097152,
         "hugetlb[1].max": 4194304, "hugetlb[1].failcnt": 2, "len(hugetlb)": 2},
        id="hugetlb",
    ),
    pytest.param(
        {"rdma/c/rdma.current": "mlx4_0 hca_handle=2 hca_object=2000\n",
         "rdma/c/rdma.max": "mlx4_0 hca_handle=max hca_object=max\n"},
        {"rdma.current[0].device": "mlx4_0", "rdma.current[0].hca_handles": 2,
         "rdma.current[0].hca_objects": 2000, "rdma.limit[0].hca_handles": 2**32 - 1},
        id="rdma",
    ),
    pytest.param(
        {"memory/c/memory.stat": "cache 5\nrss -3\nbogus line here\nmapped_file x\n"},
        {"memory.cache": 5, "memory.rss": 0, "memory.mapped_file": 0},
        id="negative-and-malformed-lines",
    ),
]


def _paths(root, files) -> CgroupPaths:
    ctrls = {rel.split("/", 1)[0] for rel in files if not rel.startswith("proc/")}
    return CgroupPaths(1, {c: str(root / c / "c") for c in ctrls})


@pytest.mark.parametrize("files,expected", CASES)
def test_v1_reader(tmp_path, files, expected):
    build(tmp_path, files)
    m = v1.read(_paths(tmp_path, files), hugepage_sizes=("1GB", "2MB"),
                partitions_path=str(tmp_path / "proc/partitions"), clock_ticks=100)
    assert isinstance(m, cgroups_v1_pb2.Metrics)
    got = {expr: lookup(m, expr) for expr in expected}
    assert got == expected
    # what ctr's table printer dereferences is always there
    assert m.HasField("cpu") and m.cpu.HasField("usage") and m.cpu.HasField("throttling")


def test_v1_sections_follow_the_controllers(tmp_path):
    build(tmp_path, {"pids/c/pids.current": "1\n", "pids/c/pids.max": "max\n"})
    m = v1.read(_paths(tmp_path, {"pids/c": None}), hugepage_sizes=(), clock_ticks=100)
    assert m.HasField("pids") and not m.HasField("memory") and not m.HasField("blkio")
    assert not m.HasField("memory_oom_control") and len(m.hugetlb) == 0 and len(m.network) == 0


def test_v1_cgroup_removed_under_us_gives_zeros_not_errors(tmp_path):
    where = CgroupPaths(1, {"memory": str(tmp_path / "gone"), "cpuacct": str(tmp_path / "gone")})
    m = v1.read(where, hugepage_sizes=(), clock_ticks=100)
    assert m.memory.usage.usage == 0 and m.cpu.usage.total == 0
