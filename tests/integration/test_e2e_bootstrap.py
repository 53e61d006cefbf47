"""The start handshake and the task API version, observed between containerd and the shim, for every version.

Rules: a wrapper named like the shim records what containerd writes to ``start``'s stdin and what the shim
prints, and points containerd at a tap that records every ttrpc request (harness/shimtap.py); the shim itself
runs unchanged.  Both runtimes, every containerd version, each asserted against what upstream does:

- containerd 2.3+ writes a binary BootstrapParams (instance id, namespace, its own version and addresses) and
  the shim answers a binary BootstrapResult with task API version 3 over ttrpc; containerd then calls
  ``containerd.task.v3.Task`` only.  Both shims do that.
- Older containerds write the options Any or nothing.  pyshim prints the plain address (the only form 1.6
  accepts, and 1.7 cannot be told from 2.1/2.2) and is called as ``containerd.task.v2.Task``; the runc shim
  prints the plain address on 1.x and JSON version 3 on 2.1/2.2 (task v3).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from google.protobuf.message import DecodeError

from protos import bootstrap_pb2

from .conftest import PYSHIM_BINARY, new_id
from .e2e_helpers import PYSHIM, ctr_bytes, runtime  # noqa: F401
from .harness import shimtap

RUNC_BINARY = "containerd-shim-runc-v2"
TASK_V2, TASK_V3 = "containerd.task.v2.Task", "containerd.task.v3.Task"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def is_bootstrap_params(data: bytes, cid: str) -> bool:
    try:
        return bootstrap_pb2.BootstrapParams.FromString(data).instance_id == cid
    except DecodeError:
        return False


def expected_answer(runtime: str, version: str) -> tuple[str, int]:
    """(form, task API version) of ``start``'s answer that upstream's behaviour implies."""
    v = version_tuple(version)
    if v >= (2, 3):
        return "binary", 3
    if runtime == PYSHIM or v < (2, 0):
        return "plain", 2
    return "json", 3


def test_start_handshake_and_task_api(containerd_factory, containerd_dist, runtime, shim_bin_dir, busybox_rootfs,
                                      tmp_path):
    version = containerd_dist.version
    name, real = ((PYSHIM_BINARY, shim_bin_dir / PYSHIM_BINARY) if runtime == PYSHIM
                  else (RUNC_BINARY, containerd_dist.bindir / RUNC_BINARY))
    records, wrap = tmp_path / "records", tmp_path / "wrap"
    records.mkdir()
    wrap.mkdir()
    tapdir = Path(tempfile.mkdtemp(prefix="pyshim-tap-", dir="/run"))  # short: sun_path has 108 bytes
    try:
        tap_path = str(tapdir / "tap.sock")
        shimtap.write_wrapper(wrap, name, real, records, tap_path)
        with shimtap.Tap(tap_path, records) as tap:
            c = containerd_factory(shim_dirs=[wrap])
            cid = new_id("boot")
            res = ctr_bytes(c, "run", "--rm", "--runtime", runtime, "--rootfs", str(busybox_rootfs), cid,
                            "/bin/echo", "handshake")
            assert (res.returncode, res.stdout) == (0, b"handshake\n"), res.stderr
        assert not tap.errors
        stdin = (records / f"{cid}.stdin").read_bytes()
        answer = shimtap.parse_start_output((records / f"{cid}.stdout").read_bytes())
        log = c.log_path.read_text(errors="replace")
    finally:
        shutil.rmtree(tapdir, ignore_errors=True)

    form, task_version = expected_answer(runtime, version)
    assert (answer.form, answer.version, answer.protocol) == (form, task_version, "ttrpc"), answer
    assert re.fullmatch(r"unix:///run/containerd/s/[0-9a-f]{64}", answer.address), answer

    if version_tuple(version) >= (2, 3):
        params = bootstrap_pb2.BootstrapParams.FromString(stdin)
        assert (params.instance_id, params.namespace) == (cid, c.namespace)
        assert params.containerd_version == version
        assert (params.containerd_grpc_address, params.containerd_ttrpc_address) == (c.address, c.ttrpc_address)
        assert os.path.realpath(params.containerd_binary) == os.path.realpath(c.dist.containerd)
        # containerd's own account of the connection (core/runtime/v2/shim.go makeConnection)
        assert re.search(rf'msg="connecting to shim {cid}".*protocol=ttrpc.*version=3', log), log[-3000:]
    else:
        assert not is_bootstrap_params(stdin, cid), stdin

    service = TASK_V3 if task_version == 3 else TASK_V2
    assert tap.services() == {service}, tap.requests
    methods = tap.methods(service)
    assert {"Create", "Start", "Wait", "Delete"} <= set(methods), methods
    assert methods[0] == "Create", methods
