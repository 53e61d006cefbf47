"""The cgroup readers on this machine's real cgroupfs (v1 here, v2 in the VM): the cgroup of the test
process is located and read, and the values are checked against the files read directly afterwards
(counters only grow, limits are equal)."""
from __future__ import annotations

import os
from pathlib import Path

from protos import cgroups_v1_pb2, cgroups_v2_pb2
from shim.runc.cgroups import paths, v1, v2
from shim.runc.cgroups.cgroup import V1_TYPE, V2_TYPE, ContainerCgroup
from tests.prereq import unavailable


def _mine() -> paths.CgroupPaths:
    where = paths.paths_of(os.getpid())
    if where is None:
        unavailable("this process is in no readable cgroup")
    return where


def test_mode_matches_the_mount_on_sys_fs_cgroup():
    fstype = next((line.split(" - ")[1].split()[0] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                   if line.split()[4] == "/sys/fs/cgroup"), None)
    assert paths.host_mounts().version == (2 if fstype == "cgroup2" else 1)


def test_reader_matches_the_files():
    where = _mine()
    if where.version == 1:
        m = v1.read(where)
        if (d := where.dir("cpuacct")) is not None:
            later = [int(x) for x in Path(d, "cpuacct.usage_percpu").read_text().split()]
            assert len(m.cpu.usage.per_cpu) == len(later) == os.cpu_count()
            assert all(a <= b for a, b in zip(m.cpu.usage.per_cpu, later))
            assert 0 < m.cpu.usage.total <= int(Path(d, "cpuacct.usage").read_text())
        if (d := where.dir("memory")) is not None:
            assert m.memory.usage.limit == int(Path(d, "memory.limit_in_bytes").read_text())
            assert m.memory.usage.usage > 0
            assert m.HasField("memory_oom_control")
    else:
        m = v2.read(where.unified)
        stat = dict(line.split() for line in Path(where.unified, "cpu.stat").read_text().splitlines())
        assert 0 < m.cpu.usage_usec <= int(stat["usage_usec"])
        if Path(where.unified, "memory.max").exists():
            raw = Path(where.unified, "memory.max").read_text().strip()
            assert m.memory.usage_limit == (2**64 - 1 if raw == "max" else int(raw))
            assert m.memory.usage > 0


def test_sample_type_url_and_payload():
    where = _mine()
    type_url, value = ContainerCgroup("self", where).sample(os.getpid())
    if where.version == 1:
        assert type_url == V1_TYPE == "io.containerd.cgroups.v1.Metrics"
        m = cgroups_v1_pb2.Metrics.FromString(value)
        assert m.network == []  # the test process is in the host network namespace: no host counters
    else:
        assert type_url == V2_TYPE == "io.containerd.cgroups.v2.Metrics"
        m = cgroups_v2_pb2.Metrics.FromString(value)
    assert m.HasField("cpu")
