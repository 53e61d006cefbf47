"""ProcessIO: every fd and copy task of one process's stdio, from before the runtime call to delete.

Lifecycle (containerd ``pkg/process/io.go`` and ``init.go`` at v1.6.20, runc ``docs/terminals.md``):
1. `prepare` (before runtime create/exec): pipes for the requested streams (container ends fchown'ed to
   io_uid/io_gid), or a started and ready binary logger, or a console socket. `runtime_stdio` are the fds to
   give the runtime as 0/1/2 (None = /dev/null, or captured output at the caller's choice in terminal mode).
   The client's output FIFOs are opened here already, and only once the client's reader is there: O_WRONLY|
   O_NONBLOCK fails with ENXIO until some reader has the FIFO open, so it is retried (at most READER_WAIT s)
   until the client's own open is in the kernel; our open then completes it (upstream's blocking O_WRONLY open
   waits the same way). Our own O_RDONLY|O_NONBLOCK handle comes after. A client whose open came only after our
   writer was gone would block in it for good: ctr 2.x's `task exec` waits for its FIFO copies without
   cancelling their opens, and hung so when an exec printed nothing on stderr. Opening before the runtime runs
   also gives the client the whole runtime call to complete its open before the exit (see 4.; upstream opens an
   exec's only after `runc exec`). A client with no reader after READER_WAIT gets today's handles anyway (our
   reader, then the writer) and a warning: what the process writes waits in the FIFO for a reader.
2. `start` (after the runtime command returned): closes the shim's copies of the container ends, receives the
   pty master, opens the client's stdin FIFO and starts the copies in the caller's nursery under a scope we own.
   Output FIFOs keep our read handle so the client may detach without the copy seeing EPIPE; a FIFO stdin gets
   a keep-alive writer so a client reopening its writer does not end the container's stdin.
3. `close_stdin` (CloseIO) drops the keep-alive; EOF then reaches the container once the client's writer is
   gone too. In terminal mode stdin EOF hangs the tty up, as upstream does: the output copy drains what is
   buffered and stops, then the master is closed.
4. `drain` (after the process exit was reaped, before TaskExit is published) waits for the output copies to
   finish, bounded; the last byte is in the client's FIFO, and the writer closed, when it returns True. It
   then waits, bounded by READ_WAIT, until the client has read its FIFOs empty (FIONREAD on our kept reader):
   a containerd client (ctr) opens its FIFOs in a goroutine and, once the exit reaches it, cancels an open that
   has not yet been marked done, losing everything in the FIFO (containerd/fifo ``openFifo``); a client that is
   reading can no longer lose it. A client that went away (``ctr run -d``) delays the exit by READ_WAIT.
5. `aclose` (delete): cancels the copies, closes every fd and the console socket, stops the logger.
Ownership: the ProcessIO owns all fds (FdOwner); a copy task closes its own stream's fds when the stream ends
(that is how the client sees EOF); `aclose` closes the rest.
"""
from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import stat
import termios

import trio

from shim.io.config import Mode, Output, Plan, Sink, StdioConfig, plan
from shim.io.console import ConsoleSocket, resize
from shim.io.errors import StdioOpenError, UnsupportedStdioError
from shim.io.fds import Fd, FdOwner, StopSignal, pump
from shim.io.logger import BinaryLogger, Spawner

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0  # upstream bounds the console hand-over and FIFO opens after create by 30 s
STOP_COPIES_TIMEOUT = 5.0
READER_WAIT = 10.0  # prepare: at most this long for the client's reader of an output FIFO (module docstring)
READ_WAIT = 1.0  # drain: at most this long for the client to read what is left in its FIFOs (module docstring)


