"""Exact bytes of pyshim's protos against worked examples of the wire format.

Rules: expected bytes are hex dumps written out by hand from the ttrpc framing (``channel.go`` of
github.com/containerd/ttrpc v1.1.1: a 10-byte header, checked against the payload length here), its
``request.proto`` (Request, Response, Status) and protobuf's encoding rules; the bootstrap handshake's the same
way from containerd 2.4.2's ``api/runtime/bootstrap/v1/bootstrap.proto``.  Nothing here is derived by running
the code under test.
"""
import pytest
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import DecodeError

from protos import (bootstrap_pb2, cgroups_v1_pb2, cgroups_v2_pb2, event_pb2, runc_options_pb2, status_pb2,
                    task_events_pb2, task_v2_pb2, task_v3_pb2, ttrpc_events_pb2, ttrpc_pb2)

NS = [ttrpc_pb2.KeyValue(key="containerd-namespace-ttrpc", value="default")]


def frame_data(dump: str, stream: int, kind: int) -> bytes:
    """The data of one frame given as a hex dump; checks its header."""
    raw = bytes.fromhex(dump)
    assert int.from_bytes(raw[0:4], "big") == len(raw) - 10
    assert int.from_bytes(raw[4:8], "big") == stream and raw[8] == kind and raw[9] == 0
    return raw[10:]


@pytest.mark.parametrize("module", [task_v2_pb2, task_v3_pb2])
def test_connect_request_and_response(module):
    assert module.ConnectRequest(id="redis").SerializeToString() == bytes.fromhex("0a 05 72 65 64 69 73")
    assert module.ConnectResponse(shim_pid=4242, task_pid=4300).SerializeToString() == bytes.fromhex(
        "08 92 21 10 cc 21")


def test_connect_call_frame():
    data = frame_data("""00 00 00 58 00 00 00 01 01 00 0a 17 63 6f 6e 74 61 69 6e 65 72 64 2e 74 61 73 6b 2e
        76 32 2e 54 61 73 6b 12 07 43 6f 6e 6e 65 63 74 1a 07 0a 05 72 65 64 69 73 20 80 e4 97 d0 12 2a 25 0a
        1a 63 6f 6e 74 61 69 6e 65 72 64 2d 6e 61 6d 65 73 70 61 63 65 2d 74 74 72 70 63 12 07 64 65 66 61 75
        6c 74""", stream=1, kind=1)
    payload = task_v2_pb2.ConnectRequest(id="redis").SerializeToString()
    request = ttrpc_pb2.Request(service="containerd.task.v2.Task", method="Connect", payload=payload,
                                timeout_nano=5_000_000_000, metadata=NS)
    assert request.SerializeToString() == data


def test_connect_success_response_frame():
    data = frame_data("00 00 00 08 00 00 00 01 02 00 12 06 08 92 21 10 cc 21", stream=1, kind=2)
    response = ttrpc_pb2.Response.FromString(data)
    assert not response.HasField("status")
    assert task_v2_pb2.ConnectResponse.FromString(response.payload).task_pid == 4300


def test_kill_request_and_not_found_answer():
    kill = task_v2_pb2.KillRequest(id="redis", signal=9, all=True)
    assert kill.SerializeToString() == bytes.fromhex("0a 05 72 65 64 69 73 18 09 20 01")
    data = frame_data("""00 00 00 52 00 00 00 03 01 00 0a 17 63 6f 6e 74 61 69 6e 65 72 64 2e 74 61 73 6b 2e
        76 32 2e 54 61 73 6b 12 04 4b 69 6c 6c 1a 0b 0a 05 72 65 64 69 73 18 09 20 01 2a 24 0a 1a 63 6f 6e 74
        61 69 6e 65 72 64 2d 6e 61 6d 65 73 70 61 63 65 2d 74 74 72 70 63 12 06 6b 38 73 2e 69 6f""",
                      stream=3, kind=1)
    metadata = [ttrpc_pb2.KeyValue(key="containerd-namespace-ttrpc", value="k8s.io")]
    assert ttrpc_pb2.Request(service="containerd.task.v2.Task", method="Kill", payload=kill.SerializeToString(),
                             metadata=metadata).SerializeToString() == data
    answer = frame_data("""00 00 00 29 00 00 00 03 02 00 0a 27 08 05 12 23 70 72 6f 63 65 73 73 20 61 6c 72 65
        61 64 79 20 66 69 6e 69 73 68 65 64 3a 20 6e 6f 74 20 66 6f 75 6e 64""", stream=3, kind=2)
    status = status_pb2.Status(code=5, message="process already finished: not found")
    assert ttrpc_pb2.Response(status=status).SerializeToString() == answer


