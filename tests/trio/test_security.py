"""Security properties of docs/security.md seen from inside a daemon: the Task API refuses ids that could name
paths before any handler runs (every Task method, v2 and v3, and the Shard service, through the real ttrpc server
that ``daemon.build`` wires), and the console socket takes the pty master only from a peer of our own uid.

Each test fails when its property is broken (checked against a copy of the code with the check removed).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import trio
from google.protobuf import empty_pb2

from shim import daemon, sharing
from shim.flags import ShimFlags
from shim.io.console import ConsoleSocket
from shim.manager import Manager
from shim.service import METHODS, SERVICES, TaskService
from tests.prereq import unavailable
from tests.trio.test_io_terminal import hand_over_master
from tests.trio.test_ttrpc_server_client import connected
from ttrpc.status import Code, StatusError

BAD = ["..", "../../etc/cron.d/x", "a/b", "a\0b", "x" * 77, ".hidden", "a b"]


class Recorder(TaskService):
    """Answers every Task method with its response type's default and records what reached it."""

    def __init__(self) -> None:
        self.reached: list[tuple[str, str, str]] = []

    def methods(self):
        table = super().methods()
        for name, method in table.items():
            table[name] = type(method)(method.request_type, self._record(name))
        return table

    def _record(self, name: str):
        async def handler(ctx, request):
            self.reached.append((name, getattr(request, "id", ""), getattr(request, "exec_id", "")))
            return empty_pb2.Empty()
        return handler


class RecorderManager(Manager):
    name = "io.containerd.test.v1"

    def __init__(self) -> None:
        self.service = Recorder()

    def task_service(self, d: daemon.Daemon) -> TaskService:
        return self.service


async def call(client, service: str, method: str, **fields) -> Code:
    request = METHODS[method][0](**fields)
    try:
        await client.call(service, method, request, empty_pb2.Empty)
    except StatusError as err:
        return err.code
    return Code.OK


@pytest.mark.parametrize("service", SERVICES)
async def test_no_task_method_sees_an_id_that_could_name_a_path(service: str) -> None:
    manager = RecorderManager()
    parts = daemon.build(manager, ShimFlags(namespace="ns", id="c1", address="/run/none.sock", shared="4:30"))
    async with connected(parts.server) as client:
        for method, (request_type, _) in METHODS.items():
            fields = request_type.DESCRIPTOR.fields_by_name
            for bad in BAD:
                assert await call(client, service, method, id=bad) == Code.INVALID_ARGUMENT, (method, bad)
                if "exec_id" in fields:
                    assert await call(client, service, method, id="c1", exec_id=bad) == Code.INVALID_ARGUMENT
        assert manager.service.reached == []
        assert await call(client, service, "Create", bundle="/b/c1") == Code.INVALID_ARGUMENT  # no id at all
        assert await call(client, service, "Exec", id="c1") == Code.INVALID_ARGUMENT  # no exec id
        for bad in BAD:
            answer = await client.call(sharing.SERVICE, sharing.METHOD, sharing.ReserveRequest(bad),
                                       sharing.ReserveResponse)
            assert not answer.accepted and answer.reason.startswith("container id"), answer
        assert parts.occupancy.reservations == {}
        assert manager.service.reached == []
        # what containerd sends passes: valid ids, and no id where ctr shim sends none
        assert await call(client, service, "Exec", id="c1", exec_id="e-1.x_2") == Code.OK
        assert await call(client, service, "State", id="c1", exec_id="") == Code.OK
        assert await call(client, service, "Shutdown") == Code.OK
    assert manager.service.reached == [("Exec", "c1", "e-1.x_2"), ("State", "c1", ""), ("Shutdown", "", "")]


IMPOSTOR = r"""
import socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
    sock.connect(sys.argv[1])
    socket.send_fds(sock, [b"/dev/pts/impostor"], [0])  # its stdin, /dev/null: not a terminal
"""


async def test_the_console_socket_takes_the_master_only_from_our_uid() -> None:
    if os.geteuid() != 0:
        unavailable("connecting as another user needs root")
    console = ConsoleSocket.create()
    slave = -1
    try:
        os.chmod(console.directory, 0o755)  # open the private directory (the first fence) to reach the second
        os.chmod(console.path, 0o777)
        subprocess.run([sys.executable, "-c", IMPOSTOR, console.path], user=65534, group=65534, extra_groups=[],
                       stdin=subprocess.DEVNULL, check=True, timeout=30)
        slave = hand_over_master(console.path)  # then the runtime, as root
        with trio.fail_after(10):
            master = await console.receive_master()
        try:
            assert os.isatty(master), "took the impostor's descriptor"
        finally:
            os.close(master)
    finally:
        console.close()
        if slave >= 0:
            os.close(slave)
