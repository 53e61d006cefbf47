"""pytest plugin for the VM's default selection: the ``vm``-marked tests plus the core e2e scenarios (pyshim).

Loaded by tools/vm-test's default arguments (``-p tests.vm.selection``), never otherwise.  It keeps an item
when it is marked ``vm`` (on every containerd version in the guest), or lives in tests/vm/guest_checks.py, or
is one of ``CORE`` run with the pyshim runtime (the ``runtime`` parameter of tests/integration/e2e_helpers.py)
on the first containerd version of $PYSHIM_CONTAINERD_VERSIONS (the guest's own 1.6.20 by default);
everything else is deselected, and said so in pytest's summary.  ``CORE`` is chosen to fit the CI budget under
TCG (~15-20x slower than native): one scenario per area of the shim (run and exit codes, stdio, exec and
kill, events, tty, shim death).
"""
from __future__ import annotations

import os

import pytest

PYSHIM = "io.containerd.pyshim.v1"
CORE = (
    "tests/integration/test_e2e_run.py::test_echo_rootfs_and_image",
    "tests/integration/test_e2e_run.py::test_exit_codes",
    "tests/integration/test_e2e_run.py::test_stdin_piped",
    "tests/integration/test_e2e_exec.py::test_concurrent_execs",
    "tests/integration/test_e2e_exec.py::test_kill_and_kill_all",
    "tests/integration/test_e2e_exec.py::test_ps_lists_init_and_exec",
    "tests/integration/test_e2e_events.py::test_task_event_sequence",
    "tests/integration/test_e2e_tty.py::test_tty_size_and_resize",
    "tests/integration/test_e2e_shim_kill.py::test_shim_sigkill_then_remove",
)
GUEST_CHECKS = "tests/vm/guest_checks.py"


def keep(nodeid: str, marked_vm: bool, runtime: str | None, version: str | None, core_version: str) -> bool:
    base = nodeid.split("[", 1)[0]
    if marked_vm or base.startswith(GUEST_CHECKS + "::"):
        return True
    return base in CORE and runtime == PYSHIM and version == core_version


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    core_version = (os.environ.get("PYSHIM_CONTAINERD_VERSIONS") or "1.6.20").split(",")[0].strip()
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        marked = item.get_closest_marker("vm") is not None
        wanted = keep(item.nodeid, marked, params.get("runtime"), params.get("containerd_version"), core_version)
        (kept if wanted else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
