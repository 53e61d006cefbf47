"""ProcessIO in terminal mode with a real pty (runc's --console-socket hand-over, containerd ``pkg/process/init.go`` at v1.6.20).

The test plays the runtime: it opens a pty pair, connects to the console socket and sends the master with
SCM_RIGHTS, closes its copy of the master and keeps the slave as the container process would. The client's
FIFOs are real FIFOs.
"""
from __future__ import annotations

import array
import errno
import os
import socket

import pytest
import trio

from shim.io import ConsoleSocketError, ProcessIO, StdioConfig
from shim.io.console import window_size
from tests.trio.test_io_support import (TIMEOUT, BlockingOpen, fifos, no_fd_leaks,  # noqa: F401
                                        read_into, read_rest_now, short_reader_wait, write_all)


def hand_over_master(path: str, *, extra_fd: bool = False) -> int:
    """What `runc create --console-socket` does; returns the slave (the container's terminal)."""
    master, slave = os.openpty()
    fds = [master, os.dup(master)] if extra_fd else [master]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        socket.send_fds(sock, [os.ttyname(slave).encode()], fds)
    for fd in fds:
        os.close(fd)
    return slave


async def read_exact(fd: int, n: int) -> bytes:
    os.set_blocking(fd, False)
    out = b""
    while len(out) < n:
        try:
            out += os.read(fd, n - len(out))
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
    return out


async def until(pred, what: str) -> None:  # type: ignore[no-untyped-def]
    while not pred():
        await trio.sleep(0.01)


