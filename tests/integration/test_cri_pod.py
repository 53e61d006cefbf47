"""The CRI path (how Kubernetes runs pods): containerd's CRI plugin with runtime handler ``pyshim``
(io.containerd.pyshim.v1), and the same scenarios with handler ``runc`` (io.containerd.runc.v2) as the
reference, on containerd 1.6.20, 1.7.24 and 2.1.9.

Rules:
- Driven through the real CRI gRPC API (client generated from k8s.io/cri-api's api.proto at test time).
- Grouping is proven, not assumed: every task of a pod records the same shim address in its bundle, that
  address is the socket named after the *sandbox id* (the grouping id), exactly one shim daemon of this
  containerd runs while the pod lives, and a second pod gets a second daemon.
- After StopPodSandbox + RemovePodSandbox nothing of the pod is left: no shim process, socket, bundle,
  runtime state, mount or process in the pod's cgroups.
"""
from __future__ import annotations

import pytest

from tests.integration.conftest import session_shared

from tests.integration.cri_helpers import Pod, cri, cri_registry, make_pod, shim_daemons, wait_for  # noqa: F401
from tests.integration.harness import procs
from tests.integration.harness.cri_daemon import HANDLERS, CriContainerd

GATE = "until [ -e /go ]; do sleep 0.05; done; "  # containers wait for ``touch /go`` (see release)
SHIM_BINARIES = {"pyshim": "containerd-shim-pyshim-v1", "runc": "containerd-shim-runc-v2"}
handlers = pytest.mark.parametrize("handler", list(HANDLERS))


def release(cri: CriContainerd, cid: str) -> None:
    res = cri.client.call("ExecSync", container_id=cid, cmd=["touch", "/go"], timeout=20)
    assert (res.exit_code, res.stderr) == (0, b"")


def addresses(cri: CriContainerd, *task_ids: str) -> set[str]:
    return {cri.cri_shim_address(t) for t in task_ids}


def assert_pod_gone(cri: CriContainerd, pod: Pod, task_ids: list[str]) -> None:
    wait_for("the pod's shim to exit", lambda: not shim_daemons(cri), timeout=15)
    assert not cri.group_socket(pod.id).exists()
    assert [t for t in task_ids if cri.cri_bundle(t).exists()] == []
    assert cri.cri_leftovers(set(task_ids)) == []
    assert procs.mounts_under(cri.state / "io.containerd.grpc.v1.cri", cri.root / "io.containerd.grpc.v1.cri") == []
    assert [m for m in procs.mounts_under(cri.state / "io.containerd.runtime.v2.task")] == []


@handlers
def test_pod_of_two_containers_shares_one_shim(cri: CriContainerd, make_pod, handler: str) -> None:
    pb = cri.client.pb
    pod = make_pod(f"two-{handler}", handler)
    status = cri.client.call("PodSandboxStatus", pod_sandbox_id=pod.id).status
    assert status.state == pb.SANDBOX_READY
    assert status.runtime_handler == handler
    assert status.network.ip.startswith("10.253.")

    server = pod.run("server", ["sh", "-c", "trap '' TERM; echo server up; while :; do sleep 0.2; done"])
    worker = pod.run("worker", ["sh", "-c", "echo to-stdout; echo to-stderr >&2; " + GATE + "exit 7"])

    # Grouping: one address for sandbox and both containers (read while they run: CRI deletes the task of an
    # exited container, bundle and all), the socket named after the sandbox id, and a single shim daemon of
    # the right binary serving them.
    shared = addresses(cri, pod.id, server, worker)
    if handler == "pyshim" and session_shared():  # a shard of the namespace's daemons, not a pod's own socket
        assert len(shared) == 1 and shared != {f"unix://{cri.group_socket(pod.id)}"}, shared
    else:
        assert shared == {f"unix://{cri.group_socket(pod.id)}"}
    daemons = shim_daemons(cri)
    assert len(daemons) == 1, daemons
    assert SHIM_BINARIES[handler] in " ".join(daemons[0].argv)
    # How they got there: pyshim answers start with task API v2 up to containerd 2.2 (plain address), so
    # containerd runs start for every container and pyshim groups by io.kubernetes.cri.sandbox-id; for a v3
    # shim (runc's on 2.x, pyshim's on 2.3+, which answer BootstrapParams with version 3), containerd skips start
    # and attaches the containers to the sandbox's shim, marking their bundles with a ``sandbox`` file.
    version = tuple(int(x) for x in cri.dist.version.split("."))
    attached = version >= (2, 3) or (handler == "runc" and cri.dist.major >= 2)
    assert [(cri.cri_bundle(c) / "sandbox").exists() for c in (server, worker)] == [attached, attached]

    release(cri, worker)
    done = pod.wait_exited(worker)
    assert (done.exit_code, done.reason) == (7, "Error")
    assert pod.status(server).state == pb.CONTAINER_RUNNING

    assert sorted(pod.log("worker")) == [("stderr", "F", "to-stderr"), ("stdout", "F", "to-stdout")]
    wait_for("the server's log line", lambda: pod.log("server") == [("stdout", "F", "server up")])

    res = cri.client.call("ExecSync", container_id=server, cmd=["sh", "-c", "echo out; echo err >&2; exit 3"],
                          timeout=20)
    assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", 3)
    res = cri.client.call("ExecSync", container_id=server, cmd=["cat", "/etc/hostname"], timeout=20)
    assert (res.stdout, res.exit_code) == (b"two-" + handler.encode() + b"\n", 0)

    # The server ignores SIGTERM, so StopContainer escalates to SIGKILL after its 1 s timeout.
    cri.client.call("StopContainer", container_id=server, timeout=1)
    stopped = pod.wait_exited(server)
    assert (stopped.exit_code, stopped.reason) == (137, "Error")
    assert len(shim_daemons(cri)) == 1  # the sandbox still holds the group's shim

    pod.stop_and_remove()
    assert_pod_gone(cri, pod, [pod.id, server, worker])


