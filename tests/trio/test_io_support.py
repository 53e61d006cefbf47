"""Helpers for the IO trio tests (no tests here): the client's and the container's ends, and a fd-leak check.

Import `no_fd_leaks` and `short_reader_wait` into a test module to make them autouse there.
"""
from __future__ import annotations

import os
import select

import pytest
import trio

from shim.io import ProcessIO, process_io

TIMEOUT = 20


@pytest.fixture(autouse=True)
def no_fd_leaks():
    before = len(os.listdir("/proc/self/fd"))
    yield
    assert len(os.listdir("/proc/self/fd")) == before, "file descriptors leaked"


@pytest.fixture(autouse=True)
def short_reader_wait(monkeypatch):
    """Test clients mostly open their FIFO ends after prepare: cut prepare's wait for a reader short."""
    monkeypatch.setattr(process_io, "READER_WAIT", 0.1)


def fifos(tmp_path, *names: str) -> list[str]:
    paths = [str(tmp_path / n) for n in names]
    for p in paths:
        os.mkfifo(p)
    return paths


async def write_all(fd: int, data: bytes) -> None:
    os.set_blocking(fd, False)
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view[:65536]):]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)


async def read_into(fd: int, sink: bytearray, eof: trio.Event | None = None) -> None:
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            continue
        if not data:
            if eof is not None:
                eof.set()
            return
        sink += data


def read_rest_now(fd: int, timeout: float = 1.0) -> bytes:
    """Everything still in `fd` up to EOF, reading synchronously so the event loop cannot move meanwhile:
    passes only if the writer side had already written all and closed."""
    out = bytearray()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        assert poller.poll(timeout * 1000), "no EOF: the shim had not finished writing"
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not data:
            return bytes(out)
        out += data


class BlockingOpen:
    """The client's open(2) of a FIFO end, blocking in a thread until the other end exists (as ctr does)."""

    def __init__(self, nursery: trio.Nursery, path: str, flags: int) -> None:
        self.fd: int | None = None
        self._done = trio.Event()
        nursery.start_soon(self._open, path, flags)

    async def _open(self, path: str, flags: int) -> None:
        self.fd = await trio.to_thread.run_sync(os.open, path, flags, abandon_on_cancel=True)
        self._done.set()

    async def result(self) -> int:
        await self._done.wait()
        assert self.fd is not None
        return self.fd


class Container:
    """Dups of the runtime's stdio fds: what the container process keeps after the runtime exits."""

    def __init__(self, pio: ProcessIO) -> None:
        self.stdin, self.stdout, self.stderr = (None if fd is None else os.dup(fd) for fd in pio.runtime_stdio)

    def close(self, *names: str) -> None:
        for name in names or ("stdin", "stdout", "stderr"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def fd_target(name: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{name}")
    except OSError:
        return ""
