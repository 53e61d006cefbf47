"""ProcessIO in pipe mode with real pipes and FIFOs (containerd ``pkg/process/io.go`` at v1.6.20).

The test plays both other parties: the runtime/container (it keeps dups of `runtime_stdio`, as the container
process would, before `start` closes the shim's copies) and the client (it mkfifo's the paths and opens the
other ends). Every test runs under fail_after and checks /proc/self/fd for leaks. Most open their client ends
after `prepare`, which then waits READER_WAIT for a reader of each output FIFO and opens it without one: that
wait is cut short here (test_io_support.short_reader_wait); the tests of the wait itself open their ends first,
as ctr does.
"""
from __future__ import annotations

import errno
import os
import stat

import pytest
import trio

from shim.io import ProcessIO, StdioConfig, StdioOpenError, UnsupportedStdioError
from shim.io import process_io
from tests.trio.test_io_support import (TIMEOUT, BlockingOpen, Container, fd_target, fifos, no_fd_leaks,  # noqa: F401
                                        short_reader_wait,  # noqa: F401 (autouse fixture)
                                        read_into, read_rest_now, write_all)



async def test_fifo_copies_10mb_and_drain_waits_for_the_last_byte(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        out_path, err_path = fifos(tmp_path, "stdout", "stderr")
        # the client opens its readers the way ctr does: a blocking open that completes once a writer exists
        opening = [BlockingOpen(nursery, p, os.O_RDONLY) for p in (out_path, err_path)]
        await trio.sleep(0.05)
        pio = await ProcessIO.prepare(StdioConfig("", out_path, err_path), container_id="c1", namespace="ns")
        assert pio.runtime_stdio[0] is None and None not in pio.runtime_stdio[1:]
        box = Container(pio)
        await pio.start(nursery)
        client_out, client_err = [await o.result() for o in opening]
        payload = os.urandom(10 * 1024 * 1024)
        got_out, got_err = bytearray(), bytearray()
        async with trio.open_nursery() as inner:
            readers = trio.CancelScope()

            async def client() -> None:
                with readers:
                    async with trio.open_nursery() as n:
                        n.start_soon(read_into, client_out, got_out)
                        n.start_soon(read_into, client_err, got_err)

            inner.start_soon(client)
            await write_all(box.stdout, payload)
            await write_all(box.stderr, b"to stderr\n")
            box.close()  # the process exits
            assert await pio.drain(10)
            readers.cancel()
        # the event loop is frozen from here on: what is left must already be in the FIFOs, then EOF
        got_out += read_rest_now(client_out)
        got_err += read_rest_now(client_err)
        assert bytes(got_out) == payload
        assert bytes(got_err) == b"to stderr\n"
        await pio.aclose()
        os.close(client_out)
        os.close(client_err)


async def test_drain_is_bounded_while_a_process_still_holds_stdout(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        (out_path,) = fifos(tmp_path, "stdout")
        pio = await ProcessIO.prepare(StdioConfig("", out_path, ""), container_id="c1", namespace="ns")
        assert pio.runtime_stdio[2] is None  # empty stderr: /dev/null, not an open of ""
        box = Container(pio)
        await pio.start(nursery)
        client = os.open(out_path, os.O_RDONLY | os.O_NONBLOCK)
        assert await pio.drain(0.2) is False  # a daemonised child keeps the pipe: no EOF yet
        await write_all(box.stdout, b"late\n")
        box.close()
        assert await pio.drain(5) is True
        assert read_rest_now(client) == b"late\n"
        await pio.aclose()
        os.close(client)


async def test_drain_waits_until_a_late_client_has_read_its_fifo(tmp_path, nursery) -> None:
    """ctr's race (process_io docstring): the client's open of its FIFO is marked done late; the exit must not be
    released (drain returning) before the client has read what the process wrote."""
    with trio.fail_after(TIMEOUT):
        (out_path,) = fifos(tmp_path, "stdout")
        opening = BlockingOpen(nursery, out_path, os.O_RDONLY)
        await trio.sleep(0.05)
        pio = await ProcessIO.prepare(StdioConfig("", out_path, ""), container_id="c1", namespace="ns")
        box = Container(pio)
        await pio.start(nursery)
        await write_all(box.stdout, b"exec-16\n")
        box.close()
        got = bytearray()

        async def late_client() -> None:  # its open returned, but it reads only later (ctr's goroutine)
            fd = await opening.result()
            await trio.sleep(0.3)
            try:
                await read_into(fd, got)
            finally:
                os.close(fd)

        nursery.start_soon(late_client)
        began = trio.current_time()
        assert await pio.drain(2) is True
        assert trio.current_time() - began >= 0.25  # it waited for the reader...
        assert bytes(got) == b"exec-16\n"  # ...until the reader had it all
        await pio.aclose()


async def test_prepare_waits_for_a_late_clients_open_so_it_never_blocks_after_we_are_gone(
        tmp_path, nursery, monkeypatch) -> None:
    """ctr 2.x hung in `task exec` when its open of the stderr FIFO came after the shim had opened and closed
    its writer (the exec printed nothing): prepare waits until the client's open is in the kernel."""
    monkeypatch.setattr(process_io, "READER_WAIT", 5.0)
    with trio.fail_after(TIMEOUT):
        out_path, err_path = fifos(tmp_path, "stdout", "stderr")
        out_client = BlockingOpen(nursery, out_path, os.O_RDONLY)
        late: list[BlockingOpen] = []

        async def late_open() -> None:
            await trio.sleep(0.3)
            late.append(BlockingOpen(nursery, err_path, os.O_RDONLY))

        nursery.start_soon(late_open)
        began = trio.current_time()
        pio = await ProcessIO.prepare(StdioConfig("", out_path, err_path), container_id="c1", namespace="ns")
        assert trio.current_time() - began >= 0.25  # it waited for the stderr reader
        box = Container(pio)
        await pio.start(nursery)
        box.close()  # exits, printing nothing
        assert await pio.drain(5)
        await pio.aclose()
        with trio.fail_after(2):  # both opens completed: neither client can hang
            fds = [await out_client.result(), await late[0].result()]
        assert [read_rest_now(fd) for fd in fds] == [b"", b""]
        for fd in fds:
            os.close(fd)


async def test_drain_waits_at_most_read_wait_for_a_client_that_is_gone(tmp_path, nursery, monkeypatch) -> None:
    monkeypatch.setattr("shim.io.process_io.READ_WAIT", 0.3)
    with trio.fail_after(TIMEOUT):
        (out_path,) = fifos(tmp_path, "stdout")
        pio = await ProcessIO.prepare(StdioConfig("", out_path, ""), container_id="c1", namespace="ns")
        box = Container(pio)
        await pio.start(nursery)
        await write_all(box.stdout, b"nobody reads this\n")
        box.close()
        began = trio.current_time()
        assert await pio.drain(5) is True
        assert 0.25 <= trio.current_time() - began < 2
        held = [fd for fd in os.listdir("/proc/self/fd") if fd_target(fd) == out_path]
        assert held == []  # our kept reader is closed once drain gave up on the client
        await pio.aclose()


async def test_stdin_keep_alive_and_close_stdin(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        (in_path,) = fifos(tmp_path, "stdin")
        pio = await ProcessIO.prepare(StdioConfig(in_path, "", ""), container_id="c1", namespace="ns")
        assert pio.runtime_stdio[1:] == (None, None)
        box = Container(pio)
        opening = BlockingOpen(nursery, in_path, os.O_WRONLY)  # ctr's writer waits for a reader
        await trio.sleep(0.05)
        await pio.start(nursery)
        writer = await opening.result()
        got = bytearray()
        eof = trio.Event()
        nursery.start_soon(read_into, box.stdin, got, eof)
        os.write(writer, b"one\n")
        os.close(writer)  # the client detaches (ctr task attach ends) ...
        await trio.sleep(0.2)
        assert bytes(got) == b"one\n" and not eof.is_set()  # ... and the container does not see EOF
        writer = os.open(in_path, os.O_WRONLY | os.O_NONBLOCK)  # re-attach
        os.write(writer, b"two\n")
        await pio.close_stdin()  # CloseIO while the client still writes: EOF waits for the client
        await trio.sleep(0.2)
        assert bytes(got) == b"one\ntwo\n" and not eof.is_set()
        os.close(writer)
        await eof.wait()
        assert bytes(got) == b"one\ntwo\n"
        box.close()
        await pio.aclose()


async def test_close_stdin_before_start_means_no_keep_alive(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        (in_path,) = fifos(tmp_path, "stdin")
        pio = await ProcessIO.prepare(StdioConfig(in_path, "", ""), container_id="c1", namespace="ns")
        box = Container(pio)
        await pio.close_stdin()
        opening = BlockingOpen(nursery, in_path, os.O_WRONLY)
        await trio.sleep(0.05)  # the client's open is pending: it counts as a writer already
        await pio.start(nursery)
        writer = await opening.result()
        os.write(writer, b"only\n")
        os.close(writer)
        got, eof = bytearray(), trio.Event()
        await read_into(box.stdin, got, eof)
        assert bytes(got) == b"only\n" and eof.is_set()
        box.close()
        await pio.aclose()


async def test_file_uri_appends_both_streams_through_one_writer(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        log = tmp_path / "deep" / "dir" / "c1.log"
        uri = f"file://{log}"
        pio = await ProcessIO.prepare(StdioConfig("", uri, uri), container_id="c1", namespace="ns")
        assert log.exists() and stat.S_IMODE(log.stat().st_mode) == 0o644
        assert stat.S_IMODE(log.parent.stat().st_mode) == 0o755
        log.write_bytes(b"before\n")  # appended to, never truncated
        box = Container(pio)
        await pio.start(nursery)
        opened = [p for p in os.listdir("/proc/self/fd") if fd_target(p) == str(log)]
        assert len(opened) == 1  # stdout and stderr share one writer
        await write_all(box.stdout, b"out\n")
        box.close("stdout")
        await trio.sleep(0.05)
        await write_all(box.stderr, b"err\n")
        box.close()
        assert await pio.drain(5)
        assert log.read_bytes() == b"before\nout\nerr\n"
        assert not [p for p in os.listdir("/proc/self/fd") if fd_target(p) == str(log)]
        await pio.aclose()


async def test_plain_regular_file_path_is_appended(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        out = tmp_path / "out.txt"
        out.write_bytes(b"x")
        pio = await ProcessIO.prepare(StdioConfig("", str(out), ""), container_id="c1", namespace="ns")
        box = Container(pio)
        await pio.start(nursery)
        await write_all(box.stdout, b"y" * 200_000)
        box.close()
        assert await pio.drain(5)
        assert out.read_bytes() == b"x" + b"y" * 200_000
        await pio.aclose()


async def test_a_stalled_fifo_reader_does_not_block_another_process(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        slow_path, fast_path = fifos(tmp_path, "slow", "fast")
        slow = await ProcessIO.prepare(StdioConfig("", slow_path, ""), container_id="slow", namespace="ns")
        fast = await ProcessIO.prepare(StdioConfig("", fast_path, ""), container_id="fast", namespace="ns")
        slow_box, fast_box = Container(slow), Container(fast)
        await slow.start(nursery)
        await fast.start(nursery)
        stalled_client = os.open(slow_path, os.O_RDONLY | os.O_NONBLOCK)  # opens, never reads
        fast_client = os.open(fast_path, os.O_RDONLY | os.O_NONBLOCK)
        payload = os.urandom(2 * 1024 * 1024)
        got = bytearray()
        stuck = trio.CancelScope()

        async def slow_container() -> None:
            with stuck:
                await write_all(slow_box.stdout, payload)
            slow_box.close()

        fast_eof = trio.Event()
        nursery.start_soon(slow_container)
        nursery.start_soon(read_into, fast_client, got, fast_eof)
        await write_all(fast_box.stdout, payload)
        fast_box.close()
        assert await fast.drain(5)
        await fast_eof.wait()
        assert bytes(got) == payload
        assert await slow.drain(0.2) is False  # still stuck behind its reader: it only waits itself
        assert not stuck.cancelled_caught
        stuck.cancel()
        await trio.sleep(0)
        await slow.aclose()
        await fast.aclose()
        os.close(stalled_client)
        os.close(fast_client)


async def test_null_io(nursery) -> None:
    with trio.fail_after(TIMEOUT):
        pio = await ProcessIO.prepare(StdioConfig(), container_id="c1", namespace="ns")
        assert pio.runtime_stdio == (None, None, None) and pio.console_socket_path is None
        await pio.start(nursery)
        assert await pio.drain(1)
        await pio.close_stdin()
        pio.resize(80, 24)  # no console: nothing to do
        await pio.aclose()
        await pio.aclose()


async def test_container_ends_are_chowned_to_io_uid_gid(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        in_path, out_path = fifos(tmp_path, "in", "out")
        pio = await ProcessIO.prepare(StdioConfig(in_path, out_path, ""), container_id="c1", namespace="ns",
                                      io_uid=1234, io_gid=4321)
        for fd in pio.runtime_stdio[:2]:
            st = os.fstat(fd)
            assert (st.st_uid, st.st_gid) == (1234, 4321)
        await pio.aclose()


async def test_unknown_scheme_is_refused_before_anything_is_opened(nursery) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(UnsupportedStdioError, match="unknown STDIO scheme foo"):
            await ProcessIO.prepare(StdioConfig("", "foo:///x", ""), container_id="c1", namespace="ns")


async def test_missing_fifo_fails_prepare_before_the_runtime_runs(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        (in_path,) = fifos(tmp_path, "in")
        missing = str(tmp_path / "nope")
        with pytest.raises(StdioOpenError, match="stdout") as info:
            await ProcessIO.prepare(StdioConfig(in_path, missing, ""), container_id="c1", namespace="ns")
        assert info.value.filename == missing and info.value.errno == errno.ENOENT


async def test_stdin_fifo_gone_at_start_fails_start_and_closes_everything(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        in_path, out_path = fifos(tmp_path, "in", "out")
        pio = await ProcessIO.prepare(StdioConfig(in_path, out_path, ""), container_id="c1", namespace="ns")
        os.unlink(in_path)
        os.unlink(out_path)  # prepare holds it open already: no error for it
        with pytest.raises(StdioOpenError, match="stdin fifo") as info:
            await pio.start(nursery)
        assert info.value.filename == in_path and info.value.errno == errno.ENOENT
        await pio.aclose()


async def test_prepare_opens_the_output_fifos_so_the_clients_open_completes_before_the_runtime(tmp_path,
                                                                                                 nursery) -> None:
    """A client opening its FIFOs as ctr does (a blocking open in the background) is through it by the time the
    runtime runs, so its open cannot still be pending when the exit reaches it (process_io docstring, 1. and 4.)."""
    with trio.fail_after(TIMEOUT):
        out_path, err_path = fifos(tmp_path, "out", "err")
        opening = [BlockingOpen(nursery, p, os.O_RDONLY) for p in (out_path, err_path)]
        await trio.sleep(0.05)
        pio = await ProcessIO.prepare(StdioConfig("", out_path, err_path), container_id="c1", namespace="ns")
        client_out, client_err = [await o.result() for o in opening]  # before start: the runtime has not run
        box = Container(pio)
        await pio.start(nursery)
        await write_all(box.stdout, b"out\n")
        await write_all(box.stderr, b"err\n")
        box.close()
        got_out, got_err = bytearray(), bytearray()
        nursery.start_soon(read_into, client_out, got_out)
        nursery.start_soon(read_into, client_err, got_err)
        assert await pio.drain(5)
        assert (bytes(got_out), bytes(got_err)) == (b"out\n", b"err\n")
        await pio.aclose()
        os.close(client_out)
        os.close(client_err)


async def test_stdin_from_a_regular_file(tmp_path, nursery) -> None:
    with trio.fail_after(TIMEOUT):
        src = tmp_path / "input"
        src.write_bytes(b"abc" * 50_000)
        pio = await ProcessIO.prepare(StdioConfig(str(src), "", ""), container_id="c1", namespace="ns")
        box = Container(pio)
        await pio.start(nursery)
        got, eof = bytearray(), trio.Event()
        await read_into(box.stdin, got, eof)  # a file has an end: no keep-alive applies
        assert bytes(got) == b"abc" * 50_000 and eof.is_set()
        box.close()
        await pio.aclose()
