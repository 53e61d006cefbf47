"""shim/commands/start.py's shard walk (``start_shared``) against real shard daemons' Shard service
(tests/unit/shard_server.py) on real sockets, with a stand-in for the new daemon; and RuncManager's sharing key."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from shim import address as addr
from shim import daemon, sharing
from shim.commands import start
from shim.flags import ShimFlags, parse
from shim.manager import StartRequest
from shim.runc.manager import MANAGER
from tests.unit.shard_server import ShardServer
from tests.unit.test_daemon_settings import env, next_start, runtime_options  # noqa: F401 - a fixture
from tests.unit.test_start_delete import make_bundle, runc_options_any, socket_dir  # noqa: F401 - a fixture

KEY = "shared-test"
FLAGS = ShimFlags(namespace="ns", id="c9", address="/run/ctrd.sock", action="start")


def shard_path(socket_dir: str, index: int, key: str = KEY, flags: ShimFlags = FLAGS) -> str:
    return addr.socket_path(shard_address(socket_dir, index, key, flags))


def shard_address(socket_dir: str, index: int, key: str = KEY, flags: ShimFlags = FLAGS) -> str:
    return addr.socket_address(flags.address, flags.namespace, sharing.shard_group(key, index), socket_dir)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "c9")


@pytest.fixture
def request_(bundle: Path) -> StartRequest:
    return StartRequest(id=FLAGS.id, namespace=FLAGS.namespace, address=FLAGS.address, bundle=str(bundle))


@pytest.fixture
def new_daemons(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """``new_daemon`` stands in: it records what it was given (and that the listener listens), closes it."""
    made: list[dict] = []

    def new_daemon(manager, flags, request, listener, path, address):
        made.append({"flags": flags, "path": path, "address": address, "id": request.id,
                     "bound": listener.getsockname() == path,
                     "listening": listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1})
        listener.close()
        return address
    monkeypatch.setattr(start, "new_daemon", new_daemon)
    return made


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The (path, id) of every reservation start asks for, in order (the real ``reserve`` answers)."""
    calls: list[tuple[str, str]] = []
    real = sharing.reserve

    def reserve(path: str, container_id: str, timeout: float = sharing.RESERVE_TIMEOUT):
        calls.append((path, container_id))
        return real(path, container_id, timeout)
    monkeypatch.setattr(sharing, "reserve", reserve)
    return calls


def reservations(shard: ShardServer) -> list[str]:
    return shard.call(lambda: sorted(shard.occupancy.reservations))


def test_the_first_shard_that_accepts_takes_the_container(socket_dir: str, request_: StartRequest, bundle: Path,
                                                         new_daemons: list[dict], asked) -> None:
    with ShardServer(shard_path(socket_dir, 0), max_tasks=1, reserved=("a",)) as full, \
            ShardServer(shard_path(socket_dir, 1), max_tasks=3, reserved=("b",)) as roomy:
        address = start.start_shared(MANAGER, FLAGS, request_, sharing.Sharing(KEY, 3, 30.0), socket_dir)
        assert address == shard_address(socket_dir, 1)
        assert (bundle / "address").read_bytes() == address.encode()
        assert reservations(full) == ["a"] and reservations(roomy) == ["b", "c9"]
    assert asked == [(shard_path(socket_dir, 0), "c9"), (shard_path(socket_dir, 1), "c9")]
    assert new_daemons == [] and not os.path.exists(shard_path(socket_dir, 2))  # the walk stopped there


@pytest.mark.parametrize("idle, flag", [(30.0, "4:30.0"), (0.5, "4:0.5"), (0.0, "4:0.0"), (86400.0, "4:86400.0"),
                                       (1234567.0, "4:1234567.0")])
