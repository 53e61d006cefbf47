"""The example shim of examples/chroot-shim stays on the library's public interface, and its start/delete path on
the standard library.

Rules: the checks read the example's source in this checkout (the AST of every module, and imports run with its
directory first on sys.path), so they hold whether or not the example is installed. No root needed.
"""
from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import shim
import shim.io
import shim.linux.mount
import shim.linux.unmount
import shim.service

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chroot-shim"
PACKAGE = EXAMPLE / "chrootshim"

ERRORS = {"AlreadyExists", "DeadlineExceeded", "FailedPrecondition", "InvalidArgument", "NotFound", "Unavailable",
          "Unimplemented", "Unknown"}
# The library's public modules and the names each offers (shim.errors: the errors shim re-exports).
PUBLIC = {
    "shim": set(shim.__all__),
    "shim.io": set(shim.io.__all__),
    "shim.linux.mount": set(shim.linux.mount.__all__),
    "shim.linux.unmount": set(shim.linux.unmount.__all__),
    "shim.service": set(shim.service.__all__),
    "shim.errors": ERRORS & set(shim.__all__),
}
# Besides the library: the standard library, trio, protobuf's runtime, the generated message classes, itself.
OTHER_TOPS = set(sys.stdlib_module_names) | {"trio", "google", "protos", "chrootshim"}
HEAVY = ("trio", "google", "protos", "ttrpc", "runtime")  # must not load on the start/delete path


def imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names) of every import statement in ``path`` (names empty for ``import x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            found.append((node.module or "", tuple(alias.name for alias in node.names)))
    return found


def modules() -> list[Path]:
    found = sorted(PACKAGE.glob("*.py"))
    assert {p.name for p in found} >= {"__init__.py", "manager.py", "main.py", "service.py"}
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.name)
def test_only_public_library_names(path):
    for module, names in imports(path):
        top = module.split(".")[0]
        if top == "shim":
            assert module in PUBLIC, f"{path.name} imports {module}, not a public module of the library"
            private = [n for n in names if n not in PUBLIC[module]]
            assert private == [], f"{path.name}: {module} does not offer {private} publicly"
        else:
            assert top in OTHER_TOPS, f"{path.name} imports {module}"
        assert not any(part.startswith("_") for part in module.split(".")[1:]), f"{path.name}: {module}"
        assert not any(n.startswith("_") for n in names), f"{path.name}: {names}"


def test_every_module_states_its_rules():
    for path in modules():
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, f"{path.name} has no docstring"
        assert len(path.read_text().splitlines()) < 300, f"{path.name} is too long for an example"


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter with the example first on sys.path; its last line is JSON."""
    prelude = f"import sys; sys.path.insert(0, {str(EXAMPLE)!r})\n"
    out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, check=True,
                         timeout=60)
    return json.loads(out.stdout.splitlines()[-1])


def test_manager_module_loads_only_the_standard_library():
    got = _run("import json\nimport chrootshim.main, chrootshim.manager as m\n"
               f"heavy = sorted(n for n in sys.modules if n.split('.')[0] in {HEAVY!r})\n"
               "print(json.dumps({'heavy': heavy, 'file': chrootshim.manager.__file__, 'name': m.MANAGER.name,"
               " 'forkserver': m.MANAGER.forkserver, 'dist': m.MANAGER.distribution}))")
    assert got["heavy"] == []
    assert Path(got["file"]).parent == PACKAGE
    assert (got["name"], got["forkserver"], got["dist"]) == ("io.containerd.pychroot.v1", "", "pyshim-example-chroot")


def test_cleanup_of_a_bundle_without_config_stays_on_the_standard_library(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "init.pid").write_text("4194305")  # above any pid_max: nothing to kill, but it is answered
    got = _run("import json\nfrom shim import CleanupRequest\nfrom chrootshim.manager import MANAGER\n"
               "warnings = []\n"
               f"pid = MANAGER.cleanup(CleanupRequest(id='c', namespace='n', bundle={str(bundle)!r},"
               " warn=warnings.append))\n"
               f"heavy = sorted(n for n in sys.modules if n.split('.')[0] in {HEAVY!r})\n"
               "print(json.dumps({'pid': pid, 'warnings': warnings, 'heavy': heavy}))")
    assert got["heavy"] == []
    assert got["pid"] == 4194305
    assert len(got["warnings"]) == 1 and "cannot find the container's root" in got["warnings"][0]


@pytest.fixture
def spec(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in [n for n in sys.modules if n == "chrootshim" or n.startswith("chrootshim.")]:
        monkeypatch.delitem(sys.modules, name)
    return importlib.import_module("chrootshim.spec")


def test_process_spec_and_command_lines(spec, tmp_path):
    (tmp_path / "proc").mkdir()
    p = spec.parse_process({"args": ["/bin/sh", "-c", "id"], "env": ["A=1", "B=x=y", "junk"], "cwd": "/tmp",
                            "user": {"uid": 1000, "gid": 100}}, terminal=False)
    assert (p.args, p.env, p.cwd, p.uid, p.gid) == (("/bin/sh", "-c", "id"), {"A": "1", "B": "x=y"}, "/tmp", 1000,
                                                    100)
    tools = spec.Tools("/u/unshare", "/u/nsenter")
    assert spec.init_argv(tools, str(tmp_path), p) == [
        "/u/unshare", "--mount", "--uts", "--ipc", "--mount-proc", f"--root={tmp_path}", "--wd=/tmp",
        "--setuid", "1000", "--setgid", "100", "--", "/bin/sh", "-c", "id"]
    assert spec.exec_argv(tools, 42, p) == [
        "/u/nsenter", "--target=42", "--mount", "--uts", "--ipc", "--root", "--wdns=/tmp",
        "--setuid", "1000", "--setgid", "100", "--", "/bin/sh", "-c", "id"]
    assert spec.parse_exec(b'{"args": ["ls"]}', terminal=False) == spec.ProcessSpec(("ls",), {}, "/", 0, 0)


@pytest.mark.parametrize("process, terminal, message", [
    ({"args": ["ls"]}, True, "terminal is not supported"),
    ({"args": ["ls"], "terminal": True}, False, "terminal is not supported"),
    ({"args": []}, False, "process.args"),
    ({"args": ["ls"], "cwd": "relative"}, False, "process.cwd"),
    ({"args": ["ls"], "user": {"uid": "root"}}, False, "uid and gid"),
    ("not an object", False, "JSON object"),
])
def test_process_spec_refusals(spec, process, terminal, message):
    with pytest.raises(shim.InvalidArgument, match=message):
        spec.parse_process(process, terminal=terminal)
