"""The machine state one run of containerd's client suite uses, and what it must leave behind: nothing.

Rules:
- The suite starts its own containerd (``containerd`` from PATH) with fixed directories: root
  /var/lib/containerd-test, state /run/containerd-test, socket /run/containerd-test/containerd.sock, and
  containerd namespace ``testing``.  One run at a time per machine: ``exclusive()`` holds a lock file.
- ``bin_dir`` makes the directory placed first on the suite's PATH: the shim under test (pyshim's console
  script), the helper binaries the suite expects on PATH (``runc-fp``, built by build.py), and a
  ``containerd`` wrapper that execs the version's real containerd with the suite's own config
  plus ``disabled_plugins`` when it starts a daemon (CRI, NRI, tracing, opt, unused snapshotters: the
  harness's list, and 2.x's
  sandbox-controllers service, which fails to load without the CRI pod sandbox controller, and the 2.x
  suite refuses to start on any plugin load error), so the run opens no global sockets (NRI's
  /var/run/nri/nri.sock) and starts no CRI.  Every other argument, and the
  process itself (exec, same pid), is the suite's.
- ``leftovers`` finds what a finished run left (shims and daemons given the suite's socket or run dir,
  processes in ``testing`` cgroups, mounts under the fixed or run directories, runc state of ``testing``);
  ``clean`` removes it.  Both match only facts unique to these runs (paths, namespace), never program names.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.integration.harness import procs
from tests.integration.harness.daemon import DISABLED_PLUGINS, SYSTEM_PATH

ROOT = Path("/var/lib/containerd-test")
STATE = Path("/run/containerd-test")
ADDRESS = str(STATE / "containerd.sock")
NAMESPACE = "testing"
RUNC_STATE = Path("/run/containerd/runc") / NAMESPACE
LOCK = Path("/run/pyshim-conformance.lock")
PYSHIM_BINARY = "containerd-shim-pyshim-v1"
DISABLED = (*DISABLED_PLUGINS, "io.containerd.grpc.v1.sandbox-controllers")

WRAPPER = r'''#!{python} -I
"""containerd for the client suite (written by tests/conformance/instance.py).  A daemon start (it has
--address) gets the suite's config plus disabled_plugins; anything else (``config migrate``, ``config
default``) runs untouched.  Either way this process becomes the real containerd (exec)."""
import json, os, re, sys, tomllib
REAL, OUT, DISABLED = {real!r}, {out!r}, {disabled!r}
args = sys.argv[1:]
if "--address" in args or any(a.startswith("--address=") for a in args):
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            with open(args[i + 1]) as f:
                text = f.read()
            have = tomllib.loads(text).get("disabled_plugins", [])
            text = re.sub(r"^disabled_plugins\s*=\s*\[[^\]]*\]", "", text, count=1, flags=re.M)
            merged = have + [p for p in DISABLED if p not in have]
            path = os.path.join(OUT, "config-%d.toml" % os.getpid())
            with open(path, "w") as f:
                f.write("disabled_plugins = %s\n" % json.dumps(merged) + text)
            args[i + 1] = path
            break
os.execv(REAL, [REAL] + args)
'''


@contextmanager
def exclusive() -> Iterator[None]:
    """Serialise runs of the suite on this machine (its directories and namespace are fixed)."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def bin_dir(where: Path, containerd_bindir: Path, shim_script: Path, python: str, tools: Path) -> Path:
    """Create ``where`` with the containerd wrapper, the pyshim shim and links to the suite's helper
    binaries in ``tools`` (runc-fp); returns it."""
    where.mkdir(parents=True, exist_ok=True)
    configs = where / "configs"
    configs.mkdir(exist_ok=True)
    wrapper = where / "containerd"
    wrapper.write_text(WRAPPER.format(python=python, real=str(containerd_bindir / "containerd"),
                                      out=str(configs), disabled=list(DISABLED)))
    wrapper.chmod(0o755)
    if shim_script.exists():
        (where / PYSHIM_BINARY).symlink_to(shim_script)
    for tool in sorted(tools.iterdir()) if tools.is_dir() else ():
        (where / tool.name).symlink_to(tool)
    return where


def suite_path(bindir: Path, containerd_bindir: Path) -> str:
    return ":".join([str(bindir), str(containerd_bindir), SYSTEM_PATH])


def _ours(run_dir: Path) -> list[procs.Proc]:
    """Shims given the suite's socket, and containerds started with the fixed state dir or our run dir."""
    found = {p.pid: p for p in procs.shims_of(ADDRESS)}
    for p in procs.all_processes():
        argv = " ".join(p.argv)
        if p.pid != os.getpid() and (str(STATE) in argv or str(run_dir) in argv) and "containerd" in argv:
            found[p.pid] = p
    return list(found.values())


def leftovers(run_dir: Path) -> list[str]:
    found = [f"process {p.pid} still running: {' '.join(p.argv)}" for p in _ours(run_dir)]
    found += [f"process {p.pid} in a /{NAMESPACE}/ cgroup: {' '.join(p.argv)}"
              for p in procs.in_namespace_cgroup(NAMESPACE)]
    found += [f"mount left: {m}" for m in procs.mounts_under(ROOT, STATE, run_dir)]
    if RUNC_STATE.is_dir() and any(RUNC_STATE.iterdir()):
        found.append(f"runc state left in {RUNC_STATE}: {sorted(os.listdir(RUNC_STATE))}")
    return found


def clean(run_dir: Path) -> list[str]:
    """Kill, unmount and remove what runs of the suite left; returns the problems that remain."""
    problems = [f"still alive: {p.pid}" for p in procs.kill_all(_ours(run_dir) + procs.in_namespace_cgroup(NAMESPACE))]
    problems += procs.unmount(procs.mounts_under(ROOT, STATE, run_dir))
    shutil.rmtree(RUNC_STATE, ignore_errors=True)
    problems += procs.remove_cgroups(NAMESPACE)
    for d in (ROOT, STATE):
        if d.exists() and not procs.mounts_under(d):
            shutil.rmtree(d, ignore_errors=True)
    return problems

