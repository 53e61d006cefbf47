"""Inside the test VM: check the guest is pure cgroup v2, install the shipped checkout, run pytest, keep results.

Usage (by the payload's run.sh): guest_run.py CONFIG_JSON RESULTS_DIR; exit status = pytest's, or
3 when the guest is not pure cgroup v2, or 124 when pytest outlived the time-out.

Rules:
- Standard library only, run with the image's venv interpreter; this file travels with the checkout, so it
  can change without rebuilding the image.
- Nothing runs before ``stat -fc %T /sys/fs/cgroup`` says ``cgroup2fs`` and no cgroup v1 hierarchy is mounted.
- The checkout (/payload/src) is installed into the venv the way ``pip install -e`` would leave it: a .pth
  file and a dist-info with the entry points of pyproject.toml (backends are found through them); the console
  scripts are install.sh's launcher (venv interpreter with -IS, explicit sys.path, os._exit), since containerd
  execs the shim directly.
- pytest runs in its own process group as root with CI=true, PYSHIM_IN_VM=1 and PYSHIM_TIME_SCALE=20 (tests
  multiply their own timing budgets by it; 1 when unset, on the host); its output goes to the console (the host
  shows it live) and to RESULTS/pytest.log. At the time-out it gets SIGINT (fixtures tear down), SIGKILL 60 s
  later.
- RESULTS gets: facts.json (kernel, cgroup, criu, versions), pytest.log, pytest.rc, junit.xml, and when pytest
  failed the private containerds' logs (tail of each, size-capped).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

VENV = Path(sys.prefix)
SRC = Path("/payload/src")
CACHE = Path("/payload/cache")
TIME_SCALE = 20               # TCG is 10-20x slower than the host ($PYSHIM_TIME_SCALE for tests' budgets)
LOG_CAP = 256 * 1024          # bytes kept of each containerd log
LOGS_TOTAL_CAP = 24 << 20     # bytes of containerd logs copied in all


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def say(**kv: object) -> None:
    print("VMTEST " + " ".join(f"{k}={v}" for k, v in kv.items()), flush=True)


def sh(*argv: str, timeout: float = 120) -> dict:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return {"rc": res.returncode, "out": (res.stdout + res.stderr).strip()}
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"rc": None, "out": str(exc)}


def cgroup_facts() -> dict:
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    root = Path("/sys/fs/cgroup")
    return {
        "fstype": sh("stat", "-fc", "%T", str(root))["out"],
        "cgroup_mounts": [f"{m[1]} {m[2]} {m[3]}" for m in mounts if m[2] in ("cgroup", "cgroup2")],
        "controllers": (root / "cgroup.controllers").read_text().split(),
        "root_subtree_control": (root / "cgroup.subtree_control").read_text().split(),
        "self": Path("/proc/self/cgroup").read_text().strip(),
    }


def facts() -> dict:
    return {
        "kernel": os.uname().release,
        "cgroup": cgroup_facts(),
        "criu_check": sh("criu", "check"),
        "versions": {name: (sh(*argv)["out"].splitlines() or [""])[0] for name, argv in {
            "containerd": ("containerd", "--version"), "runc": ("runc", "--version"),
            "criu": ("criu", "--version"), "python": (sys.executable, "--version")}.items()},
        "cpus": os.cpu_count(),
        "memory": Path("/proc/meminfo").read_text().splitlines()[0],
    }


def entry_points_text(project: dict) -> str:
    """entry_points.txt for pyproject's [project.scripts] and [project.entry-points.*] tables."""
    groups = {"console_scripts": project.get("scripts", {}), **project.get("entry-points", {})}
    out = []
    for group, entries in groups.items():
        if entries:
            out.append(f"[{group}]")
            out += [f"{name} = {target}" for name, target in sorted(entries.items())]
            out.append("")
    return "\n".join(out)


def console_script(python: str, target: str, paths: list[str]) -> str:
    """The launcher install.sh writes for the shim: ``-IS`` (no site, no PYTHON* variables), only ``paths`` on
    sys.path, ``os._exit`` (no interpreter finalisation) -- so the guest starts shims the way users do."""
    module, func = target.split(":")
    lines = [f"#!{python} -IS", "# written by tests/vm/guest_run.py, like install.sh's launcher", "import os",
             "import sys", *(f"sys.path.append({p!r})" for p in paths), f"from {module} import {func}",
             f"os._exit({func}())"]
    return "\n".join(lines) + "\n"


