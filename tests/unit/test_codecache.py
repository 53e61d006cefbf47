"""shim/codecache.py: the launcher's code cache serves exactly the modules a path import would, and never a stale one.

Each case builds a cache of a small package tree in a fresh interpreter (as install.sh does) and imports through a
generated launcher or ``install`` in another, so the import system of the test process is never touched.
"""
from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shim import codecache
from tests.prereq import unavailable

REPO = Path(__file__).resolve().parents[2]


def python(*args: str, cwd: Path | None = None, path: list[Path] = ()) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(str(p) for p in (REPO, *path))}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """site/pkg/{__init__,a,b}.py and site/pkg/sub/{__init__,c}.py; a imports b and sub.c; d is never imported."""
    site = tmp_path / "site"
    (site / "pkg" / "sub").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("NAME = 'pkg'\n")
    (site / "pkg" / "a.py").write_text("from pkg import b\nfrom pkg.sub import c\nVALUE = b.VALUE + c.VALUE\n")
    (site / "pkg" / "b.py").write_text("VALUE = 1\n")
    (site / "pkg" / "d.py").write_text("VALUE = 4\n")
    (site / "pkg" / "sub" / "__init__.py").write_text("")
    (site / "pkg" / "sub" / "c.py").write_text("VALUE = 2\n")
    return site


def build(site: Path, cache: Path, *modules: str) -> list[str]:
    done = python("-P", "-m", "shim.codecache", "build", str(cache), *modules, cwd=site.parent, path=[site])
    assert done.returncode == 0, done.stderr
    return done.stdout.split(": ", 2)[2].split()


REPORT = textwrap.dedent("""\
    import json, sys
    import pkg.a
    out = {}
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"):
        m = sys.modules[name]
        out[name] = {"loader": type(m.__loader__).__name__, "file": m.__file__, "cached": m.__cached__,
                     "path": list(getattr(m, "__path__", [])) or None, "origin": m.__spec__.origin}
    out["value"] = pkg.a.VALUE
    print(json.dumps(out))
    """)


def launch(tmp_path: Path, site: Path, cache: Path, body: str = REPORT) -> dict:
    """Run ``body`` as the launcher's entry (its ``main``) with the cache installed; its JSON output."""
    (tmp_path / "entry").mkdir(exist_ok=True)
    entry = "def main():\n" + textwrap.indent(body, "    ") + "    sys.stdout.flush()  # the launcher ends in os._exit\n"
    (tmp_path / "entry" / "probe.py").write_text("import sys\n" + entry + "    return 0\n")
    script = tmp_path / "launcher"
    text = codecache.launcher(sys.executable, [str(REPO), str(site), str(tmp_path / "entry")], str(cache),
                              "probe:main")
    script.write_text(text)
    script.chmod(0o755)
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=60, env={})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_build_caches_what_the_modules_import_and_nothing_else(tree: Path, tmp_path: Path) -> None:
    names = build(tree, tmp_path / "c", "pkg.a")
    assert names == ["pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"]  # not pkg.d, not the standard library
    found, own, entries = marshal.loads((tmp_path / "c").read_bytes())
    assert found == codecache.header()
    assert own.co_filename.endswith(os.path.join("shim", "codecache.py"))
    assert entries["pkg.sub"][0] is True and entries["pkg.b"][0] is False
    assert entries["pkg.b"][1] == str(tree / "pkg" / "b.py")


def test_served_modules_look_like_path_imports(tree: Path, tmp_path: Path) -> None:
    build(tree, tmp_path / "c", "pkg.a")
    cached = launch(tmp_path, tree, tmp_path / "c")
    plain = launch(tmp_path, tree, tmp_path / "absent")
    assert cached["value"] == plain["value"] == 3
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"):
        assert cached[name]["loader"] == "CodeCache"
        assert plain[name]["loader"] == "SourceFileLoader"
        for key in ("file", "cached", "path", "origin"):
            assert cached[name][key] == plain[name][key], (name, key)


def test_a_changed_file_is_imported_from_the_file(tree: Path, tmp_path: Path) -> None:
    build(tree, tmp_path / "c", "pkg.a")
    (tree / "pkg" / "b.py").write_text("VALUE = 10\n")  # another size
    out = launch(tmp_path, tree, tmp_path / "c")
    assert out["value"] == 12
    assert out["pkg.b"]["loader"] == "SourceFileLoader"
    assert out["pkg.a"]["loader"] == out["pkg.sub.c"]["loader"] == "CodeCache"


