"""A code cache for a shim binary's short-lived commands: the modules ``start`` and ``delete`` import, in one file.

containerd waits for ``start`` on every container and for ``delete`` on every task removal, and each is a new
interpreter. Every module imported through the path finder (its walk and directory listings, stat, pyc open and
read) is paid again per container, and ``start`` imports ~20 (the figures: bench/README.md, "The start path").
The launcher that install.sh writes (``launcher``) gets them from one file read instead.

Rules:
- ``python -m shim.codecache build CACHE MODULE...`` (``build``) imports the modules in a fresh interpreter and
  writes CACHE atomically, one marshal record of three items: the header (FORMAT and the interpreter's bytecode
  magic), the code of this module, and the entries: for every module then loaded from a ``.py`` file under a directory the
  named modules' top-level packages came from (their site-packages: ttrpc beside shim, never the standard
  library), its name, whether it is a package, its file, that file's (mtime_ns, size) and its code as the
  normal import made it (the loader's ``get_code``: the pyc, or the compiled source).
- The launcher (``python -m shim.codecache launcher ...``) checks the header, runs the second item (this
  module's code) and installs the entries, so not even this module goes through the path finder. Any failure
  there (no cache, another interpreter's, a broken file) leaves the import system as it was: the cache only
  ever costs time.
- The cache never changes what runs: a module is served only while its file has the recorded mtime and size
  (else the path finder imports it, so a changed or reinstalled file is always the one that runs) and, for a
  submodule, only when its directory is on the parent package's ``__path__``. A top-level module is served
  before sys.path is searched: install it only with the sys.path it was built from (the launcher's).
- Modules served from it look as the path finder's would: ``__file__``, ``__cached__``, ``__path__`` for
  packages, ``__spec__.origin``; only ``__loader__`` differs (the ``CodeCache``).
- Standard library only, builtin modules only until ``build``: the launcher runs this code before anything else.
"""

from __future__ import annotations

import marshal
import os
import sys

try:
    from _frozen_importlib import ModuleSpec
    from _frozen_importlib_external import MAGIC_NUMBER
except ImportError:  # pragma: no cover - not CPython
    from importlib.machinery import ModuleSpec
    from importlib.util import MAGIC_NUMBER

__all__ = ["FORMAT", "CodeCache", "build", "install", "install_entries", "launcher"]

FORMAT = b"pyshim-codecache-1"

Entries = dict  # name -> (is_package, file, mtime_ns, size, marshalled code)


def header() -> tuple[bytes, bytes]:
    """The first record: the format and this interpreter's bytecode magic."""
    return FORMAT, bytes(MAGIC_NUMBER)


class CodeCache:
    """A meta path finder and loader over a cache's entries (see the module rules)."""

    def __init__(self, entries: Entries) -> None:
        self._entries = dict(entries)

    def names(self) -> list[str]:
        """The modules it can still serve."""
        return sorted(self._entries)

    def find_spec(self, name: str, path=None, target=None) -> ModuleSpec | None:
        """A spec for ``name`` when the cache holds it and its file is unchanged; else None (the next finder)."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        is_package, origin, mtime_ns, size, _ = entry
        directory = os.path.dirname(origin)
        if path is not None and (os.path.dirname(directory) if is_package else directory) not in path:
            return None
        try:
            st = os.stat(origin)
        except OSError:
            return None
        if st.st_mtime_ns != mtime_ns or st.st_size != size:
            del self._entries[name]
            return None
        spec = ModuleSpec(name, self, origin=origin, is_package=is_package)
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [directory]
        return spec

    def create_module(self, spec: ModuleSpec) -> None:
        """The default module object."""
        return None

    def exec_module(self, module) -> None:
        """Run the cached code of ``module`` in its namespace; the entry is dropped (a reload uses the path)."""
        exec(marshal.loads(self._entries.pop(module.__name__)[4]), module.__dict__)


def install_entries(entries: Entries) -> CodeCache:
    """Put a ``CodeCache`` over ``entries`` first on ``sys.meta_path``."""
    if not isinstance(entries, dict):
        raise ValueError("code cache: the entries are not a mapping")
    cache = CodeCache(entries)
    sys.meta_path.insert(0, cache)
    return cache


def install(path: str) -> CodeCache | None:
    """Install the cache at ``path`` (what the launcher does); None, and nothing changed, when it is unusable."""
    try:
        with open(path, "rb") as f:
            found, _, entries = marshal.loads(f.read())  # the second item: this module's code, for the launcher
        if found != header():
            return None
        return install_entries(entries)
    except Exception:  # a missing or broken cache costs only time
        return None


def _ancestry(name: str) -> list[str]:
    """``a.b.c`` -> [a, a.b, a.b.c]."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _root(module) -> str:
    """The directory a top-level module or package was imported from, with a trailing separator."""
    where = os.path.dirname(os.path.abspath(module.__file__))
    if getattr(module, "__path__", None) is not None:
        where = os.path.dirname(where)
    return os.path.join(where, "")


