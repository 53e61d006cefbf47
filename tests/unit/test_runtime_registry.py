"""Backend discovery through entry points: real installed metadata (a *.dist-info written to a tmp dir on
sys.path) and injected entry-point lists; every failure names the distribution and the entry point."""

from __future__ import annotations

import itertools
import sys
import textwrap
from importlib import metadata

import pytest

from runtime import registry
from runtime.base import Capability
from runtime.oci_cli import OciCli
from runtime.registry import GROUP, BackendLoadError, make_backend

_counter = itertools.count()

PLUGIN = '''
from runtime.base import Capability

CALLS = []

class Good:
    name = "good"
    capabilities = frozenset({Capability.PS})
    def __init__(self, config, launcher, namespace):
        CALLS.append((dict(config), launcher, namespace))
'''
METHODS = ("create", "start", "exec", "kill", "delete", "state", "ps", "pause", "resume", "update", "checkpoint",
           "restore")
PLUGIN += "".join(f"    async def {m}(self, *a, **k):\n        raise NotImplementedError\n" for m in METHODS)
PLUGIN += '''
def good(config, launcher, namespace):
    return Good(config, launcher, namespace)

class SyncKill(Good):
    def kill(self, *a, **k):
        return None

class NoPause(Good):
    pause = None

def sync_kill(config, launcher, namespace):
    return SyncKill(config, launcher, namespace)

def no_pause_bad_caps(config, launcher, namespace):
    b = NoPause(config, launcher, namespace)
    b.capabilities = {"ps"}
    return b

def two_args(config, launcher):
    return Good(config, launcher, "")

def raises(config, launcher, namespace):
    raise RuntimeError("no licence for namespace " + namespace)

not_callable = 42
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution 'fakeplug' whose module and entry points live in tmp_path; returns (mod, add)."""
    mod = f"fakeplug_mod_{next(_counter)}"
    (tmp_path / f"{mod}.py").write_text(PLUGIN)
    (tmp_path / f"{mod}_broken.py").write_text("raise ImportError('libfoo.so.1: cannot open shared object')\n")
    info = tmp_path / "fakeplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    lines = [f"[{GROUP}]"]

    def add(name, target):
        lines.append(f"{name} = {target.format(mod=mod)}")
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")

    monkeypatch.syspath_prepend(str(tmp_path))
    yield mod, add
    for name in (mod, f"{mod}_broken"):
        sys.modules.pop(name, None)


def test_installed_plugin_is_found_and_built(plugin):
    mod, add = plugin
    add("fake-good", "{mod}:good")
    launcher = object()
    backend = make_backend("fake-good", {"k": "v"}, launcher, "ns1")
    assert backend.name == "good" and backend.capabilities == {Capability.PS}
    assert sys.modules[mod].CALLS == [({"k": "v"}, launcher, "ns1")]
    assert "fake-good" in registry.available()


def test_only_the_requested_entry_point_is_loaded(plugin):
    mod, add = plugin
    add("fake-broken", "{mod}_broken:factory")
    add("fake-good", "{mod}:good")
    make_backend("fake-good", {}, object(), "ns")
    assert f"{mod}_broken" not in sys.modules


@pytest.mark.parametrize(("target", "expected"), [
    ("{mod}_broken:factory", "cannot import entry point fake-x = {mod}_broken:factory (group pyshim.runtimes) "
                             "from distribution 'fakeplug': ImportError: libfoo.so.1: cannot open shared object"),
    ("{mod}:missing_attr", "cannot import entry point fake-x = {mod}:missing_attr"),
    ("{mod}:not_callable", "{mod}:not_callable (group pyshim.runtimes) from distribution 'fakeplug' is not callable"),
    ("{mod}:two_args", "from distribution 'fakeplug' must accept (config, launcher, namespace)"),
    ("{mod}:raises", "from distribution 'fakeplug' failed to build backend 'fake-x': no licence for namespace ns"),
    ("{mod}:sync_kill", "from distribution 'fakeplug' returned SyncKill, which violates the RuntimeBackend "
                        "interface: method 'kill' must be a coroutine function (async def)"),
    ("{mod}:no_pause_bad_caps", "violates the RuntimeBackend interface: attribute 'capabilities' must be a "
                                "frozenset of runtime.base.Capability; method 'pause' is missing"),
])
def test_load_errors_name_the_distribution(plugin, target, expected):
    mod, add = plugin
    add("fake-x", target)
    with pytest.raises(BackendLoadError) as info:
        make_backend("fake-x", {}, object(), "ns")
    assert expected.format(mod=mod) in str(info.value)


def test_unknown_name_lists_what_is_available():
    eps = [metadata.EntryPoint("runc", "runtime.builtin:runc", GROUP),
           metadata.EntryPoint("other", "x:y", "another.group")]
    with pytest.raises(BackendLoadError, match=r"no runtime backend named 'kata' in entry-point group "
                                               r"pyshim.runtimes \(available: runc\)"):
        make_backend("kata", {}, object(), "ns", entry_points=eps)


def test_two_distributions_claiming_a_name(plugin):
    mod, add = plugin
    add("runc", "{mod}:good")
    eps = [ep for ep in metadata.entry_points(group=GROUP) if ep.name == "runc" and ep.dist.name == "fakeplug"]
    eps.append(metadata.EntryPoint("runc", "runtime.builtin:runc", GROUP))
    with pytest.raises(BackendLoadError, match="registered more than once") as info:
        make_backend("runc", {}, object(), "ns", entry_points=eps)
    assert "'fakeplug'" in str(info.value) and "runtime.builtin:runc" in str(info.value)


@pytest.mark.parametrize(("name", "root", "missing"), [
    ("runc", "/run/containerd/runc/k8s.io", set()),
    ("crun", "/run/containerd/crun/k8s.io", {Capability.CHECKPOINT, Capability.RESTORE}),
    ("runsc", "/run/containerd/runsc/k8s.io", {Capability.UPDATE, Capability.CHECKPOINT, Capability.RESTORE,
                                               Capability.NO_PIVOT, Capability.NO_NEW_KEYRING}),
])
def test_builtins_load_through_entry_points(name, root, missing):
    eps = [metadata.EntryPoint(n, f"runtime.builtin:{n}", GROUP) for n in ("runc", "crun", "runsc")]
    launcher = object()
    backend = make_backend(name, {}, launcher, "k8s.io", entry_points=eps)
    assert isinstance(backend, OciCli)
    assert backend.name == name and backend.cfg.root == root
    assert backend.capabilities == frozenset(Capability) - missing
    assert registry.check_backend(backend) == []


def test_builtin_invalid_options_surface_as_load_error():
    eps = [metadata.EntryPoint("runc", "runtime.builtin:runc", GROUP)]
    with pytest.raises(BackendLoadError, match="unknown distribution.*failed to build backend 'runc': "
                                               "runtime 'runc': unknown option 'nope'"):
        make_backend("runc", {"nope": 1}, object(), "ns", entry_points=eps)


def test_readme_entry_point_lines_match_the_factories():
    """The lines the lead copies into pyproject.toml (runtime/README.md) point at real factories."""
    readme = open(registry.__file__.replace("registry.py", "README.md")).read()
    block = textwrap.dedent(readme.split('[project.entry-points."pyshim.runtimes"]', 1)[1].split("```", 1)[0])
    entries = dict(line.replace('"', "").split(" = ") for line in block.strip().splitlines())
    assert entries == {"runc": "runtime.builtin:runc", "crun": "runtime.builtin:crun",
                       "runsc": "runtime.builtin:runsc"}
    for name, value in entries.items():
        assert callable(metadata.EntryPoint(name, value, GROUP).load())
