"""tests/vm/payload.py, cli.py argument handling, guest_run.py's install pieces and selection.py (no VM)."""
from __future__ import annotations

import configparser
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.vm import cli, guest_run, payload, selection


def _git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("A = 1\n")
    (repo / "gone.py").write_text("x\n")
    (repo / ".gitignore").write_text("ignored.txt\n__pycache__/\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    (repo / "gone.py").unlink()                   # tracked, deleted in the working tree: not shipped
    (repo / "new.py").write_text("N = 2\n")       # untracked, not ignored: shipped (uncommitted work is tested)
    (repo / "ignored.txt").write_text("no\n")
    (repo / "pkg" / "__pycache__").mkdir()
    (repo / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    return repo


def test_source_files_are_the_working_tree(tmp_path):
    assert payload.source_files(_git_repo(tmp_path)) == [".gitignore", "new.py", "pkg/a.py"]


def test_write_payload_then_guest_results_round_trip(tmp_path):
    repo = _git_repo(tmp_path)
    extra_file = tmp_path / "ctr"
    extra_file.write_bytes(b"\x7fELF")
    disk = tmp_path / "x.img"
    cfg = payload.GuestConfig(pytest_args=("tests/integration", "-k", "a b"), timeout=600.0,
                              versions=("1.6.20", "2.1.9"), env={"K": "V"})
    size = payload.write(disk, repo, cfg, {"cache/containerd/2.1.9/root/usr/bin/ctr": extra_file})
    assert disk.stat().st_size == size + payload.ROOM
    with tarfile.open(disk) as tar:
        names = tar.getnames()
        assert tar.getmember("run.sh").mode == 0o755
        assert b"guest_run.py /payload/config.json" in tar.extractfile("run.sh").read()
        assert json.loads(tar.extractfile("config.json").read()) == {
            "pytest_args": ["tests/integration", "-k", "a b"], "timeout": 600.0, "versions": ["1.6.20", "2.1.9"],
            "env": {"K": "V"}}
    assert names == ["run.sh", "config.json", "src/.gitignore", "src/new.py", "src/__pycache__/new.cpython-311.pyc",
                     "src/pkg/a.py", "src/pkg/__pycache__/a.cpython-311.pyc",
                     "cache/containerd/2.1.9/root/usr/bin/ctr"]
    with tarfile.open(disk) as tar:  # the bytecode is valid for the shipped source: same mtime and size
        src, pyc = tar.getmember("src/pkg/a.py"), tar.extractfile("src/pkg/__pycache__/a.cpython-311.pyc").read()
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[8:12], "little") == int(src.mtime) and int.from_bytes(pyc[12:16], "little") == src.size
    assert b"/payload/src/pkg/a.py" in pyc  # tracebacks in the guest name the guest's path

    # the guest writes its results tar over the same disk (what vminit's `tar -C $R -cf /dev/vdb .` does)
    with open(disk, "r+b") as f, tarfile.open(fileobj=f, mode="w") as tar:
        for name, data in (("./run.rc", b"0\n"), ("./sub/junit.xml", b"<x/>")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "results"
    assert sorted(payload.read_results(disk, out)) == ["run.rc", "sub/junit.xml"]
    assert (out / "run.rc").read_text() == "0\n"


def test_read_results_refuses_escaping_and_special_members(tmp_path):
    disk = tmp_path / "x.img"
    with tarfile.open(disk, "w") as tar:
        for name in ("../evil", "/abs", "ok.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    out = tmp_path / "out"
    assert payload.read_results(disk, out) == ["ok.txt"]
    assert sorted(p.name for p in out.iterdir()) == ["ok.txt"]
    assert not (tmp_path / "evil").exists()


def test_read_results_when_the_guest_wrote_none(tmp_path):
    disk = tmp_path / "x.img"
    disk.write_bytes(b"\0" * 4096)                       # nothing at all: an empty archive
    assert payload.read_results(disk, tmp_path / "out") == []
    disk.write_bytes(b"junk" * 1024)
    with pytest.raises(tarfile.ReadError):
        payload.read_results(disk, tmp_path / "out")
    payload.write(disk, _git_repo(tmp_path), payload.GuestConfig(("x",), 1.0))  # the payload is still there
    with pytest.raises(payload.NoResults):
        payload.read_results(disk, tmp_path / "out2")


def test_cli_defaults_and_passthrough():
    ns = cli.parse([])
    cfg = cli.guest_config(ns)
    assert cfg.pytest_args == cli.DEFAULT_ARGS and cfg.versions == ("1.6.20",) and cfg.timeout == 660.0
    assert "-p" in cfg.pytest_args and "tests.vm.selection" in cfg.pytest_args
    ns = cli.parse(["--containerd", "1.6.20, 2.1.9", "--timeout", "60", "--env", "A=b=c", "--",
                    "tests/integration/test_e2e_run.py", "-k", "pyshim and echo"])
    cfg = cli.guest_config(ns)
    assert cfg.pytest_args == ("tests/integration/test_e2e_run.py", "-k", "pyshim and echo")
    assert cfg.versions == ("1.6.20", "2.1.9") and cfg.timeout == 60.0 and cfg.env == {"A": "b=c"}


@pytest.mark.parametrize("argv", [["--containerd", ","], ["--env", "novalue"], ["--env", "=x"]])
def test_cli_rejects(argv):
    with pytest.raises(SystemExit):
        cli.parse(argv)


def test_entry_points_and_console_script_match_pyproject():
    project = {"scripts": {"containerd-shim-pyshim-v1": "shim.commands.main:main"},
               "entry-points": {"pyshim.runtimes": {"runc": "runtime.builtin:runc", "crun": "runtime.builtin:crun"}}}
    parser = configparser.ConfigParser()
    parser.read_string(guest_run.entry_points_text(project))
    assert dict(parser["console_scripts"]) == {"containerd-shim-pyshim-v1": "shim.commands.main:main"}
    assert dict(parser["pyshim.runtimes"]) == {"crun": "runtime.builtin:crun", "runc": "runtime.builtin:runc"}
    script = guest_run.console_script("/opt/pyshim/venv/bin/python", "shim.commands.main:main", ["/site", "/payload/src"])
    lines = script.splitlines()
    assert lines[0] == "#!/opt/pyshim/venv/bin/python -IS"  # containerd execs it directly; like install.sh's
    assert lines[-4:] == ["sys.path.append('/site')", "sys.path.append('/payload/src')", "from shim.commands.main import main",
                          "os._exit(main())"]


def test_install_checkout_makes_entry_points_visible(tmp_path):
    src, venv = tmp_path / "src", tmp_path / "venv"
    (src / "mypkg").mkdir(parents=True)
    (src / "mypkg" / "__init__.py").write_text("def main():\n    return 7\n")
    (src / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "0.1"\n'
                                        '[project.scripts]\ndemo-cli = "mypkg:main"\n'
                                        '[project.entry-points."demo.plugins"]\nx = "mypkg:main"\n')
    site = venv / "lib" / guest_run.python_dir() / "site-packages"
    site.mkdir(parents=True)
    (venv / "bin").mkdir()
    assert guest_run.install_checkout(src, venv) == "demo"
    assert (site / "__editable__.demo.pth").read_text() == f"{src}\n"
    code = ("import importlib.metadata as m, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]];"
            "print([e.value for e in m.entry_points(group='demo.plugins')])")
    out = subprocess.run(["python3", "-c", code, str(site), str(src)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['mypkg:main']"
    cli_script = venv / "bin" / "demo-cli"
    assert cli_script.stat().st_mode & 0o111
    # the launcher runs with a real interpreter (here: this test's, in place of the guest venv's)
    cli_script.write_text(cli_script.read_text().replace(str(venv / "bin" / "python"), sys.executable, 1))
    assert subprocess.run([str(cli_script)], timeout=30).returncode == 7


RUNC = "io.containerd.runc.v2"


@pytest.mark.parametrize("nodeid,vm,runtime,version,kept", [
    ("tests/integration/test_e2e_run.py::test_exit_codes[containerd-1.6.20-pyshim]", False, selection.PYSHIM,
     "1.6.20", True),
    ("tests/integration/test_e2e_run.py::test_exit_codes[containerd-2.1.9-pyshim]", False, selection.PYSHIM,
     "2.1.9", False),                                  # core scenarios: the guest's own containerd only
    ("tests/integration/test_e2e_run.py::test_exit_codes[containerd-1.6.20-runc]", False, RUNC, "1.6.20", False),
    ("tests/integration/test_e2e_many.py::test_twenty_containers_at_once[containerd-1.6.20-pyshim]", False,
     selection.PYSHIM, "1.6.20", False),
    ("tests/integration/test_stats.py::test_metrics[containerd-2.1.9-runc]", True, RUNC, "2.1.9", True),
    ("tests/vm/guest_checks.py::test_pure_cgroup2", False, None, None, True),
    ("tests/integration/test_harness.py::test_run_rootfs_echo[containerd-1.6.20]", False, None, "1.6.20", False),
])
def test_selection_keep(nodeid, vm, runtime, version, kept):
    assert selection.keep(nodeid, vm, runtime, version, core_version="1.6.20") is kept


def test_selection_core_names_exist():
    root = Path(__file__).resolve().parents[2]
    for nodeid in selection.CORE:
        path, func = nodeid.split("::")
        assert f"def {func}(" in (root / path).read_text(), nodeid