def test_same_size_new_mtime_is_imported_from_the_file(tree: Path, tmp_path: Path) -> None:
    build(tree, tmp_path / "c", "pkg.a")
    target = tree / "pkg" / "sub" / "c.py"
    before = target.stat()
    target.write_text("VALUE = 5\n")  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))  # the pyc keeps seconds
    out = launch(tmp_path, tree, tmp_path / "c")
    assert out["value"] == 6 and out["pkg.sub.c"]["loader"] == "SourceFileLoader"


def test_a_submodule_outside_its_parents_path_is_not_served(tree: Path, tmp_path: Path) -> None:
    """A submodule is served only under its parent's __path__: a parent from another tree keeps its own files."""
    build(tree, tmp_path / "c", "pkg.a")
    cache = codecache.install(str(tmp_path / "c"))
    try:
        assert cache.find_spec("pkg.b", [str(tmp_path / "other" / "pkg")]) is None
        assert cache.find_spec("pkg.sub", [str(tmp_path / "other" / "pkg")]) is None
        spec = cache.find_spec("pkg.sub", [str(tree / "pkg")])
        assert spec is not None and spec.submodule_search_locations == [str(tree / "pkg" / "sub")]
        assert cache.find_spec("pkg.sub.c", spec.submodule_search_locations).origin == str(tree / "pkg/sub/c.py")
    finally:
        sys.meta_path.remove(cache)


@pytest.mark.parametrize("content", [b"", b"garbage", marshal.dumps(((b"pyshim-codecache-0", b"x"), None, {})),
                                     marshal.dumps((codecache.header(), compile("", "x", "exec"), []))])
def test_an_unusable_cache_changes_nothing(tree: Path, tmp_path: Path, content: bytes) -> None:
    (tmp_path / "c").write_bytes(content)
    out = launch(tmp_path, tree, tmp_path / "c")
    assert out["value"] == 3 and out["pkg.a"]["loader"] == "SourceFileLoader"
    assert codecache.install(str(tmp_path / "c")) is None


def test_another_interpreters_cache_is_not_run(tree: Path, tmp_path: Path) -> None:
    build(tree, tmp_path / "c", "pkg.a")
    _, own, entries = marshal.loads((tmp_path / "c").read_bytes())
    boom = compile("raise SystemExit(99)", "boom", "exec")
    (tmp_path / "c").write_bytes(marshal.dumps(((codecache.FORMAT, b"\0\0\r\n"), boom, entries)))
    out = launch(tmp_path, tree, tmp_path / "c")
    assert out["pkg.a"]["loader"] == "SourceFileLoader"


def test_install_in_process_then_remove(tree: Path, tmp_path: Path) -> None:
    build(tree, tmp_path / "c", "pkg.a")
    cache = codecache.install(str(tmp_path / "c"))
    try:
        assert cache is not None and sys.meta_path[0] is cache
        assert cache.names() == ["pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"]
        assert cache.find_spec("pkg.d") is None and cache.find_spec("json") is None
    finally:
        sys.meta_path.remove(cache)


def test_the_installed_launcher_serves_start_and_delete_from_its_cache() -> None:
    """install.sh's launcher (CI installs it first): start's and delete's modules all come from its cache."""
    script = Path("/opt/pyshim/venv/bin/containerd-shim-pyshim-v1")
    if not script.exists():
        unavailable(f"{script}: install.sh has not run here")
    text = script.read_text()
    interpreter = text.splitlines()[0][2:].split()[0]
    probe = text.replace("os._exit(main())", textwrap.dedent("""\
        import shim.commands.start, shim.commands.delete, shim.runc.cleanup
        ours = [n for n in sys.modules if n.startswith(("shim.", "ttrpc"))]
        print(len(ours), *[n for n in ours if type(sys.modules[n].__loader__).__name__ != "CodeCache"], flush=True)
        os._exit(0)
        """))
    done = subprocess.run([interpreter, "-IS", "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    count, *not_cached = done.stdout.split()
    assert int(count) >= 20 and not_cached == []