def python_dir() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def install_checkout(src: Path, venv: Path) -> str:
    """Make ``src`` importable and its console scripts runnable from ``venv``; returns the project name."""
    project = tomllib.loads((src / "pyproject.toml").read_text())["project"]
    site = venv / "lib" / python_dir() / "site-packages"
    name, version = project["name"], project["version"]
    (site / f"__editable__.{name}.pth").write_text(f"{src}\n")
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(entry_points_text(project))
    (info / "INSTALLER").write_text("pyshim-vm\n")
    for script, target in project.get("scripts", {}).items():
        path = venv / "bin" / script
        path.write_text(console_script(str(venv / "bin" / "python"), target, [str(site), str(src)]))
        path.chmod(0o755)
    return name


def pytest_argv(config: dict, results: Path) -> list[str]:
    return [str(VENV / "bin" / "python"), "-m", "pytest", f"--junitxml={results / 'junit.xml'}",
            "-o", "junit_family=xunit2", "-o", f"faulthandler_timeout={60 * TIME_SCALE}", "-p", "no:cacheprovider",
            *config["pytest_args"]]


def run_pytest(argv: list[str], env: dict, timeout: float, log: Path) -> int:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=SRC, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        assert proc.stdout is not None
        deadline, interrupted = time.monotonic() + timeout, None
        os.set_blocking(proc.stdout.fileno(), False)
        while True:
            chunk = proc.stdout.read()
            if chunk:
                out.write(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            if proc.poll() is not None and not chunk:
                break
            now = time.monotonic()
            if now > deadline and interrupted is None:
                say(pytest_timeout=timeout)
                os.killpg(proc.pid, signal.SIGINT)
                interrupted = now
            elif interrupted is not None and now > interrupted + 60:
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.1)
    return 124 if interrupted is not None else proc.returncode


def keep_containerd_logs(results: Path) -> None:
    total = 0
    dest = results / "containerd-logs"
    for log in sorted(Path("/tmp").glob("pytest-of-*/pytest-*/containerd-logs*/*.log")):
        if log.parent.parent.is_symlink():  # pytest-current -> pytest-N: the same logs again
            continue
        data = log.read_bytes()[-LOG_CAP:]
        if total + len(data) > LOGS_TOTAL_CAP:
            break
        dest.mkdir(exist_ok=True)
        (dest / f"{log.parent.parent.name}-{log.name}").write_bytes(data)
        total += len(data)


def main(config_path: str, results_dir: str) -> int:
    config = json.loads(Path(config_path).read_text())
    results = Path(results_dir)
    f = facts()
    (results / "facts.json").write_text(json.dumps(f, indent=1) + "\n")
    cg = f["cgroup"]
    say(cgroupfs=cg["fstype"], controllers=",".join(cg["controllers"]), kernel=f["kernel"],
        criu_check_rc=f["criu_check"]["rc"], facts_uptime=uptime())
    v1 = [m for m in cg["cgroup_mounts"] if m.split()[1] != "cgroup2"]
    if cg["fstype"] != "cgroup2fs" or v1:
        print(f"guest_run: not pure cgroup v2: /sys/fs/cgroup is {cg['fstype']}, v1 mounts {v1}", flush=True)
        return 3
    install_checkout(SRC, VENV)
    env = dict(os.environ, CI="true", PYSHIM_IN_VM="1", PYSHIM_TIME_SCALE=str(TIME_SCALE),
               PYSHIM_CACHE=str(CACHE), PYSHIM_CONTAINERD_VERSIONS=",".join(config["versions"]),
               **config.get("env", {}))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # .pyc files are worth keeping: every shim start imports again
    argv = pytest_argv(config, results)
    say(pytest_start_uptime=uptime())
    print(" ".join(argv), flush=True)
    rc = run_pytest(argv, env, float(config["timeout"]), results / "pytest.log")
    (results / "pytest.rc").write_text(f"{rc}\n")
    say(pytest_rc=rc, pytest_done_uptime=uptime())
    if rc != 0:
        keep_containerd_logs(results)
    return rc


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
