"""End-to-end scenario 5 of the shim matrix: ``ctr run -t`` under a real pty, with a window resize.

Rules: ctr runs as a session leader whose controlling terminal is the slave of a pty this test opened, as in
an interactive shell; the test plays the terminal emulator on the master (one reader thread, joined).  The
container prints ``S:<rows> <cols>:E`` from ``stty size`` for every line it reads, so the test asks again
(one newline) until the size it set shows up: ctr sends the size with a ResizePty after Start and after each
SIGWINCH, so the first answer may predate it, for runc.v2 as for pyshim.  Both runtimes, every version.
"""
from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
import time

from .conftest import new_id
from .e2e_helpers import cleanup, runtime  # noqa: F401  (runtime: fixture)

SIZE = re.compile(rb"S:(\d+) (\d+):E")
LOOP = 'while :; do echo "S:$(stty size):E"; read line || break; done; exit 7'


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_tty() -> None:  # runs in the child after setsid (start_new_session)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """The master side of a pty: everything read is kept in ``output`` by one reader thread."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.output = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO once every slave fd is closed
                return
            if not chunk:
                return
            with self._lock:
                self.output += chunk

    def sizes(self) -> list[tuple[int, int]]:
        with self._lock:
            return [(int(r), int(c)) for r, c in SIZE.findall(bytes(self.output))]

    def await_size(self, rows: int, cols: int, timeout: float = 15.0) -> None:
        """Send a newline until the container's latest ``stty size`` answer is rows x cols."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.sizes()
            if seen and seen[-1] == (rows, cols):
                return
            os.write(self.master, b"\n")
            time.sleep(0.15)
        raise AssertionError(f"container never saw {rows}x{cols}; answers: {self.sizes()}; "
                             f"output tail: {bytes(self.output[-500:])!r}")

    def join(self) -> None:
        self._thread.join(5)


def test_tty_size_and_resize(containerd, runtime, busybox_rootfs):
    cid = new_id("tty")
    master, slave = pty.openpty()
    set_winsize(slave, 31, 101)
    proc = subprocess.Popen(containerd.ctr_argv("run", "-t", "--rm", "--runtime", runtime, "--rootfs",
                                                str(busybox_rootfs), cid, "/bin/sh", "-c", LOOP),
                            env=containerd.env(), stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=_controlling_tty)
    os.close(slave)
    term = Terminal(master)
    try:
        term.await_size(31, 101)
        set_winsize(master, 42, 132)  # the kernel signals the foreground group; send it too, as a resize would
        os.kill(proc.pid, signal.SIGWINCH)
        term.await_size(42, 132)
        os.write(master, b"\x04")  # ^D on an empty line: read fails, the loop ends, exit 7
        assert proc.wait(30) == 7, bytes(term.output[-500:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        term.join()
        os.close(master)
        cleanup(containerd, cid)
