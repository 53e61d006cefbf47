"""End-to-end scenario 9 of the shim matrix: the task events of a container with one exec, as ``ctr events``
shows them.

Rules: ``ctr events`` is subscribed (and proven subscribed) before the container exists; the test keeps only
``/tasks/*`` events of its own container id and compares the whole sequence (topic, process id, exit status)
with what runc.v2 publishes, then the pids inside the events with the pids the test saw.  Both runtimes,
every containerd version.
"""
from __future__ import annotations

from .conftest import new_id
from .e2e_helpers import EventStream, runtime, running, wait_status, wait_until  # noqa: F401  (runtime: fixture)


def _field(payload: dict, *names: str):
    """protobuf JSON from ctr 1.x uses the proto names (container_id), 2.x may use lowerCamelCase."""
    for name in names:
        if name in payload:
            return payload[name]
    return None


def _summary(events, cid: str) -> list[tuple]:
    out = []
    for e in events:
        p = e.payload
        who = _field(p, "exec_id", "execId") or _field(p, "id") or cid
        out.append((e.topic, who, int(_field(p, "exit_status", "exitStatus") or 0)))
    return out


def test_task_event_sequence(containerd, runtime, busybox_rootfs):
    cid = new_id("ev")
    with EventStream(containerd) as stream:
        with running(containerd, runtime, cid, busybox_rootfs, "/bin/sleep", "600") as row:
            res = containerd.ctr("task", "exec", "--exec-id", "ev-exec", cid, "/bin/sh", "-c", "exit 3", check=False)
            assert res.returncode == 3, res.stderr
            containerd.ctr("task", "kill", "--signal", "SIGKILL", cid)
            wait_status(containerd, cid, "STOPPED")
            containerd.ctr("task", "rm", cid)
        wait_until("/tasks/delete", lambda: any(e.topic == "/tasks/delete" for e in stream.about(cid)))
        events = stream.about(cid)

    assert _summary(events, cid) == [
        ("/tasks/create", cid, 0),
        ("/tasks/start", cid, 0),
        ("/tasks/exec-added", "ev-exec", 0),
        ("/tasks/exec-started", "ev-exec", 0),
        ("/tasks/exit", "ev-exec", 3),
        ("/tasks/exit", cid, 137),
        ("/tasks/delete", cid, 137),
    ], [e.topic + " " + str(e.payload) for e in events]
    create, start, _added, started, exec_exit, init_exit, delete = (e.payload for e in events)
    assert {create["pid"], start["pid"], init_exit["pid"], delete["pid"]} == {row.pid}
    assert started["pid"] == exec_exit["pid"] != row.pid
    assert _field(create, "bundle") == str(containerd.bundle(cid))
    assert _field(init_exit, "exited_at", "exitedAt") == _field(delete, "exited_at", "exitedAt")