def test_a_free_shard_gets_a_new_shared_daemon(socket_dir: str, request_: StartRequest, new_daemons: list[dict],
                                               idle: float, flag: str) -> None:
    with ShardServer(shard_path(socket_dir, 0), max_tasks=1, reserved=("a",)):
        address = start.start_shared(MANAGER, FLAGS, request_, sharing.Sharing(KEY, 4, idle), socket_dir)
    assert address == shard_address(socket_dir, 1)
    [made] = new_daemons
    assert made["path"] == shard_path(socket_dir, 1) and made["address"] == address and made["id"] == "c9"
    assert made["bound"] and made["listening"]
    assert made["flags"] == FLAGS.replace(shared=flag)
    argv = start.daemon_argv(made["flags"])
    assert argv == ["-namespace", "ns", "-id", "c9", "-address", "/run/ctrd.sock", "-shared", flag]
    assert daemon.shared_settings(parse(argv).shared) == sharing.Sharing("", 4, idle)  # what the daemon reads


def test_refusals_are_walked_in_order(socket_dir: str, request_: StartRequest, new_daemons: list[dict],
                                      asked) -> None:
    with ShardServer(shard_path(socket_dir, 0), max_tasks=2, reserved=("a", "b")), \
            ShardServer(shard_path(socket_dir, 1), max_tasks=8) as closing, \
            ShardServer(shard_path(socket_dir, 2), shard=False), \
            ShardServer(shard_path(socket_dir, 3), max_tasks=8) as last:
        closing.call(setattr, closing.occupancy, "closing", True)
        address = start.start_shared(MANAGER, FLAGS, request_, sharing.Sharing(KEY, 8, 30.0), socket_dir)
        assert address == shard_address(socket_dir, 3) and reservations(last) == ["c9"]
        assert reservations(closing) == []
    assert [path for path, _ in asked] == [shard_path(socket_dir, i) for i in range(4)]
    assert new_daemons == []


def test_when_every_shard_refuses_start_fails_naming_the_key_and_the_first_refusals(
        socket_dir: str, request_: StartRequest, bundle: Path, new_daemons: list[dict],
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def reserve(path: str, container_id: str, timeout: float = sharing.RESERVE_TIMEOUT):
        asked.append(path)
        return sharing.ReserveResponse(False, f"full {len(asked) - 1}")
    monkeypatch.setattr(start.addr, "bind_or_reuse", lambda path: None)  # every shard has a live daemon
    monkeypatch.setattr(sharing, "reserve", reserve)
    with pytest.raises(start.StartError) as err:
        start.start_shared(MANAGER, FLAGS, request_, sharing.Sharing(KEY, 8, 30.0), socket_dir)
    assert str(err.value) == f"no shard of {KEY} took the container (shard 0: full 0; shard 1: full 1; " \
                             f"shard 2: full 2; ...)"
    assert len(asked) == sharing.MAX_SHARDS == len(set(asked))
    assert asked[:2] == [shard_path(socket_dir, 0), shard_path(socket_dir, 1)]
    assert asked[-1] == shard_path(socket_dir, sharing.MAX_SHARDS - 1)
    assert new_daemons == [] and not (bundle / "address").exists()


# -- RuncManager: the key, and start with it -------------------------------------------------------------------

def start_request(tmp_path: Path, cid: str, options: tuple[bytes, ...] = (), **annotations: str) -> StartRequest:
    b = make_bundle(tmp_path / cid, annotations)
    return StartRequest(id=cid, namespace="ns", address="/run/ctrd.sock", bundle=str(b), options=options)


def test_pod_mode_does_not_share(tmp_path: Path, env) -> None:
    r = start_request(tmp_path, "c1")
    assert MANAGER.sharing(r) is None and MANAGER.use_forkserver(r) is True
    env.default.write_text('sharing = "pod"\nfork_server = false\n')
    next_start()
    assert MANAGER.sharing(start_request(tmp_path, "c2")) is None
    assert MANAGER.use_forkserver(start_request(tmp_path, "c3")) is False


def test_namespace_mode_keys_by_options_bytes_and_backend_annotation(tmp_path: Path, env) -> None:
    env.default.write_text('sharing = "namespace"\nmax_tasks_per_daemon = 3\nidle_timeout = 7.5\n')
    other_file = tmp_path / "other.toml"
    other_file.write_text('sharing = "namespace"\nmax_tasks_per_daemon = 3\nidle_timeout = 7.5\n')
    crun = (runc_options_any(binary_name="crun"),)
    shared = MANAGER.sharing(start_request(tmp_path, "a1", **{"io.kubernetes.cri.sandbox-id": "pod-a"}))
    assert shared.max_tasks == 3 and shared.idle_exit == 7.5
    assert shared.key.startswith("shared-") and len(shared.key) == len("shared-") + 24
    same = [start_request(tmp_path, "a2", **{"io.kubernetes.cri.sandbox-id": "pod-b"}),  # other pods alike
            start_request(tmp_path, "a3", **{"io.pyshim.backend": ""})]
    assert [MANAGER.sharing(r) for r in same] == [shared, shared]
    others = [start_request(tmp_path, "b1", crun),
              start_request(tmp_path, "b2", (runtime_options(str(other_file)),)),
              start_request(tmp_path, "b3", (runtime_options(str(env.default)),)),
              start_request(tmp_path, "b4", **{"io.pyshim.backend": "crun"}),
              start_request(tmp_path, "b5", crun, **{"io.pyshim.backend": "crun"})]
    keys = [MANAGER.sharing(r).key for r in others]
    assert len({shared.key, *keys}) == 1 + len(others)
    assert MANAGER.sharing(start_request(tmp_path, "b6", crun)).key == keys[0]
    assert MANAGER.use_forkserver(start_request(tmp_path, "b7")) is False


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch):
    """``spawn_daemon`` stands in with a real, idle child process; records (flags, forkserver) of each call."""
    calls: list[tuple[ShimFlags, bool]] = []
    children: list[subprocess.Popen] = []

    def spawn(manager, flags, listen_sock, forkserver=True):
        calls.append((flags, forkserver))
        children.append(subprocess.Popen(["sleep", "60"]))
        return children[-1].pid
    monkeypatch.setattr(start, "spawn_daemon", spawn)
    yield calls
    for child in children:
        child.send_signal(signal.SIGKILL)
        child.wait()