def collect(roots: set[str], skip: set[str] = frozenset()) -> Entries:
    """The entries for every loaded module but ``skip`` that came from a .py file under one of ``roots``."""
    entries = {}
    for name, module in sorted(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if name == "__main__" or name in skip or spec is None or not isinstance(spec.origin, str):
            continue
        if not spec.origin.endswith(".py") or not hasattr(spec.loader, "get_code"):
            continue
        if not any(os.path.abspath(spec.origin).startswith(root) for root in roots):
            continue
        st = os.stat(spec.origin)  # before the code: a file changed meanwhile never matches
        code = spec.loader.get_code(name)
        entries[name] = (spec.submodule_search_locations is not None, spec.origin, st.st_mtime_ns, st.st_size,
                         marshal.dumps(code))
    return entries


def build(path: str, modules: list[str]) -> list[str]:
    """Import ``modules`` and write the cache of what they loaded to ``path``; the cached names.

    Run it in a fresh interpreter (``python -m shim.codecache build``): every module already loaded counts."""
    import importlib

    earlier = set(sys.modules)  # the interpreter's start-up (site, runpy): not what ``modules`` need
    for name in modules:
        importlib.import_module(name)
    needed = {n for name in modules for n in _ancestry(name)}  # the modules and their packages, even if preloaded
    roots = {_root(sys.modules[name.partition(".")[0]]) for name in modules}
    entries = collect(roots, skip=earlier - needed)
    with open(__file__, "rb") as f:
        own = compile(f.read(), __file__, "exec", dont_inherit=True)
    from shim.bundle import write_atomically  # after collect: only what ``modules`` import is cached

    write_atomically(path, marshal.dumps((header(), own, entries)), 0o644)
    return sorted(entries)


def launcher(python: str, path: list[str], cache: str, entry: str) -> str:
    """The text of a launcher script: ``python -IS``, ``path`` appended to sys.path, the cache installed as the
    module rules say, then ``entry`` ("module:function") called and its result the exit status, through
    ``os._exit`` (the commands write their output with os.write: nothing is left buffered)."""
    module, _, function = entry.partition(":")
    if not (module and function):
        raise ValueError(f"entry {entry!r}: expected module:function")
    lines = [f"#!{python} -IS",
             "# Written by `python -m shim.codecache launcher` (install.sh, bench/README.md): a console script without",
             "# site and re, without the interpreter's finalisation, and with the start/delete path from one file."]
    lines += ["import os", "import sys"]
    lines += [f"sys.path.append({p!r})" for p in path]
    lines += [
        "try:  # shim/codecache.py: the cache's second item is that module's code",
        "    import marshal",
        "    from _frozen_importlib_external import MAGIC_NUMBER",
        f"    with open({cache!r}, 'rb') as f:",
        "        _cache = marshal.loads(f.read())",
        f"    if _cache[0] == ({FORMAT!r}, bytes(MAGIC_NUMBER)):",
        "        _codecache = {'__name__': 'shim.codecache'}",
        "        exec(_cache[1], _codecache)",
        "        _codecache['install_entries'](_cache[2])",
        "except Exception:",
        "    pass",
        "_cache = _codecache = None",
        f"from {module} import {function}",
        f"os._exit({function}())",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``build CACHE MODULE...`` or ``launcher OUT PYTHON CACHE ENTRY [PATH...]`` (see the module rules)."""
    if len(argv) >= 3 and argv[0] == "build":
        names = build(argv[1], argv[2:])
        sys.stdout.write(f"{argv[1]}: {len(names)} modules: {' '.join(names)}\n")
        return 0
    if len(argv) >= 5 and argv[0] == "launcher":
        out, python, cache, entry, *path = argv[1:]
        from shim.bundle import write_atomically

        write_atomically(out, launcher(python, path, cache, entry).encode(), 0o755)
        return 0
    sys.stderr.write("usage: python -m shim.codecache build CACHE MODULE...\n"
                     "       python -m shim.codecache launcher OUT PYTHON CACHE MODULE:FUNCTION [SYS_PATH...]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
