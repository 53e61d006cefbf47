#!/usr/bin/env python3
"""Check pyshim's ttrpc client against real Go peers, without pytest: a private containerd of each requested
version runs a busybox container with the Go runc shim; our client calls the shim's Connect/State/Pids and
containerd's Events.Forward, and the answers are compared with ctr's view.

Usage: /opt/pyshim/venv/bin/python tools/interop_check.py [--containerd VERSION ...]   (default 1.6.20)

Prints each comparison and a last line ``interop: N passed, M failed``; exits 1 if any check failed or a
prerequisite is missing.  Versions other than 1.6.20 are downloaded into /var/cache/pyshim on first use.
"""
import argparse
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio  # noqa: E402  (after the path setup above)
from google.protobuf import any_pb2  # noqa: E402

from protos import task_events_pb2, task_types_pb2  # noqa: E402
from tests.integration.harness import busybox, dist, interop  # noqa: E402
from tests.integration.harness.daemon import PrivateContainerd  # noqa: E402
from ttrpc.status import Code  # noqa: E402


class Checks:
    def __init__(self) -> None:
        self.passed = self.failed = 0

    def eq(self, what: str, ours: object, theirs: object) -> None:
        ok = ours == theirs
        self.passed += ok
        self.failed += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {what}: {ours!r} {'==' if ok else '!='} {theirs!r}")


async def check_version(c: PrivateContainerd, ref: str, checks: Checks) -> None:
    cid = f"interop-{uuid.uuid4().hex[:12]}"
    await interop.ctr(c, "run", "-d", "--runtime", "io.containerd.runc.v2", ref, cid, "/bin/sleep", "600")
    try:
        obs = await interop.observe_go_shim(c, cid)
        print(f"  shim {obs.address} (task API v{obs.version})")
        checks.eq("Connect.task_pid vs ctr tasks ls", obs.connect.task_pid, obs.ctr_task.pid)
        checks.eq("Connect.shim_pid vs /proc", (obs.connect.shim_pid,), obs.shim_pids)
        checks.eq("State.pid vs ctr tasks ls", obs.state.pid, obs.ctr_task.pid)
        checks.eq("State.status vs ctr tasks ls", task_types_pb2.Status.Name(obs.state.status), obs.ctr_task.status)
        checks.eq("State.bundle vs bundle dir", obs.state.bundle, obs.bundle)
        checks.eq("Pids vs ctr tasks ps", obs.pids, obs.ctr_pids)
        checks.eq("State of an unknown id", obs.unknown_id_code, Code.NOT_FOUND)
    finally:
        await interop.ctr(c, "tasks", "kill", "--signal", "SIGKILL", cid)
        await interop.wait_task(c, cid, "STOPPED")
        await interop.ctr(c, "tasks", "rm", cid)
        await interop.ctr(c, "containers", "rm", cid)
    oom = task_events_pb2.TaskOOM(container_id=f"interop-{uuid.uuid4().hex[:12]}")
    event = any_pb2.Any(type_url="containerd.events.TaskOOM", value=oom.SerializeToString())
    when = datetime(2001, 2, 3, 4, 5, 6, 789000, tzinfo=timezone.utc)
    fwd = await interop.forward_and_watch(c, "/tasks/oom", event, when, needle=oom.container_id)
    print(f"  ctr events: {fwd.line}")
    checks.eq("forwarded event in ctr events", fwd.line.endswith(f'{{"container_id":"{oom.container_id}"}}')
              and f" {c.namespace} /tasks/oom " in fwd.line, True)
    checks.eq("Forward with an invalid topic", fwd.invalid_topic_code, Code.INVALID_ARGUMENT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containerd", action="append", choices=dist.VERSIONS, help="version (repeatable)")
    versions = ap.parse_args().containerd or ["1.6.20"]
    checks = Checks()
    try:
        artefacts = busybox.ensure()
        dists = [dist.fetch(v) for v in versions]
    except dist.Unavailable as exc:
        print(f"interop: prerequisite missing: {exc}", file=sys.stderr)
        return 1
    for d in dists:
        print(f"containerd {d.version} ({d.bindir}):")
        c = PrivateContainerd(d)
        try:
            c.start()
            c.ctr("images", "import", str(artefacts.image), timeout=120)
            trio.run(_bounded, check_version, c, artefacts.ref, checks)
        except Exception as exc:  # report and go on with the next version; teardown below still runs
            checks.failed += 1
            print(f"  FAIL {type(exc).__name__}: {exc}")
        finally:
            for problem in c.teardown():
                checks.failed += 1
                print(f"  FAIL cleanup: {problem}")
    print(f"interop: {checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


async def _bounded(fn, *args) -> None:
    with trio.fail_after(120):
        await fn(*args)


if __name__ == "__main__":
    sys.exit(main())