def test_unknown_service_answer():
    data = frame_data("""00 00 00 25 00 00 00 01 02 00 0a 23 08 0c 12 1f 73 65 72 76 69 63 65 20 63 6f 6e 74
        61 69 6e 65 72 64 2e 74 61 73 6b 2e 76 33 2e 54 61 73 6b""", stream=1, kind=2)
    status = status_pb2.Status(code=12, message="service containerd.task.v3.Task")
    assert ttrpc_pb2.Response(status=status).SerializeToString() == data


def test_forward_of_a_task_exit_event():
    data = frame_data("""00 00 00 ca 00 00 00 01 01 00 0a 2a 63 6f 6e 74 61 69 6e 65 72 64 2e 73 65 72 76 69
        63 65 73 2e 65 76 65 6e 74 73 2e 74 74 72 70 63 2e 76 31 2e 45 76 65 6e 74 73 12 07 46 6f 72 77 61 72
        64 1a 66 0a 64 0a 0b 08 80 e2 cf aa 06 10 80 84 af 5f 12 07 64 65 66 61 75 6c 74 1a 0b 2f 74 61 73 6b
        73 2f 65 78 69 74 22 3f 0a 1a 63 6f 6e 74 61 69 6e 65 72 64 2e 65 76 65 6e 74 73 2e 54 61 73 6b 45 78
        69 74 12 21 0a 05 72 65 64 69 73 12 05 72 65 64 69 73 18 cc 21 20 89 01 2a 0b 08 80 e2 cf aa 06 10 95
        9a ef 3a 20 80 e4 97 d0 12 2a 25 0a 1a 63 6f 6e 74 61 69 6e 65 72 64 2d 6e 61 6d 65 73 70 61 63 65 2d
        74 74 72 70 63 12 07 64 65 66 61 75 6c 74""", stream=1, kind=1)
    exit_ = task_events_pb2.TaskExit(container_id="redis", id="redis", pid=4300, exit_status=137,
                                     exited_at=timestamp_pb2.Timestamp(seconds=1700000000, nanos=123456789))
    assert exit_.SerializeToString().hex(" ") == ("0a 05 72 65 64 69 73 12 05 72 65 64 69 73 18 cc 21 20 89 01"
                                                  " 2a 0b 08 80 e2 cf aa 06 10 95 9a ef 3a")
    event = any_pb2.Any(type_url=exit_.DESCRIPTOR.full_name, value=exit_.SerializeToString())
    stamp = timestamp_pb2.Timestamp(seconds=1700000000, nanos=200000000)
    for envelope_type in (ttrpc_events_pb2.Envelope, event_pb2.Envelope):   # 1.6 and 2.x names, same bytes
        envelope = envelope_type(timestamp=stamp, namespace="default", topic="/tasks/exit", event=event)
        forward = ttrpc_events_pb2.ForwardRequest(
            envelope=ttrpc_events_pb2.Envelope.FromString(envelope.SerializeToString()))
        request = ttrpc_pb2.Request(service="containerd.services.events.ttrpc.v1.Events", method="Forward",
                                    payload=forward.SerializeToString(), timeout_nano=5_000_000_000, metadata=NS)
        assert request.SerializeToString() == data


def test_envelopes_are_wire_identical():
    """containerd.types.Envelope (2.x) and containerd.services.events.ttrpc.v1.Envelope (1.6)."""
    def shape(message_type):
        return [(f.number, f.name, f.type, f.is_repeated, f.message_type and f.message_type.full_name)
                for f in message_type.DESCRIPTOR.fields]
    assert shape(event_pb2.Envelope) == shape(ttrpc_events_pb2.Envelope)
    assert len(shape(event_pb2.Envelope)) == 4


