"""Locating a container's cgroup (shim/runc/cgroups/paths.py): mode detection from mountinfo, /proc/<pid>/cgroup
parsing, mount roots of nested cgroup namespaces, and the controllers a v1 cgroup really has."""
from __future__ import annotations

import pytest

from shim.runc.cgroups import paths, readfs
from tests.unit.cgroupfs import build

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
SYSTEMD_V1 = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
"""
UNIFIED = """\
24 18 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
NESTED = """\
24 18 0:21 /kubepods/pod1/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate
"""
REMOUNTED = UNIFIED + "99 18 0:40 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"


@pytest.mark.parametrize("text,version,controllers,unified", [
    (HYBRID, 1, {"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct", "memory": "/sys/fs/cgroup/memory",
                 "pids": "/sys/fs/cgroup/pids", "name=systemd": "/sys/fs/cgroup/systemd"}, "/sys/fs/cgroup/unified"),
    (SYSTEMD_V1, 1, {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                     "memory": "/sys/fs/cgroup/memory", "name=systemd": "/sys/fs/cgroup/systemd",
                     "xattr": "/sys/fs/cgroup/systemd"}, None),
    (UNIFIED, 2, {}, "/sys/fs/cgroup"),
    (REMOUNTED, 1, {}, None),  # the last mount on a point wins (it hides the cgroup2 below)
], ids=["hybrid", "systemd-legacy", "unified", "last-mount-wins"])
def test_parse_mountinfo(text, version, controllers, unified):
    m = paths.parse_mountinfo(text)
    assert m.version == version
    assert {c: mount.point for c, mount in m.v1.items()} == controllers
    assert (m.unified.point if m.unified else None) == unified


def test_parse_proc_cgroup():
    text = ("12:pids:/ns/c1\n4:cpu,cpuacct:/ns/c1\n1:name=systemd:/user.slice\n0::/ns/c1\n"
            "bogus\n")
    legacy, unified = paths.parse_proc_cgroup(text)
    assert legacy == {"pids": "/ns/c1", "cpu": "/ns/c1", "cpuacct": "/ns/c1", "name=systemd": "/user.slice"}
    assert unified == "/ns/c1"


def _relocated(text: str, root) -> str:
    return text.replace(" /sys/fs/cgroup", f" {root}/sys/fs/cgroup")


def test_resolve_v1_keeps_only_existing_controller_dirs(tmp_path):
    build(tmp_path, {"sys/fs/cgroup/cpu/ns/c1": None, "sys/fs/cgroup/memory/ns/c1": None,
                     "sys/fs/cgroup/unified/ns/c1": None})
    mounts = paths.parse_mountinfo(_relocated(HYBRID, tmp_path), cgroup_root=f"{tmp_path}/sys/fs/cgroup")
    where = paths.resolve(mounts, "8:pids:/ns/c1\n4:memory:/ns/c1\n2:cpuacct:/ns/c1\n1:cpu:/ns/c1\n"
                                  "9:blkio:/ns/c1\n0::/ns/c1\n")
    assert where.version == 1
    assert where.v1 == {"cpu": f"{tmp_path}/sys/fs/cgroup/cpu/ns/c1", "memory": f"{tmp_path}/sys/fs/cgroup/memory/ns/c1"}
    assert where.unified == f"{tmp_path}/sys/fs/cgroup/unified/ns/c1"
    assert where.dir("pids") is None  # mounted, but the directory is not there
    assert where.dir("blkio") is None  # not mounted at all


def test_resolve_v2_and_nested_namespace_root(tmp_path):
    build(tmp_path, {"sys/fs/cgroup/ns/c1": None})
    cg_root = f"{tmp_path}/sys/fs/cgroup"
    plain = paths.parse_mountinfo(_relocated(UNIFIED, tmp_path), cgroup_root=cg_root)
    assert paths.resolve(plain, "0::/ns/c1\n").unified == f"{cg_root}/ns/c1"
    nested = paths.parse_mountinfo(_relocated(NESTED, tmp_path), cgroup_root=cg_root)
    # a process outside the namespace sees the full path: the mount's root is stripped
    assert paths.resolve(nested, "0::/kubepods/pod1/abc/ns/c1\n").unified == f"{cg_root}/ns/c1"
    assert paths.resolve(nested, "0::/ns/c1\n").unified == f"{cg_root}/ns/c1"
    assert paths.resolve(plain, "0::/ns/absent\n") is None
    assert paths.resolve(plain, "4:memory:/ns/c1\n") is None  # no unified line on a v2 host


def test_paths_of_a_dead_process_is_none():
    assert paths.paths_of(2**22 + 12345) is None


@pytest.mark.parametrize("dirname,name", [
    ("hugepages-2048kB", "2MB"), ("hugepages-1048576kB", "1GB"), ("hugepages-64kB", "64KB"),
    ("hugepages-32768kB", "32MB"), ("hugepages-16777216kB", "16GB"), ("hugepages-512kB", "512KB"),
    ("nonsense", None), ("hugepages-12MB", None),
])
def test_hugepage_size_names(dirname, name):
    assert readfs.hugepage_size_name(dirname) == name


def test_read_is_one_syscall_for_small_files_and_complete_for_big_ones(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"x" * 100)
    big.write_bytes(bytes(range(256)) * 1000)  # > one 64 KiB read
    assert readfs.read(str(small)) == b"x" * 100
    assert readfs.read(str(big)) == bytes(range(256)) * 1000
    assert readfs.read(str(tmp_path / "absent")) is None
    assert readfs.read(str(small / "not-a-dir")) is None


@pytest.mark.parametrize("text,expected", [
    (b"4\n", 4), (b"max\n", None), (b"-1\n", 0), (b"18446744073709551615\n", 2**64 - 1), (b"abc", None),
])
def test_single(text, expected):
    assert readfs.single(text) == expected
