"""``start``'s side of the fork server protocol against a stand-in zygote in trio: what the client sends, what
it makes of each answer, and the guarantee behind the fallback (no daemon may serve after start gave up).

The stand-in plays the zygote's part of the wire protocol (shim/forkserver/zygote.py); the real server and zygotes
are exercised in tests/integration/test_forkserver.py.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile

import pytest
import trio

from shim.forkserver import client
from shim.forkserver import protocol as proto

REQUEST = proto.Request(argv=("-namespace", "ns", "-id", "c1", "-address", "/a.sock"), env=(b"A=1",), cwd=b"/",
                        umask=0o022, program=("/usr/local/bin/containerd-shim-pyshim-v1",))


@pytest.fixture
def location():
    with tempfile.TemporaryDirectory(prefix="pyfs") as d:  # short: sun_path
        yield proto.Location(d, "k", "shim.runc.manager:MANAGER")


async def stand_in(location: proto.Location, answer, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Accept one connection, receive the request and its descriptors, then ``await answer(conn, req, fds)``."""
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with listener:
        await listener.bind(location.path("sock"))
        listener.listen(8)
        task_status.started()
        conn, _ = await listener.accept()
        with conn:
            data, ancdata, _, _ = await conn.recvmsg(proto.MAX_REQUEST, socket.CMSG_SPACE(8))
            fds = [int.from_bytes(p[i:i + 4], sys.byteorder) for _, _, p in ancdata for i in range(0, len(p), 4)]
            try:
                await answer(conn, proto.decode_request(data), fds)
            finally:
                for fd in fds:
                    os.close(fd)


async def ask(location: proto.Location, timeout: float = 5.0) -> tuple[int, str]:
    with socket.socket(socket.AF_UNIX) as listening:
        return await trio.to_thread.run_sync(client.request_daemon, location, REQUEST, listening.fileno(), timeout)


async def test_a_reply_with_a_pid_is_the_daemon(location: proto.Location) -> None:
    seen = {}

    async def answer(conn, req, fds):
        seen.update(req=req, fd_is_socket=os.path.exists(f"/proc/self/fd/{fds[0]}"), fds=len(fds))
        await conn.send(proto.encode_reply(pid=4242))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(stand_in, location, answer)
            assert await ask(location) == (4242, "")
    assert seen == {"req": REQUEST, "fd_is_socket": True, "fds": 1}


async def test_a_refusal_and_a_silent_close_are_unavailability(location: proto.Location) -> None:
    async def refuse(conn, req, fds):
        await conn.send(proto.encode_reply(error="installed code changed"))

    async def drop(conn, req, fds):
        pass  # what a zygote does to a non-root peer

    with trio.fail_after(10):
        for answer, expected in ((refuse, (0, "installed code changed")), (drop, (0, "empty reply"))):
            async with trio.open_nursery() as nursery:
                await nursery.start(stand_in, location, answer)
                assert await ask(location) == expected
            os.unlink(location.path("sock"))


async def test_no_server_is_unavailability(location: proto.Location) -> None:
    pid, why = await ask(location)
    assert pid == 0 and "fork server unavailable" in why and "No such file" in why
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as bound_only:  # a dead server's socket file
        bound_only.bind(location.path("sock"))
        pid, why = await ask(location)
    assert pid == 0 and "Connection refused" in why


async def test_a_late_reply_can_no_longer_be_sent(location: proto.Location) -> None:
    """The client gives up after its timeout; from then on the zygote's reply fails, so it never serves."""
    late = trio.Event()
    outcome = {}

    async def answer(conn, req, fds):
        await late.wait()
        try:
            await conn.send(proto.encode_reply(pid=4242))
            outcome["sent"] = True
        except BrokenPipeError:
            outcome["sent"] = False

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(stand_in, location, answer)
            pid, why = await ask(location, timeout=0.3)
            late.set()
    assert (pid, why) == (0, "fork server gave no answer within 0.3 s")
    assert outcome == {"sent": False}


def test_a_reply_queued_before_the_shutdown_is_taken() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        theirs.send(proto.encode_reply(pid=7))
        assert client._last_word(ours) == proto.encode_reply(pid=7)
        with pytest.raises(BrokenPipeError):
            theirs.send(b"too late", socket.MSG_NOSIGNAL)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        assert client._last_word(ours) is None


def test_revive_respects_the_lock_and_the_stamp(location: proto.Location, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned = []
    monkeypatch.setattr(os, "posix_spawn", lambda *args, **kwargs: spawned.append(args) or 99)
    fd = os.open(location.path("lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        assert client.server_locked(location)
        assert client.revive(location, {"PATH": "/bin"}) == 0  # a server holds the lock
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert not client.server_locked(location)
        assert client.revive(location, {"PATH": "/bin"}) == 99
        assert client.revive(location, {"PATH": "/bin"}) == 0  # tried just now and not up yet
        os.unlink(location.path("revive"))  # what a server does once it serves
        assert client.revive(location, {"PATH": "/bin"}) == 99
    finally:
        os.close(fd)
    program, argv, env = spawned[0]
    assert program == sys.executable and argv[:6] == [sys.executable, "-P", "-m", "shim.forkserver",
                                                       location.directory, location.manager]
    assert len(argv[6]) == client.TITLE_SPACE
    assert env == {"PATH": "/bin", "PYTHONPATH": proto.package_root()}
