"""What the end-to-end scenarios cannot show for a backend other than runc, and why (README "Choosing a backend").

``tools/run-tests`` runs tests/integration/test_e2e_*.py a second and third time with pyshim configured for crun
and for runsc (PYSHIM_E2E_BACKEND; conftest writes the pyshim.toml and points $PYSHIM_CONFIG at it).  A scenario
listed here for that backend is marked ``xfail(strict=True)``: it must still fail, so the list cannot go stale --
when gVisor (or the test) changes and the scenario passes, CI fails until the entry is removed.
crun passes every scenario: it has no entry.
"""
from __future__ import annotations

from pathlib import Path

BACKENDS = ("runc", "crun", "runsc")

LIMITS: dict[str, dict[str, str]] = {
    "runsc": {
        "test_exit_codes": (
            "gVisor delivers a signal the container's init sends itself (`kill -TERM $$`, `kill -9 $$`): the "
            "task exits 143/137, where Linux ignores unhandled signals to a pid-namespace init and runc reports 0"),
        "test_exit_while_containerd_down": (
            "the scenario releases the container by creating a file in the rootfs from the host; gVisor's gofer "
            "does not show host-side changes to a running sandbox's rootfs, so the container never exits"),
        "test_kill_and_kill_all": (
            "the scenario counts the container's processes in its host cgroup; under gVisor the cgroup holds the "
            "sandbox and gofer, not the container's processes (kill and kill --all themselves work: 143/137)"),
        "test_ps_lists_init_and_exec": (
            "`runsc ps` lists sandbox-internal pids (1, 2, ...), not host pids, so `ctr task ps` cannot be matched "
            "to host processes nor carry exec ids"),
        "test_twenty_containers_at_once": (
            "the scenario checks each container's host cgroup holds exactly its init pid; under gVisor it also "
            "holds runsc-gofer and the sandbox's helper processes"),
    },
}


def pyshim_toml(backend: str, containerd_version: str) -> str:
    """The pyshim.toml the tests use to run pyshim on ``backend`` under ``containerd_version``.

    Debian bookworm's crun 1.8.1 refuses specs newer than ociVersion 1.1.x ("OCI runtime create failed: unknown
    version specified"; runc.v2 with BinaryName=crun fails the same way), though it runs them: Debian's
    containerd 1.7.24 writes 1.2.0 (built against Debian's newer runtime-spec), 2.1.9 writes 1.2.1, 2.2+ 1.3.0.
    With every version but 1.6 the tests set the crun backend's ``oci_version`` option, as README tells crun
    users to.
    """
    text = f'backend = "{backend}"\n'
    if backend == "crun" and not containerd_version.startswith("1.6."):
        text += '[backends.crun]\noci_version = "1.1.0"\n'
    return text


# Daemons shared by unrelated containers (PYSHIM_SHARING=namespace): small shards, so suites cross shard
# boundaries, and a short idle time, so a daemon whose containers are gone leaves within a teardown's grace period.
SHARED_IDLE = 1.0
SHARED_TOML = f'sharing = "namespace"\nmax_tasks_per_daemon = 8\nidle_timeout = {SHARED_IDLE}\n'


def write_backend_configs(directory: Path, containerd_version: str) -> dict[str, Path]:
    """``directory``/pyshim-<backend>.toml for every builtin backend, as an operator writes one per runtime handler."""
    out = {}
    for backend in BACKENDS:
        out[backend] = directory / f"pyshim-{backend}.toml"
        out[backend].write_text(pyshim_toml(backend, containerd_version))
    return out
