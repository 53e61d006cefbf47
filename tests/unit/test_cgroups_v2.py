"""cgroup v2 reader (shim/runc/cgroups/v2.py) against fake unified groups: table-driven, each expectation the
value containerd's cgroups library (v3.0.5 Manager.Stat) would put there."""
from __future__ import annotations

import pytest

from shim.runc.cgroups import v2
from tests.unit.cgroupfs import build, lookup

MAX = 2**64 - 1

MEMORY_STAT = """anon 1
file 2
kernel 999
kernel_stack 3
pagetables 998
sec_pagetables 0
percpu 997
sock 5
vmalloc 0
shmem 6
zswap 0
file_mapped 7
file_dirty 8
file_writeback 9
swapcached 0
anon_thp 10
file_thp 0
shmem_thp 0
inactive_anon 11
active_anon 12
inactive_file 13
active_file 14
unevictable 15
slab_reclaimable 16
slab_unreclaimable 17
slab 4
workingset_refault_anon 0
workingset_refault_file 0
workingset_refault 20
workingset_activate 21
workingset_nodereclaim 22
pgscan 24
pgsteal 25
pgrefill 23
pgactivate 26
pgdeactivate 27
pglazyfree 28
pglazyfreed 29
thp_fault_alloc 30
thp_collapse_alloc 31
pgfault 18
pgmajfault 19
"""

PSI = "some avg10=1.50 avg60=0.25 avg300=0.00 total=1234\nfull avg10=0.10 avg60=0.00 avg300=0.00 total=99\n"

CASES = [
    pytest.param(
        {"cpu.stat": "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 5\nnr_throttled 2\n"
                     "throttled_usec 7\nnr_bursts 0\nburst_usec 0\n",
         "cpu.pressure": PSI},
        {"cpu.usage_usec": 100, "cpu.user_usec": 60, "cpu.system_usec": 40, "cpu.nr_periods": 5,
         "cpu.nr_throttled": 2, "cpu.throttled_usec": 7, "cpu.psi.some.avg10": 1.5, "cpu.psi.some.avg60": 0.25,
         "cpu.psi.some.total": 1234, "cpu.psi.full.avg10": 0.1, "cpu.psi.full.total": 99},
        id="cpu-with-psi",
    ),
    pytest.param(
        {"cpu.stat": "usage_usec 100\nuser_usec 60\nsystem_usec 40\n"},
        {"cpu.usage_usec": 100, "cpu.nr_periods": 0, "cpu.HasField('psi')": False},
        id="cpu-without-controller-or-psi",
    ),
    pytest.param(
        {"memory.stat": MEMORY_STAT, "memory.current": "4096\n", "memory.max": "max\n",
         "memory.swap.current": "0\n", "memory.swap.max": "1048576\n", "memory.peak": "8192\n",
         "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
                            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"},
        {**{f"memory.{k}": v for k, v in {
            "anon": 1, "file": 2, "kernel_stack": 3, "slab": 4, "sock": 5, "shmem": 6, "file_mapped": 7,
            "file_dirty": 8, "file_writeback": 9, "anon_thp": 10, "inactive_anon": 11, "active_anon": 12,
            "inactive_file": 13, "active_file": 14, "unevictable": 15, "slab_reclaimable": 16,
            "slab_unreclaimable": 17, "pgfault": 18, "pgmajfault": 19, "workingset_refault": 20,
            "workingset_activate": 21, "workingset_nodereclaim": 22, "pgrefill": 23, "pgscan": 24,
            "pgsteal": 25, "pgactivate": 26, "pgdeactivate": 27, "pglazyfree": 28, "pglazyfreed": 29,
            "thp_fault_alloc": 30, "thp_collapse_alloc": 31}.items()},
         "memory.usage": 4096, "memory.usage_limit": MAX, "memory.swap_usage": 0, "memory.swap_limit": 1048576,
         "memory.max_usage": 8192, "memory.swap_max_usage": 0, "memory.psi.HasField('full')": True,
         "HasField('memory_events')": False},
        id="memory-full",
    ),
    pytest.param(
        {"memory.events": "low 0\nhigh 1\nmax 2\noom 3\noom_kill 4\noom_group_kill 0\n"},
        {"memory_events.low": 0, "memory_events.high": 1, "memory_events.max": 2, "memory_events.oom": 3,
         "memory_events.oom_kill": 4},
        id="memory-events",
    ),
    pytest.param(
        {"pids.current": "3\n", "pids.max": "max\n"},
        {"pids.current": 3, "pids.limit": MAX},
        id="pids-unlimited-is-max-u64",
    ),
    pytest.param(
        {"pids.current": "3\n", "pids.max": "64\n"},
        {"pids.current": 3, "pids.limit": 64},
        id="pids-limit",
    ),
    pytest.param(
        {"io.stat": "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
                    "8:16 rbytes=1 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
         "io.pressure": PSI},
        {"io.usage[0].major": 254, "io.usage[0].minor": 0, "io.usage[0].rbytes": 4096, "io.usage[0].wbytes": 8192,
         "io.usage[0].rios": 1, "io.usage[0].wios": 2, "io.usage[1].major": 8, "io.usage[1].minor": 16,
         "len(io.usage)": 2, "io.psi.some.total": 1234},
        id="io",
    ),
    pytest.param(
        {"hugetlb.2MB.current": "2097152\n", "hugetlb.2MB.max": "max\n", "hugetlb.2MB.rsvd.max": "max\n",
         "hugetlb.1GB.current": "0\n", "hugetlb.1GB.max": "0\n"},
        {"hugetlb[0].pagesize": "1GB", "hugetlb[0].max": 0, "hugetlb[1].pagesize": "2MB",
         "hugetlb[1].current": 2097152, "hugetlb[1].max": MAX, "len(hugetlb)": 2},
        id="hugetlb",
    ),
    pytest.param(
        {"rdma.current": "mlx5_1 hca_handle=1 hca_object=20\n", "rdma.max": "mlx5_1 hca_handle=max hca_object=10\n"},
        {"rdma.current[0].device": "mlx5_1", "rdma.current[0].hca_objects": 20,
         "rdma.limit[0].hca_handles": 2**32 - 1, "rdma.limit[0].hca_objects": 10},
        id="rdma",
    ),
    pytest.param(
        {},
        {"HasField('cpu')": True, "HasField('memory')": True, "HasField('io')": True, "HasField('rdma')": True,
         "HasField('pids')": True, "HasField('memory_events')": False, "len(hugetlb)": 0},
        id="empty-group-keeps-upstreams-sections",
    ),
]


@pytest.mark.parametrize("files,expected", CASES)
def test_v2_reader(tmp_path, files, expected):
    group = build(tmp_path / "grp", {"cgroup.procs": "", **files})
    m = v2.read(str(group), hugepage_sizes=("1GB", "2MB"))
    got = {expr: lookup(m, expr) for expr in expected}
    assert got == expected


def test_v2_group_removed_under_us(tmp_path):
    m = v2.read(str(tmp_path / "gone"), hugepage_sizes=("2MB",))
    assert m.memory.usage == 0 and m.pids.limit == 0 and len(m.hugetlb) == 0
