"""The server and client over a real unix socket: Server.serve with trio.SocketListener, open_unix_client,
the same-user credential check at accept, and shutdown closing the listener.

Rules: real clock (no autojump: the sockets do real I/O), every test under trio.fail_after, sockets in a private
short temporary directory.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator

import pytest
import trio

from protos import ttrpc_pb2
from ttrpc.client import open_unix_client
from ttrpc.server import CallContext, Method, Server
from ttrpc.status import ConnectionClosed
from ttrpc.unixcreds import PeerCredentials, peer_credentials, same_user

KV = ttrpc_pb2.KeyValue
SVC = "test.v1.Unix"


async def echo(ctx: CallContext, req: KV) -> KV:
    return KV(key=req.key, value=",".join(ctx.get("who")))


def make_server(**kwargs: object) -> Server:
    server = Server(**kwargs)  # type: ignore[arg-type]
    server.register(SVC, {"Echo": Method(KV, echo)})
    return server


@pytest.fixture
def sock_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="ttrpc-", dir="/tmp") as tmp:
        yield os.path.join(tmp, "s.sock")


async def listen(path: str) -> trio.SocketListener:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(16)
    return trio.SocketListener(sock)


async def test_call_over_unix_socket_with_same_user_check(sock_path: str) -> None:
    with trio.fail_after(10):
        server = make_server()  # default: require_same_user=True
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, await listen(sock_path))
            async with open_unix_client("unix://" + sock_path) as client:
                got = await client.call(SVC, "Echo", KV(key="k"), KV, metadata=[("who", "me")], timeout=5)
                assert got == KV(key="k", value="me")
            async with open_unix_client(sock_path) as a, open_unix_client(sock_path) as b:
                async with trio.open_nursery() as calls:
                    for i in range(20):
                        calls.start_soon(_echo_check, a if i % 2 else b, str(i))
            await server.shutdown()
        assert server.connection_count == 0


async def _echo_check(client: object, key: str) -> None:
    assert await client.call(SVC, "Echo", KV(key=key), KV) == KV(key=key)  # type: ignore[attr-defined]


async def test_rejected_peer_is_closed_without_a_byte(sock_path: str) -> None:
    with trio.fail_after(10):
        seen: list[PeerCredentials] = []

        def refuse(creds: PeerCredentials) -> bool:
            seen.append(creds)
            return False

        server = make_server(credentials_check=refuse)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, await listen(sock_path))
            async with open_unix_client(sock_path) as client:
                with pytest.raises(ConnectionClosed):
                    await client.call(SVC, "Echo", KV(key="k"), KV)
            stream = await trio.open_unix_socket(sock_path)
            assert await stream.receive_some() == b""  # closed silently, nothing sent
            await stream.aclose()
            server.close()
        assert seen[0] == PeerCredentials(os.getpid(), os.geteuid(), os.getegid())
        assert len(seen) == 2


async def test_shutdown_stops_accepting_and_closes_the_listener(sock_path: str) -> None:
    with trio.fail_after(10):
        server = make_server()
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, await listen(sock_path))
            async with open_unix_client(sock_path) as client:
                assert await client.call(SVC, "Echo", KV(key="a"), KV) == KV(key="a")
                await server.shutdown()
                with pytest.raises(ConnectionClosed):
                    await client.call(SVC, "Echo", KV(key="b"), KV)
        with pytest.raises(ConnectionRefusedError):
            await trio.open_unix_socket(sock_path)


async def test_peer_credentials_of_a_socketpair() -> None:
    with trio.fail_after(5):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with a, b:
            creds = peer_credentials(a)
            assert creds == PeerCredentials(os.getpid(), os.geteuid(), os.getegid())
            assert same_user(creds)
            assert not same_user(PeerCredentials(creds.pid, creds.uid + 1, creds.gid))
            assert not same_user(PeerCredentials(creds.pid, creds.uid, creds.gid + 1))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unconnected:
            # Linux reports "nobody" (uid/gid -1) for a socket without a peer; the check must refuse it
            assert not same_user(peer_credentials(unconnected))
        await trio.lowlevel.checkpoint()
