"""First end-to-end proof: containerd runs a container through pyshim and runc."""
from __future__ import annotations

from .conftest import new_id

RUNTIME = "io.containerd.pyshim.v1"


def test_echo_rootfs(containerd, pyshim_binary, busybox_rootfs):
    cid = new_id("echo")
    out = containerd.ctr("run", "--rm", "--runtime", RUNTIME, "--rootfs", str(busybox_rootfs), cid,
                         "/bin/echo", "hello from pyshim", timeout=60)
    assert out.stdout == "hello from pyshim\n"


def test_exit_code(containerd, pyshim_binary, busybox_rootfs):
    cid = new_id("exit")
    res = containerd.ctr("run", "--rm", "--runtime", RUNTIME, "--rootfs", str(busybox_rootfs), cid,
                         "/bin/sh", "-c", "exit 42", check=False, timeout=60)
    assert res.returncode == 42, res.stderr


def test_echo_image(containerd, pyshim_binary, busybox_image):
    cid = new_id("img")
    out = containerd.ctr("run", "--rm", "--runtime", RUNTIME, busybox_image, cid,
                         "/bin/sh", "-c", "echo from image; cat /etc/passwd | head -1", timeout=60)
    assert out.stdout.startswith("from image\n")
