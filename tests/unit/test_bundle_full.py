"""Files pyshim writes into a bundle, on a file system that is full (a real tmpfs, filled to the last page): each
write fails with ENOSPC and leaves the file as it was (or absent), with no partial file and no temporary file
(shim/bundle.py ``write_atomically``: ``./address``, pyshim.json; runtime/oci_cli.py ``rewrite_spec``)."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Iterator

import pytest

from runtime.base import RunResult
from runtime.errors import RuntimeFailed
from runtime.logjson import LogCursor
from runtime.oci_cli import OciCli, full_disk_hint, rewrite_spec
from runtime.oci_config import OciConfig
from shim import bundle
from shim.linux.mount import Mount, mount_all, unmount_all
from shim.runc.cleanup import STATE_FILE, write_state
from tests.prereq import unavailable


@pytest.fixture
def full(tmp_path: Path) -> Iterator[Path]:
    """A bundle directory on a 64 KiB tmpfs; call ``fill(bundle)`` to use up every free page."""
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    d = tmp_path / "fs"
    d.mkdir()
    mount_all([Mount("tmpfs", "tmpfs", options=("size=64k", "mode=0700"))], str(d))
    try:
        (d / "bundle").mkdir()
        yield d / "bundle"
    finally:
        unmount_all(str(d))


def fill(directory: Path) -> None:
    fd = os.open(directory.parent / "filler", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_file_system_keeps_the_old_address(full: Path) -> None:
    bundle.write_address(str(full), "unix:///run/containerd/s/old")
    fill(full)
    with pytest.raises(OSError) as failed:
        bundle.write_address(str(full), "unix:///run/containerd/s/" + "n" * 64)
    assert failed.value.errno == errno.ENOSPC
    assert sorted(os.listdir(full)) == ["address"]
    assert bundle.read_address(str(full)) == "unix:///run/containerd/s/old"


def test_a_full_file_system_writes_no_address(full: Path) -> None:
    fill(full)
    with pytest.raises(OSError, match=f"No space left on device: '{full}/.address'"):
        bundle.write_address(str(full), "unix:///run/containerd/s/" + "n" * 64)
    assert os.listdir(full) == []


def test_a_full_file_system_writes_no_state_file(full: Path) -> None:
    fill(full)
    with pytest.raises(OSError, match="No space left on device"):
        write_state(str(full), {"binary": "runc", "root": "/run/containerd/runc/ns", "global_args": ["x" * 100]})
    assert os.listdir(full) == []
    with pytest.raises(OSError):  # a leftover temporary file of an earlier crash is replaced, then removed
        (full / f"{STATE_FILE}.tmp").touch()
        write_state(str(full), {"binary": "runc", "root": "/r"})
    assert os.listdir(full) == []


def test_a_full_file_system_keeps_the_spec_as_it_was(full: Path) -> None:
    spec = {"ociVersion": "1.2.1", "annotations": {"drop.me": "x" * 100}, "process": {"args": ["sh"]}}
    (full / "config.json").write_text(json.dumps(spec))
    fill(full)
    with pytest.raises(RuntimeFailed, match=r"cannot rewrite .*/config.json: No space left on device"):
        rewrite_spec(str(full / "config.json"), ("drop.me",), "1.1.0")
    assert os.listdir(full) == ["config.json"]
    assert json.loads((full / "config.json").read_text()) == spec


def test_a_runtime_failing_on_a_full_file_system_is_explained(full: Path) -> None:
    """runc cannot log its error into a full bundle: the message says why instead of a bare exit status."""
    cli = OciCli(OciConfig(name="runc", binary="runc", root="/run/x", capabilities=frozenset()), launcher=None)
    cursor = LogCursor.at_end(str(full / "log.json"))
    assert full_disk_hint(str(full)) == ""
    assert str(cli._error("exec", "/usr/sbin/runc", cursor, RunResult(1, 255, b""), str(full))) == \
        "OCI runtime exec failed: /usr/sbin/runc did not terminate successfully: exit status 255"
    fill(full)
    error = cli._error("exec", "/usr/sbin/runc", cursor, RunResult(1, 255, b""), str(full))
    assert isinstance(error, RuntimeFailed) and str(error) == (
        f"OCI runtime exec failed: /usr/sbin/runc did not terminate successfully: exit status 255; the file "
        f"system of {full} is full (no space left on device): the runtime could write neither its files there nor "
        f"why it failed")
