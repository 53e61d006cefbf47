"""SCHED_CORE=1 (containerd's ``sched_core`` option): the daemon gives its process group a core-scheduling
cookie, or fails with upstream's words when the kernel cannot (this VM's kernel has no CONFIG_SCHED_CORE)."""
from __future__ import annotations

import ctypes
import os

from shim.daemon import PR_SCHED_CORE, enable_sched_core

PR_SCHED_CORE_GET = 0


def _in_child() -> str:
    """Run enable_sched_core in a child with its own session; what happened, as a string."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        os.setsid()
        try:
            enable_sched_core()
            cookie = ctypes.c_ulong(0)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SCHED_CORE, PR_SCHED_CORE_GET, 0, 0, ctypes.byref(cookie))
            msg = f"cookie {cookie.value}"
        except OSError as e:
            msg = f"error {e.errno} {e.strerror}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    out = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return out


def test_sched_core_cookie_or_upstreams_error():
    out = _in_child()
    if out.startswith("cookie"):
        assert out != "cookie 0", "the process group got no cookie"
    else:
        _, errno_, text = out.split(" ", 2)
        assert int(errno_) in (22, 19, 1), out           # EINVAL (no CONFIG_SCHED_CORE/SMT), ENODEV, EPERM
        assert text.startswith("enable sched core support: "), out