@pytest.mark.parametrize("fork_server", [False, True])
def test_start_walks_the_shards_of_the_managers_key(tmp_path: Path, env, socket_dir: str,
                                                   spawned: list, monkeypatch: pytest.MonkeyPatch,
                                                   fork_server: bool) -> None:
    env.default.write_text(f'sharing = "namespace"\nmax_tasks_per_daemon = 3\nidle_timeout = 7.5\n'
                            f'fork_server = {str(fork_server).lower()}\n')
    first = start_request(tmp_path, "c1")
    key = MANAGER.sharing(first).key
    flags = ShimFlags(namespace="ns", id="c1", address="/run/ctrd.sock", action="start")
    monkeypatch.chdir(first.bundle)
    address = start.start(MANAGER, flags, (), socket_dir=socket_dir)
    assert address == shard_address(socket_dir, 0, key, flags)
    assert spawned == [(flags.replace(shared="3:7.5"), fork_server)]
    assert Path(first.bundle, "address").read_bytes() == address.encode()

    os.unlink(shard_path(socket_dir, 0, key, flags))  # the stand-in does not serve: a real shard, full, does
    second = start_request(tmp_path, "c2")
    flags2 = flags.replace(id="c2")
    monkeypatch.chdir(second.bundle)
    with ShardServer(shard_path(socket_dir, 0, key, flags), max_tasks=1, reserved=("c1",)):
        address2 = start.start(MANAGER, flags2, (), socket_dir=socket_dir)
    assert address2 == shard_address(socket_dir, 1, key, flags)
    assert spawned[1:] == [(flags2.replace(shared="3:7.5"), fork_server)]
    assert Path(second.bundle, "address").read_bytes() == address2.encode()
