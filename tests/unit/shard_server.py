"""A real daemon-side Shard service for tests of the blocking client side (``sharing.reserve``, ``start``).

``ShardServer(path, ...)`` runs what a sharing daemon runs for ``pyshim.shard.v1.Shard``: an ``Occupancy``'s
``shard_methods()`` on a real trio ttrpc ``Server`` listening on the unix socket ``path``, in a trio run of its
own thread. ``call(fn, *args)`` runs ``fn`` in that trio thread (the occupancy is only ever touched there, as in
the daemon). ``shard=False`` serves no Shard service at all (a daemon that does not share).
"""
from __future__ import annotations

import os
import socket
import threading

import trio

from shim import sharing
from shim.occupancy import Occupancy
from ttrpc.server import Server

START_TIMEOUT = 10.0


class ShardServer:
    def __init__(self, path: str, max_tasks: int = 2, *, reserved: tuple[str, ...] = (), shard: bool = True) -> None:
        self.path = path
        self.max_tasks = max_tasks
        self.reserved = reserved
        self.shard = shard
        self.occupancy: Occupancy | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ShardServer:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(self.path)
        sock.listen(16)
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("the shard server did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        assert self._thread is not None
        self._thread.join(START_TIMEOUT)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        if self._error is not None:
            raise self._error

    def call(self, fn, *args):
        """``fn(*args)`` in the server's trio thread; its result."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def _run(self, sock: socket.socket) -> None:
        try:
            trio.run(self._main, sock)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self, sock: socket.socket) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self.occupancy = Occupancy("", None, sharing.Sharing("test", self.max_tasks, 3600.0), lambda: None)
        for task in self.reserved:
            assert self.occupancy.reserve(task).accepted
        server = Server()
        if self.shard:
            server.register(sharing.SERVICE, self.occupancy.shard_methods())
        with trio.CancelScope() as self._stop:
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve, trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                self._ready.set()
                await trio.sleep_forever()
