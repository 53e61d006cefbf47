"""End-to-end scenarios 1-4 of the shim matrix: ``ctr run`` output, exit codes, 10 MB of stdout, piped stdin.

Rules: each test runs for pyshim and for the Go runc shim (``runtime`` fixture) against the session
containerd of every version; expected values are what runc.v2 produces, asserted for both.  Container ids
come from ``new_id``; ``--rm`` or ``cleanup`` removes every container a test made.
"""
from __future__ import annotations

import hashlib
import os

from .conftest import new_id
from .e2e_helpers import cleanup, ctr_bytes, finish, runtime, running, start, wait_status  # noqa: F401

TEN_MB = 10 * 1024 * 1024


def test_echo_rootfs_and_image(containerd, runtime, busybox_rootfs, busybox_image):
    res = ctr_bytes(containerd, "run", "--rm", "--runtime", runtime, "--rootfs", str(busybox_rootfs),
                    new_id("echo"), "/bin/echo", "hello", "from", "rootfs")
    assert (res.returncode, res.stdout) == (0, b"hello from rootfs\n"), res.stderr
    res = ctr_bytes(containerd, "run", "--rm", "--runtime", runtime, busybox_image, new_id("echo"),
                    "/bin/sh", "-c", "echo hello from image; echo to stderr >&2")
    assert (res.returncode, res.stdout) == (0, b"hello from image\n"), res.stderr
    assert res.stderr.endswith(b"to stderr\n")


def test_exit_codes(containerd, runtime, busybox_rootfs):
    # Each scenario command, and the status runc.v2 reports for it.  A pid-1 shell cannot signal itself to
    # death: the kernel drops signals without a handler sent to a pid namespace's init from inside, so
    # ``kill -9 $$`` / ``kill -TERM $$`` as the container's init leave the shell running to exit 0.
    cases = {"exit 0": 0, "exit 1": 1, "exit 42": 42, "kill -9 $$": 0, "kill -TERM $$": 0}
    runs = {cmd: start(containerd, "run", "--rm", "--runtime", runtime, "--rootfs", str(busybox_rootfs),
                       new_id("exit"), "/bin/sh", "-c", cmd)
            for cmd in cases}
    got = {}
    for cmd, proc in runs.items():
        res = finish(proc, 60)
        got[cmd] = res.returncode
        assert res.stdout == b"", (cmd, res)
    assert got == cases

    cid = new_id("sig")
    with running(containerd, runtime, cid, busybox_rootfs, "/bin/sleep", "600"):
        # Exec processes are not pid 1, so their own signals kill them: 128 + signal.
        for cmd, want in (("kill -9 $$", 137), ("kill -TERM $$", 143), ("exit 42", 42)):
            res = containerd.ctr("task", "exec", "--exec-id", new_id("x"), cid, "/bin/sh", "-c", cmd, check=False)
            assert res.returncode == want, (cmd, res.stderr)

    # The init killed from outside: a foreground ``ctr run`` reports 128 + SIGKILL.
    cid = new_id("kill")
    fg = start(containerd, "run", "--runtime", runtime, "--rootfs", str(busybox_rootfs), cid, "/bin/sleep", "600")
    try:
        wait_status(containerd, cid, "RUNNING")
        containerd.ctr("task", "kill", "--signal", "SIGKILL", cid)
        res = finish(fg)
        assert res.returncode == 137, res.stderr
    finally:
        finish(fg, 5)
        cleanup(containerd, cid)


def test_ten_megabytes_of_stdout(containerd, runtime, busybox_rootfs):
    line = b"0123456789abcdef\n"
    expected = (line * (TEN_MB // len(line) + 1))[:TEN_MB]
    res = ctr_bytes(containerd, "run", "--rm", "--runtime", runtime, "--rootfs", str(busybox_rootfs),
                    new_id("big"), "/bin/sh", "-c", f"yes 0123456789abcdef | head -c {TEN_MB}", timeout=90)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout) == TEN_MB
    assert hashlib.sha256(res.stdout).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_stdin_piped(containerd, runtime, busybox_rootfs):
    # ctr run always connects its own stdin (there is no -i flag in 1.6-2.1).
    data = os.urandom(1 << 20) + bytes(range(256)) + b"no newline at the end"
    res = ctr_bytes(containerd, "run", "--rm", "--runtime", runtime, "--rootfs", str(busybox_rootfs),
                    new_id("cat"), "/bin/cat", input=data, timeout=60)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout) == len(data)
    assert res.stdout == data