async def test_terminal_copies_both_ways_resizes_and_ends_at_exit(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        in_path, out_path = fifos(tmp_path, "stdin", "stdout")
        pio = await ProcessIO.prepare(StdioConfig(in_path, out_path, "", True), container_id="c1", namespace="ns")
        assert pio.runtime_stdio == (None, None, None)
        sock_path = pio.console_socket_path
        assert sock_path is not None and os.path.basename(os.path.dirname(sock_path)).startswith("pty")
        slave = hand_over_master(sock_path)
        client_in = BlockingOpen(nursery, in_path, os.O_WRONLY)
        client_out = BlockingOpen(nursery, out_path, os.O_RDONLY)
        await trio.sleep(0.05)
        await pio.start(nursery)
        assert not os.path.exists(os.path.dirname(sock_path))  # socket and private dir are gone
        writer, reader = await client_in.result(), await client_out.result()
        got = bytearray()
        reading = trio.CancelScope()

        async def client() -> None:
            with reading:
                await read_into(reader, got)

        nursery.start_soon(client)
        os.write(slave, b"hello\n")
        await until(lambda: b"hello\r\n" in got, "tty output")  # it really went through a tty (ONLCR)
        os.write(writer, b"typed\n")
        assert await read_exact(slave, 6) == b"typed\n"
        await until(lambda: got.endswith(b"typed\r\n"), "echo")  # the tty echoes what the client typed

        pio.resize(132, 43)
        assert window_size(slave) == (132, 43)
        pio.resize(80, 24)
        assert window_size(slave) == (80, 24)

        os.write(slave, b"bye\n")
        os.close(slave)  # the process exits: the master reads EIO, which is EOF after the exit
        assert await pio.drain(5)
        reading.cancel()
        await trio.sleep(0)
        rest = read_rest_now(reader)  # written and closed before drain returned
        assert (bytes(got) + rest).endswith(b"bye\r\n")
        await pio.aclose()
        pio.resize(10, 10)  # closed: no-op
        os.close(writer)
        os.close(reader)


async def test_stdin_eof_hangs_the_terminal_up(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        in_path, out_path = fifos(tmp_path, "stdin", "stdout")
        pio = await ProcessIO.prepare(StdioConfig(in_path, out_path, "", True), container_id="c1", namespace="ns")
        slave = hand_over_master(pio.console_socket_path)
        client_in = BlockingOpen(nursery, in_path, os.O_WRONLY)
        await trio.sleep(0.05)
        await pio.start(nursery)
        writer = await client_in.result()
        reader = os.open(out_path, os.O_RDONLY | os.O_NONBLOCK)
        os.write(slave, b"still running\n")
        os.close(writer)
        await trio.sleep(0.1)
        os.set_blocking(slave, False)
        with pytest.raises(BlockingIOError):
            os.read(slave, 10)  # keep-alive: the client went away but the tty is not hung up
        await pio.close_stdin()  # CloseIO: now stdin is at EOF
        got, eof = bytearray(), trio.Event()
        await read_into(reader, got, eof)
        assert eof.is_set() and bytes(got) == b"still running\r\n"  # buffered output drained first
        await until(lambda: _hung_up(slave), "hang-up")
        await pio.aclose()
        os.close(slave)
        os.close(reader)


def _hung_up(slave: int) -> bool:
    try:
        return os.read(slave, 10) == b""
    except BlockingIOError:
        return False
    except OSError as exc:
        return exc.errno == errno.EIO


async def test_terminal_without_stdout_discards_output(nursery) -> None:
    with trio.fail_after(TIMEOUT):
        pio = await ProcessIO.prepare(StdioConfig("", "", "", True), container_id="c1", namespace="ns")
        slave = hand_over_master(pio.console_socket_path)
        await pio.start(nursery)
        # far more than a tty buffer holds: the writes finish only if the shim keeps reading
        await write_all(slave, (b"x" * 4000 + b"\n") * 50)
        os.close(slave)
        assert await pio.drain(5)
        await pio.aclose()


async def test_console_socket_requires_exactly_one_fd(nursery) -> None:
    with trio.fail_after(TIMEOUT):
        pio = await ProcessIO.prepare(StdioConfig("", "", "", True), container_id="c1", namespace="ns")
        directory = os.path.dirname(pio.console_socket_path)
        slave = hand_over_master(pio.console_socket_path, extra_fd=True)
        with pytest.raises(ConsoleSocketError, match="truncated|not 1"):
            await pio.start(nursery)
        assert not os.path.exists(directory)
        os.close(slave)  # no fd of the two sent may stay open in the shim (checked by no_fd_leaks)
        await pio.aclose()


async def test_console_socket_without_fd_is_an_error(nursery) -> None:
    with trio.fail_after(TIMEOUT):
        pio = await ProcessIO.prepare(StdioConfig("", "", "", True), container_id="c1", namespace="ns")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(pio.console_socket_path)
            sock.sendmsg([b"/dev/pts/99"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                                              array.array("i", [os.getpid(), 0, 0]).tobytes())])
        with pytest.raises(ConsoleSocketError):
            await pio.start(nursery)


async def test_console_hand_over_is_bounded(nursery) -> None:
    with trio.fail_after(TIMEOUT):
        pio = await ProcessIO.prepare(StdioConfig("", "", "", True), container_id="c1", namespace="ns")
        directory = os.path.dirname(pio.console_socket_path)
        with pytest.raises(trio.TooSlowError):
            await pio.start(nursery, timeout=0.2)  # the runtime never connected
        assert not os.path.exists(directory)
        await pio.aclose()


async def test_terminal_output_to_a_file_uri(tmp_path, nursery) -> None:
    # upstream cannot do this (it opens the URI as a FIFO); it is the natural meaning, so we serve it
    with trio.fail_after(TIMEOUT):
        log = tmp_path / "logs" / "tty.log"
        pio = await ProcessIO.prepare(StdioConfig("", f"file://{log}", "", True), container_id="c1",
                                      namespace="ns")
        assert log.exists()
        slave = hand_over_master(pio.console_socket_path)
        await pio.start(nursery)
        os.write(slave, b"logged\n")
        os.close(slave)
        assert await pio.drain(5)
        assert log.read_bytes() == b"logged\r\n"
        await pio.aclose()