@handlers
def test_exit_codes_and_reasons(cri: CriContainerd, make_pod, handler: str) -> None:
    pod = make_pod(f"exits-{handler}", handler)
    cases = {"zero": ("exit 0", 0, "Completed"), "one": ("exit 1", 1, "Error"), "code42": ("exit 42", 42, "Error"),
             # StopContainer's SIGTERM, handled by PID 1, which exits 143.
             "termed": ("trap 'exit 143' TERM; touch /trapped; sleep 1000 & wait", 143, "Error")}
    ids = {name: pod.run(name, ["sh", "-c", GATE + script]) for name, (script, _, _) in cases.items()}
    assert len(addresses(cri, pod.id, *ids.values())) == 1
    assert len(shim_daemons(cri)) == 1
    for name, cid in ids.items():
        release(cri, cid)
    wait_for("the trap to be set", lambda: cri.client.call(
        "ExecSync", container_id=ids["termed"], cmd=["test", "-e", "/trapped"], timeout=10).exit_code == 0)
    cri.client.call("StopContainer", container_id=ids["termed"], timeout=30)
    seen = {name: pod.wait_exited(cid) for name, cid in ids.items()}
    assert {n: (s.exit_code, s.reason) for n, s in seen.items()} == {n: (c, r) for n, (_, c, r) in cases.items()}
    assert all(s.finished_at >= s.started_at > 0 for s in seen.values())
    for cid in ids.values():
        cri.client.call("RemoveContainer", container_id=cid)
    pod.stop_and_remove()
    assert_pod_gone(cri, pod, [pod.id, *ids.values()])


@handlers
def test_two_pods_get_two_shims(cri: CriContainerd, make_pod, handler: str) -> None:
    """Two pods, two shims; with PYSHIM_SHARING=namespace, pyshim serves both from one shared daemon."""
    shared = handler == "pyshim" and session_shared()
    pods = [make_pod(f"pair{i}-{handler}", handler) for i in range(2)]
    tasks = [[p.id, p.run("main", ["sleep", "1000"])] for p in pods]
    per_pod = [addresses(cri, *t) for t in tasks]
    assert all(len(a) == 1 for a in per_pod)
    assert (per_pod[0] == per_pod[1]) == shared
    assert len(shim_daemons(cri)) == (1 if shared else 2)
    pods[0].stop_and_remove()
    assert_status_running(cri, tasks[1][1])
    wait_for("the first pod's shim to exit", lambda: len(shim_daemons(cri)) == 1, timeout=15)
    pods[1].stop_and_remove()
    for pod, t in zip(pods, tasks):
        assert_pod_gone(cri, pod, t)


def assert_status_running(cri: CriContainerd, cid: str) -> None:
    status = cri.client.call("ContainerStatus", container_id=cid).status
    assert status.state == cri.client.pb.CONTAINER_RUNNING