class ProcessIO:
    """Every descriptor and copy task of one process's stdio, from before its creation to its deletion (see the
    lifecycle in the module docstring)."""

    def __init__(self, cfg: StdioConfig, p: Plan, container_id: str, namespace: str) -> None:
        self.config = cfg
        self.plan = p
        self._id = container_id
        self._ns = namespace
        self._fds = FdOwner()
        self.runtime_stdio: tuple[int | None, int | None, int | None] = (None, None, None)
        self.console_socket_path: str | None = None
        self._console: ConsoleSocket | None = None
        self._logger: BinaryLogger | None = None
        self._container_ends: list[Fd] = []  # closed by start(): the runtime has handed them on
        self._stdin_w: Fd | None = None  # shim's end of the container's stdin pipe
        self._out_r: Fd | None = None  # shim's ends of the container's stdout/stderr pipes
        self._err_r: Fd | None = None
        self._tty_out: Fd | None = None  # terminal + binary: our end of the pipe to the logger's fd 3
        self._master: Fd | None = None
        self._early: dict[str, tuple[Fd, Fd | None]] = {}  # label -> (writer, kept reader) opened by prepare
        self._keepalive: Fd | None = None
        self._stdin_closed = False
        self._stop = StopSignal()  # tty output: stop at the first "nothing readable" (exit or hang-up)
        self._scope = trio.CancelScope()
        self._pending_outputs = 0
        self._outputs_done = trio.Event()
        self._unread: list[Fd] = []  # kept readers of output FIFOs whose copy ended: closed once the client read
        self._copies_done = trio.Event()
        self._running = False  # _run entered: _copies_done will be set
        self._state = "prepared"

    # -- 1. before the runtime ------------------------------------------------------------------------------

    @classmethod
    async def prepare(cls, cfg: StdioConfig, *, container_id: str, namespace: str, io_uid: int = 0,
                      io_gid: int = 0, spawner: Spawner | None = None) -> ProcessIO:
        """Step 1: pipes, logger or console socket for ``cfg``, before the process is created. The
        process's ends are in ``runtime_stdio`` (and ``console_socket_path`` in terminal mode)."""
        pio = cls(cfg, plan(cfg), container_id, namespace)
        try:
            await pio._prepare(io_uid, io_gid, spawner)
        except BaseException:
            await pio.aclose()
            raise
        return pio

    async def _prepare(self, uid: int, gid: int, spawner: Spawner | None) -> None:
        p = self.plan
        if p.mode is Mode.NULL:
            return
        self._check_paths()
        if p.mode in (Mode.TERMINAL, Mode.PIPES):
            for out, label in ((p.stdout, "stdout"), (p.stderr, "stderr")):
                if p.mode is Mode.TERMINAL and label == "stderr":
                    break  # the tty merges both streams into stdout
                if out.sink is Sink.PATH and _is_fifo(out.path):
                    self._early[label] = await self._open_output_fifo(out.path, label)
        if p.mode is Mode.TERMINAL:
            self._console = ConsoleSocket.create()
            self.console_socket_path = self._console.path
            if p.stdout.sink is Sink.BINARY:
                out_r, self._tty_out = self._fds.pipe("tty output")
                err_r, err_w = self._fds.pipe("unused stderr")
                err_w.close()  # the tty merges both streams: the logger's fd 4 just sees EOF
                await self._start_logger(spawner, out_r, err_r)
                os.set_blocking(self._tty_out.fileno, False)
            return
        if p.mode is Mode.BINARY:
            out_r, out_w = self._fds.pipe("stdout")
            err_r, err_w = self._fds.pipe("stderr")
            self._container_ends += [out_w, err_w]
            _chown(uid, gid, out_w, err_w)
            if self.config.stdin:
                log.warning("container %s: binary logging has no stdin; ignoring %s", self._id, self.config.stdin)
            await self._start_logger(spawner, out_r, err_r)
            self.runtime_stdio = (None, out_w.fileno, err_w.fileno)
            return
        stdin = stdout = stderr = None
        if p.stdin:
            r, self._stdin_w = self._fds.pipe("stdin")
            self._container_ends.append(r)
            stdin = r
        if p.stdout.sink is not Sink.NONE:
            self._out_r, stdout = self._fds.pipe("stdout")
            self._container_ends.append(stdout)
        if p.stderr.sink is not Sink.NONE:
            self._err_r, stderr = self._fds.pipe("stderr")
            self._container_ends.append(stderr)
        _chown(uid, gid, *self._container_ends)
        for shim_end in (self._stdin_w, self._out_r, self._err_r):
            if shim_end is not None:
                os.set_blocking(shim_end.fileno, False)
        self.runtime_stdio = tuple(f.fileno if f else None for f in (stdin, stdout, stderr))  # type: ignore[assignment]

    def _check_paths(self) -> None:
        """Create file:// destinations and check the client's paths exist, before the runtime runs."""
        p = self.plan
        for out, label in ((p.stdout, "stdout"), (p.stderr, "stderr")):
            if out.sink is Sink.FILE:
                _create_file(out.path)
            elif out.sink is Sink.PATH:
                _must_exist(out.path, label)
        if p.stdin:
            _must_exist(p.stdin, "stdin")

    async def _start_logger(self, spawner: Spawner | None, out_r: Fd, err_r: Fd) -> None:
        if spawner is None:
            raise UnsupportedStdioError("binary:// logging needs a spawner (none was given)")
        self._logger = await BinaryLogger.start(
            spawner, self.plan.logger_argv, container_id=self._id, namespace=self._ns,
            stdout_r=out_r, stderr_r=err_r, fds=self._fds)
        out_r.close()  # the logger has its own copies; the shim never reads them
        err_r.close()

    # -- 2. after the runtime -------------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery, *, timeout: float = START_TIMEOUT) -> None:
        """Hand-over after the runtime returned; on failure everything is closed (aclose) and the error raised."""
        if self._state != "prepared":
            raise RuntimeError(f"ProcessIO.start called when {self._state}")
        self._state = "starting"
        try:
            while self._container_ends:
                self._container_ends.pop().close()
            outputs, inputs = await self._open_streams(timeout)
            await nursery.start(self._run, outputs, inputs)
        except BaseException:
            await self.aclose()
            raise
        self._state = "running"

    async def _open_streams(self, timeout: float) -> tuple[list[tuple], list[tuple]]:
        """(output copies, input copies) as argument tuples for _output_copy and _stdin_copy."""
        p = self.plan
        shared: dict[str, Fd] = {}
        outputs: list[tuple] = []
        inputs: list[tuple] = []
        if p.mode is Mode.TERMINAL:
            assert self._console is not None
            with trio.fail_after(timeout):
                master = await self._console.receive_master()
            self._master = self._fds.adopt(master, "pty master", pollable=True)
            self._console.close()
            self._console = None
            outputs.append((self._master, *self._tty_destination(shared), "tty output"))
            if p.stdin:
                inputs.append((self._open_stdin(p.stdin), self._master, "tty input"))
        elif p.mode is Mode.PIPES:
            for src, out, label in ((self._out_r, p.stdout, "stdout"), (self._err_r, p.stderr, "stderr")):
                if src is not None:
                    outputs.append((src, *self._output(out, label, shared), label))
            if self._stdin_w is not None:
                inputs.append((self._open_stdin(p.stdin), self._stdin_w, "stdin"))
        return outputs, inputs

    def _tty_destination(self, shared: dict[str, Fd]) -> tuple[Fd | None, Fd | None]:
        out = self.plan.stdout
        if out.sink is Sink.BINARY:
            return self._tty_out, None
        if out.sink is Sink.NONE:
            return None, None  # nobody wants the output; keep reading so the tty never fills up
        return self._output(out, "stdout", shared)

    def _output(self, out: Output, label: str, shared: dict[str, Fd]) -> tuple[Fd, Fd | None]:
        """(writer, kept reader): the FIFO prepare opened, or ``out`` opened now."""
        return self._early.pop(label, None) or self._open_output(out, label, shared)

    async def _open_output_fifo(self, path: str, label: str) -> tuple[Fd, Fd]:
        """(writer, kept reader) of an output FIFO, the writer opened once the client's reader is there."""
        deadline = trio.current_time() + READER_WAIT
        pause = 0.001
        while True:
            try:
                writer = self._fds.open(path, os.O_WRONLY | os.O_NONBLOCK, f"{label} fifo")
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise StdioOpenError.wrap(f"{label} destination", path, exc) from exc
            if trio.current_time() >= deadline:
                log.warning("container %s: nobody reads %s after %.0f s; its output waits in the FIFO", self._id,
                            path, READER_WAIT)
                return self._open_output(Output(Sink.PATH, path), label, {})
            await trio.sleep(pause)
            pause = min(pause * 2, 0.02)
        try:
            return writer, self._fds.open(path, os.O_RDONLY | os.O_NONBLOCK, f"{label} fifo (kept reader)")
        except OSError as exc:
            raise StdioOpenError.wrap(f"{label} destination", path, exc) from exc

    def _open_output(self, out: Output, label: str, shared: dict[str, Fd]) -> tuple[Fd, Fd | None]:
        """(writer, kept reader) for a stdout/stderr destination."""
        try:
            if out.sink is Sink.PATH and stat.S_ISFIFO(os.stat(out.path).st_mode):
                keep = self._fds.open(out.path, os.O_RDONLY | os.O_NONBLOCK, f"{label} fifo (kept reader)")
                return self._fds.open(out.path, os.O_WRONLY | os.O_NONBLOCK, f"{label} fifo"), keep
            if out.path in shared:
                return shared[out.path].share(), None
            writer = self._fds.open(out.path, os.O_WRONLY | os.O_APPEND, f"{label} file")
        except OSError as exc:
            raise StdioOpenError.wrap(f"{label} destination", out.path, exc) from exc
        shared[out.path] = writer
        return writer, None

    def _open_stdin(self, path: str) -> Fd:
        try:
            if not stat.S_ISFIFO(os.stat(path).st_mode):
                return self._fds.open(path, os.O_RDONLY, "stdin file")
            reader = self._fds.open(path, os.O_RDONLY | os.O_NONBLOCK, "stdin fifo")
            if not self._stdin_closed:  # reader exists, so this open cannot block or fail with ENXIO
                self._keepalive = self._fds.open(path, os.O_WRONLY | os.O_NONBLOCK, "stdin fifo (keep-alive)")
        except OSError as exc:
            raise StdioOpenError.wrap("stdin fifo", path, exc) from exc
        return reader

    async def _run(self, outputs: list[tuple], inputs: list[tuple], *,
                   task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        self._running = True
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._pending_outputs = len(outputs)
                    if not outputs:
                        self._outputs_done.set()
                    for args in outputs:
                        nursery.start_soon(self._output_copy, *args)
                    for args in inputs:
                        nursery.start_soon(self._stdin_copy, *args)
                    task_status.started()
        finally:
            if self._master is not None:
                self._master.close()  # both tty copies are done: hang up
            self._outputs_done.set()
            self._copies_done.set()

    async def _output_copy(self, src: Fd, dst: Fd | None, keep: Fd | None, label: str) -> None:
        tty = src is self._master
        try:
            await pump(src, dst, f"{self._id} {label}", stop=self._stop if tty else None)
        except Exception as exc:  # noqa: BLE001 - one stream's failure ends that stream, nothing else
            log.warning("container %s: %s copy ended: %s", self._id, label, exc,
                        exc_info=not isinstance(exc, OSError))
        finally:
            if not tty:
                src.close()
            if dst is not None:
                dst.release()  # the client sees EOF once the last writer is gone
            if keep is not None:
                self._unread.append(keep)  # drain closes it once the client has read the FIFO (module doc)
            self._pending_outputs -= 1
            if self._pending_outputs == 0:
                self._outputs_done.set()

    async def _stdin_copy(self, src: Fd, dst: Fd, label: str) -> None:
        try:
            await pump(src, dst, f"{self._id} {label}", discard_after_write_error=False)
        except Exception as exc:  # noqa: BLE001 - see _output_copy
            log.warning("container %s: %s copy ended: %s", self._id, label, exc,
                        exc_info=not isinstance(exc, OSError))
        finally:
            src.close()
            if dst is self._master:
                self._stop.set()  # upstream shuts the console down when stdin ends
            else:
                dst.close()  # the container reads EOF

    # -- 3.-5. control --------------------------------------------------------------------------------------

    async def close_stdin(self) -> None:
        """Step 3 (CloseIO): the container reads EOF once the client's writer is gone too."""
        self._stdin_closed = True
        if self._keepalive is not None:
            self._keepalive.close()
            self._keepalive = None

    def resize(self, width: int, height: int) -> None:
        """Set the terminal's size (terminal mode; a no-op otherwise)."""
        if self._master is not None and not self._master.closed:
            resize(self._master.fileno, width, height)

    async def drain(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) until the output copies hit EOF; call after the process exited.
        True if they did; False leaves them running (a daemonised child may still hold the pipes)."""
        if self._state != "running":
            return True
        self._stop.set()
        deadline = trio.current_time() + timeout
        with trio.move_on_at(deadline):
            await self._outputs_done.wait()
        if not self._outputs_done.is_set():
            return False
        await self._wait_read(min(deadline, trio.current_time() + READ_WAIT))
        return True

    async def _wait_read(self, deadline: float) -> None:
        """Until ``deadline``, poll our kept readers until the client has read each FIFO empty; then close them."""
        pause = 0.002
        while self._unread:
            keep = self._unread[0]
            if keep.closed or _unread_bytes(keep.fileno) == 0:
                self._unread.pop(0).close()
                continue
            if trio.current_time() >= deadline:
                log.info("container %s: the client left %d bytes unread in its FIFO", self._id,
                         _unread_bytes(keep.fileno))
                break
            await trio.sleep(min(pause, max(0.0, deadline - trio.current_time())))
            pause = min(pause * 2, 0.05)
        while self._unread:
            self._unread.pop().close()

    async def aclose(self) -> None:
        """Step 5: stop the copies, close every descriptor, stop the logger. Idempotent, shielded."""
        if self._state == "closed":
            return
        self._state = "closed"
        with trio.CancelScope(shield=True):
            self._scope.cancel()
            if self._running:
                with trio.move_on_after(STOP_COPIES_TIMEOUT):
                    await self._copies_done.wait()
            if self._console is not None:
                self._console.close()
            self._fds.close_all()
            if self._logger is not None:
                await self._logger.stop()


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False  # opened (and the error told) where it is used


def _unread_bytes(fd: int) -> int:
    """Bytes waiting in the pipe ``fd`` reads from (0 when it cannot be told)."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return 0
    return buf[0]


def _chown(uid: int, gid: int, *fds: Fd) -> None:
    if (uid, gid) == (os.geteuid(), os.getegid()):
        return  # our pipes already belong to us; fchown would need privileges for nothing
    for fd in fds:
        os.fchown(fd.fileno, uid, gid)


def _must_exist(path: str, label: str) -> None:
    """Fail before the runtime runs, not after: the client creates its FIFOs before Create/Exec."""
    try:
        os.stat(path)
    except OSError as exc:
        raise StdioOpenError.wrap(label, path, exc) from exc


def _create_file(path: str) -> None:
    """file:// destination: parents 0755, the file 0644, appended to (never truncated)."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        raise StdioOpenError.wrap("log file", path, exc) from exc
