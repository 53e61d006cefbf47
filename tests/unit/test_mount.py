"""shim/linux/mount.py and shim/linux/unmount.py: option parsing tables, and real mounts (root) of tmpfs, bind and overlay in tmp dirs.

Rules: every mounting test runs under the ``scratch`` fixture, which unmounts everything below its directory
afterwards (with umount(8) as an independent check). Without root the mounting tests skip with the reason,
except under CI=true, where missing root fails them.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.prereq import unavailable

from shim.linux import mount as m
from shim.linux.mount import Mount, MountError, mount_all, mounts_under, unmount_all
from shim.linux.mountinfo import unescape


@pytest.fixture
def scratch(tmp_path: Path):
    if os.geteuid() != 0:
        unavailable("mount tests need root")
    yield tmp_path
    unmount_all(str(tmp_path))
    leftovers = mounts_under(os.path.realpath(tmp_path))
    for point in sorted(leftovers, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    assert not leftovers


def options_of(point: str) -> tuple[set[str], str, set[str]]:
    """(per-mount options, fstype, optional fields) of the top mount at ``point``, from mountinfo."""
    found = None
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f.read().decode().splitlines():
            left, _, right = line.partition(" - ")
            fields = left.split()
            if unescape(fields[4].encode()) == point:
                found = (set(fields[5].split(",")), right.split()[0], set(fields[6:]))
    assert found is not None, f"{point} is not mounted"
    return found


# -- tables ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options,flags,propagation,data", [
    ((), 0, 0, ""),
    (("defaults",), 0, 0, ""),
    (("ro", "nosuid", "nodev", "noexec"), m.MS_RDONLY | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC, 0, ""),
    (("ro", "rw"), 0, 0, ""),
    (("rw", "ro"), m.MS_RDONLY, 0, ""),
    (("rbind", "ro"), m.MS_BIND | m.MS_REC | m.MS_RDONLY, 0, ""),
    (("bind", "rprivate"), m.MS_BIND, m.MS_PRIVATE | m.MS_REC, ""),
    (("shared", "rslave"), 0, m.MS_SLAVE | m.MS_REC, ""),
    (("size=1m", "nosuid", "mode=755"), m.MS_NOSUID, 0, "size=1m,mode=755"),
    (("noatime", "atime", "relatime", "strictatime", "nostrictatime"), m.MS_RELATIME, 0, ""),
    (("sync", "async", "dirsync", "mand", "nomand", "nodiratime"), m.MS_DIRSYNC | m.MS_NODIRATIME, 0, ""),
    (("suid", "dev", "exec", "diratime", "norelatime", "remount"), m.MS_REMOUNT, 0, ""),
    (("index=off", "lowerdir=/a:/b"), 0, 0, "index=off,lowerdir=/a:/b"),
])
def test_parse_options(options, flags, propagation, data) -> None:
    assert m.parse_options(options) == m.MountOptions(flags, propagation, data, False)


def test_parse_options_loop() -> None:
    assert m.parse_options(["loop", "ro"]).loop


def test_compact_lowerdirs() -> None:
    base = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
    options = ("index=off", f"lowerdir={base}/12/fs:{base}/13/fs:{base}/1/fs", f"upperdir={base}/14/fs")
    chdir, compacted = m.compact_lowerdirs(options)
    assert chdir == base
    assert compacted == ("index=off", f"upperdir={base}/14/fs", "lowerdir=12/fs:13/fs:1/fs")
    assert m.compact_lowerdirs(("lowerdir=/a/x",)) == ("", ("lowerdir=/a/x",))
    assert m.compact_lowerdirs(("lowerdir=/a:/b",)) == ("", ("lowerdir=/a:/b",))
    assert m.compact_lowerdirs(("upperdir=/u",)) == ("", ("upperdir=/u",))


def test_unescape_mountinfo() -> None:
    assert unescape(rb"/tmp/a\040b\011c\134d") == "/tmp/a b\tc\\d"
    assert unescape(rb"/tmp/\04") == "/tmp/\\04"


def test_root_path_never_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "abs")
    os.symlink("../../../..", root / "up")
    os.symlink("loop", root / "loop")
    assert m.root_path(str(root), "abs/passwd") == str(root / "etc" / "passwd")
    assert m.root_path(str(root), "up/etc") == str(root / "etc")
    assert m.root_path(str(root), "../../x") == str(root / "x")
    assert m.root_path(str(root), "/new/dir") == str(root / "new" / "dir")
    with pytest.raises(MountError) as info:
        m.root_path(str(root), "loop/x")
    assert info.value.errno == errno.ELOOP


@pytest.mark.parametrize("mount,text", [
    (Mount("ext4", "/img", options=("loop",)), "loop mounts"),
    (Mount("bind", "/x", options=("bind", "uidmap=0:1000:1", "gidmap=0:1000:1")), "id-mapped"),
    (Mount("fuse3.fuse-overlayfs", "overlay"), "FUSE helper"),
])
def test_unsupported_mounts_fail_clearly(tmp_path: Path, mount: Mount, text: str) -> None:
    with pytest.raises(MountError, match=text) as info:
        mount_all([mount], str(tmp_path))
    assert info.value.errno == errno.EOPNOTSUPP


def test_data_longer_than_a_page_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MountError, match="longer than a page") as info:
        mount_all([Mount("tmpfs", "tmpfs", options=("x" * 5000,))], str(tmp_path))
    assert info.value.errno == errno.EINVAL


def test_mount_coerces_options_to_tuple() -> None:
    assert Mount("tmpfs", "tmpfs", options=["a"]).options == ("a",)  # type: ignore[arg-type]


# -- real mounts ----------------------------------------------------------------------------------------

def test_tmpfs_with_flags_and_data(scratch: Path) -> None:
    target = scratch / "rootfs"
    target.mkdir()
    mount_all([Mount("tmpfs", "tmpfs", options=("nosuid", "nodev", "size=1m", "mode=750"))], str(target))
    opts, fstype, _ = options_of(str(target))
    assert fstype == "tmpfs" and {"nosuid", "nodev", "rw"} <= opts
    assert oct(target.stat().st_mode & 0o777) == "0o750"
    unmount_all(str(target))
    assert mounts_under(str(target)) == []
    unmount_all(str(target))  # idempotent


def test_bind_ro_is_read_only(scratch: Path) -> None:
    source, target = scratch / "src", scratch / "rootfs"
    source.mkdir()
    target.mkdir()
    (source / "file").write_text("hello")
    mount_all([Mount("bind", str(source), options=("rbind", "ro"))], str(target))
    assert (target / "file").read_text() == "hello"
    assert "ro" in options_of(str(target))[0]
    with pytest.raises(OSError) as info:
        (target / "new").write_text("x")
    assert info.value.errno == errno.EROFS
    (source / "other").write_text("source stays writable")


def test_bind_remount_ro_without_data_skips_the_first_call(scratch: Path) -> None:
    source, target = scratch / "src", scratch / "rootfs"
    source.mkdir()
    target.mkdir()
    mount_all([Mount("bind", str(source), options=("bind",))], str(target))
    assert "rw" in options_of(str(target))[0]
    mount_all([Mount("", "", options=("remount", "bind", "ro"))], str(target))
    assert "ro" in options_of(str(target))[0]
    unmount_all(str(target))
    assert mounts_under(str(target)) == []  # the remount stacked nothing


def test_propagation(scratch: Path) -> None:
    target = scratch / "rootfs"
    target.mkdir()
    mount_all([Mount("tmpfs", "tmpfs", options=("size=1m", "shared"))], str(target))
    assert any(f.startswith("shared:") for f in options_of(str(target))[2])
    mount_all([Mount("", "", options=("remount", "rprivate"))], str(target))
    assert not any(f.startswith("shared:") for f in options_of(str(target))[2])


def overlay_layers(base: Path, count: int, name_length: int) -> tuple[list[str], str, str]:
    lowers = []
    for i in range(count):
        layer = base / f"{i:0{name_length}d}" / "fs"
        layer.mkdir(parents=True)
        (layer / f"from-{i}").write_text(str(i))
        (layer / "shadowed").write_text(str(i))
        lowers.append(str(layer))
    upper, work = base / "upper", base / "work"
    upper.mkdir()
    work.mkdir()
    return lowers, str(upper), str(work)


def test_overlay(scratch: Path) -> None:
    base, target = scratch / "snapshots", scratch / "rootfs"
    base.mkdir()
    target.mkdir()
    mount_all([Mount("tmpfs", "tmpfs", options=("size=4m",))], str(base))  # overlay needs a real upper fs
    lowers, upper, work = overlay_layers(base, 3, 2)
    mount_all([Mount("overlay", "overlay", options=(f"lowerdir={':'.join(lowers)}", f"upperdir={upper}",
                                                    f"workdir={work}", "index=off"))], str(target))
    assert options_of(str(target))[1] == "overlay"
    assert (target / "shadowed").read_text() == "0"  # the first lowerdir is the top layer
    (target / "new").write_text("upper")
    assert Path(upper, "new").read_text() == "upper"


def test_overlay_options_longer_than_a_page_use_relative_lowerdirs(scratch: Path) -> None:
    base, target = scratch / "snapshots", scratch / "rootfs"
    base.mkdir()
    target.mkdir()
    mount_all([Mount("tmpfs", "tmpfs", options=("size=16m",))], str(base))
    lowers, upper, work = overlay_layers(base, 40, 90)
    options = (f"lowerdir={':'.join(lowers)}", f"upperdir={upper}", f"workdir={work}", "index=off")
    assert len(",".join(options)) > os.sysconf("SC_PAGESIZE")
    cwd = os.getcwd()
    mount_all([Mount("overlay", "overlay", options=options)], str(target))
    assert os.getcwd() == cwd
    assert (target / "from-39").read_text() == "39" and (target / "shadowed").read_text() == "0"


def test_failed_mount_all_unmounts_what_it_mounted(scratch: Path) -> None:
    target = scratch / "rootfs"
    target.mkdir()
    mounts = [Mount("tmpfs", "tmpfs", options=("size=1m",)), Mount("tmpfs", "tmpfs", target="/."),
              Mount("no-such-fs-type", "none", target="/")]
    with pytest.raises(MountError) as info:
        mount_all(mounts, str(target))
    assert info.value.errno == errno.ENODEV
    assert mounts_under(str(target)) == []


def test_failed_read_only_remount_undoes_the_bind(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, target = scratch / "src", scratch / "rootfs"
    source.mkdir()
    target.mkdir()
    real = m._sys_mount

    def failing_remount(src: str, tgt: str, fstype: str, flags: int, data: str) -> int:
        return errno.EPERM if flags & m.MS_REMOUNT else real(src, tgt, fstype, flags, data)

    monkeypatch.setattr(m, "_sys_mount", failing_remount)
    with pytest.raises(MountError, match="read-only remount"):
        mount_all([Mount("bind", str(source), options=("bind", "ro"))], str(target))
    assert mounts_under(str(target)) == []


def test_unmount_all_nested_stacked_and_spaces(scratch: Path) -> None:
    target = scratch / "root fs"
    target.mkdir()
    mount_all([Mount("tmpfs", "tmpfs", options=("size=1m",))], str(target))
    (target / "a b").mkdir()
    mount_all([Mount("tmpfs", "tmpfs", options=("size=1m",))], str(target / "a b"))
    mount_all([Mount("tmpfs", "tmpfs", options=("size=1m",))], str(target / "a b"))  # stacked
    (target / "a b" / "deep").mkdir()
    mount_all([Mount("tmpfs", "tmpfs", options=("size=1m",))], str(target / "a b" / "deep"))
    mount_all([Mount("tmpfs", "tmpfs", options=("size=1m",))], str(target))  # hides everything below
    assert len(mounts_under(str(target))) == 5
    unmount_all(str(target))
    assert mounts_under(str(target)) == []


def test_unmount_all_busy_mount_is_detached(scratch: Path) -> None:
    target = scratch / "rootfs"
    target.mkdir()
    mount_all([Mount("tmpfs", "tmpfs", options=("size=1m",))], str(target))
    busy = os.open(target / "held", os.O_CREAT | os.O_WRONLY)
    try:
        unmount_all(str(target))
        assert mounts_under(str(target)) == []
    finally:
        os.close(busy)


def test_unmount_all_edge_cases(tmp_path: Path) -> None:
    unmount_all(str(tmp_path / "missing"))
    unmount_all("")
    with pytest.raises(ValueError):
        unmount_all("/")