def test_not_exited_timestamp():
    wait = task_v2_pb2.WaitResponse(exited_at=timestamp_pb2.Timestamp(seconds=-62135596800))
    assert wait.SerializeToString() == bytes.fromhex("12 0b 08 80 92 b8 c3 98 fe ff ff ff 01")


@pytest.mark.parametrize("module,pids_tag", [(cgroups_v1_pb2, "12"), (cgroups_v2_pb2, "0a")])
def test_stats_any_has_bare_cgroups_type_url(module, pids_tag):
    # Metrics{pids{current:3, limit:100}}: pids is field 2 in v1 and field 1 in v2.
    metrics = module.Metrics(pids=module.PidsStat(current=3, limit=100))
    stats = task_v2_pb2.StatsResponse(stats=any_pb2.Any(type_url=metrics.DESCRIPTOR.full_name,
                                                         value=metrics.SerializeToString()))
    url = module.DESCRIPTOR.package.encode().hex(" ") + " " + b".Metrics".hex(" ")
    assert stats.SerializeToString().hex(" ") == f"0a 2a 0a 20 {url} 12 06 {pids_tag} 04 08 03 10 64"
    assert stats.stats.type_url in ("io.containerd.cgroups.v1.Metrics", "io.containerd.cgroups.v2.Metrics")
    # Pitfall: Python's Any.Is/Unpack insist on a "/" in type_url, so they reject containerd's bare URLs;
    # compare type_url with the full name and parse value instead.
    assert not stats.stats.Unpack(module.Metrics())
    assert module.Metrics.FromString(stats.stats.value).pids.limit == 100


# Bootstrap (containerd 2.3+): bytes computed by hand from the encoding rules.
RUNC_OPTS = any_pb2.Any(type_url="containerd.runc.v1.Options",
                        value=runc_options_pb2.Options(systemd_cgroup=True).SerializeToString())


def test_bootstrap_params_bytes():
    params = bootstrap_pb2.BootstrapParams(
        instance_id="redis", namespace="default", log_level=bootstrap_pb2.LOG_LEVEL_DEBUG,
        extensions=[bootstrap_pb2.Extension(value=RUNC_OPTS)])
    opts_url = b"containerd.runc.v1.Options".hex(" ")
    assert params.SerializeToString().hex(" ") == (
        "0a 05 72 65 64 69 73 12 07 64 65 66 61 75 6c 74 18 fc ff ff ff ff ff ff ff ff 01"
        f" 42 22 0a 20 0a 1a {opts_url} 12 02 48 01")
    assert not params.HasField("socket_dir")
    params.socket_dir = ""            # proto3 optional: an explicit empty value is sent
    assert params.SerializeToString().endswith(bytes.fromhex("4a 00"))


def test_bootstrap_result_bytes_and_legacy_outputs():
    result = bootstrap_pb2.BootstrapResult(version=3, address="unix:///run/containerd/s/ab", protocol="ttrpc")
    assert result.SerializeToString() == bytes.fromhex("08 03 12 1b") + b"unix:///run/containerd/s/ab" + \
        bytes.fromhex("1a 05") + b"ttrpc"
    # What containerd 2.3+ relies on: the older start outputs do not decode as a BootstrapResult.
    for legacy in (b"unix:///run/containerd/s/ab", b'{"version":2,"address":"unix:///x","protocol":"ttrpc"}'):
        with pytest.raises(DecodeError):
            bootstrap_pb2.BootstrapResult.FromString(legacy)


def test_legacy_options_on_stdin_decode_as_bootstrap_params():
    """Why upstream (2.4) checks instance_id/namespace against -id/-namespace: an options Any is valid
    BootstrapParams bytes (type_url lands in instance_id, value in namespace)."""
    params = bootstrap_pb2.BootstrapParams.FromString(RUNC_OPTS.SerializeToString())
    assert params.instance_id == "containerd.runc.v1.Options" and params.namespace == "H\x01"
