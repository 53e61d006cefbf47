"""The library's boundary, checked from the source: who may import whom, and the public surface with its docs.

- Import graph (every import statement, also those inside functions and TYPE_CHECKING blocks): ttrpc imports
  none of shim or runtime; runtime imports none of shim or ttrpc; the library (shim/ but shim/runc/ and
  shim/__main__.py) never imports shim.runc or runtime. pyshim's runc shim is one user of the library, nothing
  more.
- Public surface: the ``__all__`` of the library and of ttrpc's modules are exactly the lists below (changing one
  is a decision: update the list here and say so in the commit), every name resolves, and every public class,
  function and public method defined there has a docstring.
"""
from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PUBLIC = {
    "shim": ["AlreadyExists", "CleanupRequest", "Daemon", "DeadlineExceeded", "Exit", "FailedPrecondition",
             "InvalidArgument", "Manager", "NotFound", "Publisher", "Reaper", "ReaperLauncher", "SpawnedChild",
             "StartRequest", "Subscription", "TaskEvents", "TaskService", "Unavailable", "Unimplemented", "Unknown",
             "run"],
    "shim.codecache": ["FORMAT", "CodeCache", "build", "install", "install_entries", "launcher"],
    "shim.io": ["ChildProcess", "ConsoleSocketError", "LoggerStartError", "ProcessIO", "Spawner", "StdioConfig",
                "StdioOpenError", "UnsupportedStdioError"],
    "shim.linux.mount": ["Mount", "MountError", "MountOptions", "mount_all", "mount_one", "mounts_under",
                         "parse_options", "unmount_all"],
    "shim.linux.unmount": ["MountError", "mounts_under", "unmount_all", "unmount_point"],
    "shim.service": ["EMPTY", "GO_ZERO_TIME", "SERVICES", "TaskService", "set_time"],
    "ttrpc.blocking": ["call"],
    "ttrpc.client": ["Client", "open_client", "open_unix_client"],
    "ttrpc.server": ["CallContext", "Method", "Server", "status_for"],
    "ttrpc.status": ["Code", "ConnectionClosed", "LocalProtocolError", "ProtocolError", "RemoteProtocolError",
                     "StatusError"],
    "ttrpc.connection": ["ClientConnection", "Rejected", "RequestReceived", "ResponseReceived", "ServerConnection",
                         "encode_response_data"],
}


def python_modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``package``."""
    base = REPO / package
    found = {}
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(path: Path, module: str) -> set[str]:
    """Every module an import statement in ``path`` names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def _offenders(packages: tuple[str, ...], forbidden: tuple[str, ...], exempt: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for package in packages:
        for module, path in python_modules(package).items():
            if module.startswith(exempt) or module in exempt:
                continue
            hits = sorted(n for n in imports_of(path, module) if n == forbidden or n.startswith(forbidden)
                          or any(n == f or n.startswith(f + ".") for f in forbidden))
            bad += [f"{module} imports {n}" for n in hits]
    return bad


def test_ttrpc_imports_neither_shim_nor_runtime() -> None:
    assert _offenders(("ttrpc",), ("shim", "runtime")) == []


def test_runtime_imports_neither_shim_nor_ttrpc() -> None:
    assert _offenders(("runtime",), ("shim", "ttrpc")) == []


def test_the_library_never_imports_its_runc_user() -> None:
    assert _offenders(("shim",), ("shim.runc", "runtime"), exempt=("shim.runc", "shim.__main__")) == []


def test_the_graph_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The checker itself: a lazy import and a TYPE_CHECKING import count."""
    source = tmp_path / "m.py"
    source.write_text("TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from shim.runc import x\n"
                      "def f():\n    import runtime.base\n    from . import sibling\n")
    assert imports_of(source, "shim.thing") >= {"shim.runc", "shim.runc.x", "runtime.base", "shim.sibling"}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_exactly_these(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC[module])
    for name in mod.__all__:
        assert getattr(mod, name) is not None


def _undocumented(obj: object, where: str) -> list[str]:
    missing = []
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip():
        missing.append(where)
    if inspect.isclass(obj):
        for name, member in vars(obj).items():
            if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, (classmethod, property))):
                continue
            function = member.__func__ if isinstance(member, classmethod) else member
            function = function.fget if isinstance(function, property) else function
            if function is not None and not (function.__doc__ or "").strip():
                missing.append(f"{where}.{name}")
    return missing


LIBRARY_CORE = ("shim", "shim.io", "ttrpc.blocking", "ttrpc.client", "ttrpc.server")


@pytest.mark.parametrize("module", LIBRARY_CORE)
def test_public_classes_functions_and_methods_have_docstrings(module: str) -> None:
    mod = importlib.import_module(module)
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if getattr(obj, "__module__", "").startswith(("shim", "ttrpc")):
            missing += _undocumented(obj, f"{module}.{name}")
    assert missing == []


def test_importing_the_library_loads_nothing_else() -> None:
    """``import shim`` must stay free: start and delete import it on the critical path."""
    import subprocess
    import sys

    code = "import sys; before = set(sys.modules); import shim; print(sorted(set(sys.modules) - before))"
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['shim']"
