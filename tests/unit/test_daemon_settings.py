"""shim/runc/daemon_settings.py: which configuration ``start`` reads the daemon keys from, and its cache (a file per
configuration, named by the file's stamp and the body): hits do not parse TOML, a changed file is a miss, a bad
configuration gives the defaults, a broken cache costs only time."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from protos import runtimeoptions_pb2
from shim.runc import config, daemon_settings
from shim.runc.daemon_settings import Settings
from tests.unit.test_start_delete import runc_options_any
from ttrpc import wire

NAMESPACE_5 = 'sharing = "namespace"\nmax_tasks_per_daemon = 5\nidle_timeout = 2.5\n'


def runtime_options(config_path: str = "", config_body: bytes = b"",
                    type_url: str = "runtimeoptions.v1.Options") -> bytes:
    """The runtimeoptions.v1.Options Any containerd sends (CRI's ConfigPath / options table)."""
    value = runtimeoptions_pb2.Options(type_url="io.containerd.pyshim.v1", config_path=config_path,
                                       config_body=config_body).SerializeToString()
    return wire.any_message(type_url, value)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A private cache dir and default file ($PYSHIM_CONFIG, absent until written); no memo from other tests."""
    monkeypatch.setattr(daemon_settings, "CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYSHIM_CONFIG", str(tmp_path / "pyshim.toml"))
    monkeypatch.setattr(daemon_settings, "_last", None)
    monkeypatch.setattr(config, "_cache", {})
    return SimpleNamespace(cache=tmp_path / "cache", default=tmp_path / "pyshim.toml", tmp=tmp_path)


def next_start() -> None:
    """What a new ``start`` process begins with: neither daemon_settings' memo nor config's parsed files."""
    daemon_settings._last = None
    config._cache.clear()


def entries(env: SimpleNamespace) -> dict[str, str]:
    return {p.name: p.read_text() for p in env.cache.iterdir()}


# -- which configuration ---------------------------------------------------------------------------------------

def test_without_a_file_the_defaults_and_they_are_cached(env: SimpleNamespace) -> None:
    assert daemon_settings.settings(()) == Settings("pod", 64, 60.0, True)
    assert os.stat(env.cache).st_mode & 0o777 == 0o700
    assert list(entries(env).values()) == ["v1 pod 64 60.0 1\n"]  # no temporary file left behind


def test_the_default_file(env: SimpleNamespace) -> None:
    env.default.write_text(NAMESPACE_5)
    assert daemon_settings.settings(()) == Settings("namespace", 5, 2.5, False)  # fork_server off for namespace


@pytest.mark.parametrize("type_url", ["runtimeoptions.v1.Options", "type.googleapis.com/runtimeoptions.v1.Options"])
def test_config_path_of_the_runtime_options_replaces_the_default_file(env: SimpleNamespace, type_url: str) -> None:
    env.default.write_text(NAMESPACE_5)
    handler = env.tmp / "handler.toml"
    handler.write_text('sharing = "namespace"\nmax_tasks_per_daemon = 3\nidle_timeout = 0\nfork_server = true\n')
    assert daemon_settings.settings((runtime_options(str(handler), type_url=type_url),)) == \
        Settings("namespace", 3, 0.0, True)
    pod = env.tmp / "pod.toml"
    pod.write_text("max_tasks_per_daemon = 7\n")
    assert daemon_settings.settings((runtime_options(str(pod), type_url=type_url),)) == Settings("pod", 7, 60.0, True)


def test_other_options_and_undecodable_bytes_are_passed_over(env: SimpleNamespace) -> None:
    handler = env.tmp / "handler.toml"
    handler.write_text(NAMESPACE_5)
    options = (runc_options_any(binary_name="crun"), b"\x0a\xff", runtime_options(str(handler)))
    assert daemon_settings.settings(options) == Settings("namespace", 5, 2.5, False)


def test_config_body_is_merged_over_the_default_file(env: SimpleNamespace) -> None:
    body = b"max_tasks_per_daemon = 9\nidle_timeout = 1.5\n"
    assert daemon_settings.settings((runtime_options(config_body=body),)) == Settings("pod", 9, 1.5, True)
    env.default.write_text(NAMESPACE_5)
    next_start()
    assert daemon_settings.settings((runtime_options(config_body=body),)) == Settings("namespace", 9, 1.5, False)
    next_start()
    other = b"max_tasks_per_daemon = 2\n"  # another body over the same file: another entry
    assert daemon_settings.settings((runtime_options(config_body=other),)) == Settings("namespace", 2, 2.5, False)
    assert len(entries(env)) == 3


@pytest.mark.parametrize("text", [
    'sharing = "everything"\n',
    'sharing = "namespace"\nmax_tasks_per_daemon = 0\n',
    'sharing = "namespace"\nmax_tasks_per_daemon = true\n',
    'sharing = "namespace"\nidle_timeout = -1\n',
    'sharing = "namespace"\nfork_server = "yes"\n',
    'sharing = "namespace"\nbogus = 1\n',
    'sharing = "namespace\n',
])
def test_a_configuration_that_does_not_load_gives_the_defaults(env: SimpleNamespace, text: str) -> None:
    env.default.write_text(text)
    assert daemon_settings.settings(()) == Settings()


@pytest.mark.parametrize("options", [
    lambda env: (runtime_options(str(env.tmp / "absent.toml")),),
    lambda env: (runtime_options("relative.toml"),),
    lambda env: (runtime_options(config_body=b"sharing = ["),),
])
def test_runtime_options_that_do_not_load_give_the_defaults(env: SimpleNamespace, options) -> None:
    env.default.write_text(NAMESPACE_5)  # not used instead: Create would fail over these options
    assert daemon_settings.settings(options(env)) == Settings()


# -- the cache -------------------------------------------------------------------------------------------------

@pytest.fixture
def no_toml(monkeypatch: pytest.MonkeyPatch):
    """From now on, loading the configuration fails the test."""
    def load(*args, **kwargs):
        raise AssertionError("the TOML was parsed")
    return lambda: monkeypatch.setattr(config, "load", load)


def test_a_second_start_hits_the_cache_without_parsing(env: SimpleNamespace, no_toml) -> None:
    env.default.write_text(NAMESPACE_5)
    options = (runtime_options(config_body=b"idle_timeout = 9\n"),)
    first = daemon_settings.settings(options)
    assert first == Settings("namespace", 5, 9.0, False)
    no_toml()
    next_start()
    assert daemon_settings.settings(options) == first
    with pytest.raises(AssertionError, match="parsed"):  # another configuration is a miss: it would parse
        daemon_settings.settings((runtime_options(config_body=b"idle_timeout = 8\n"),))


def test_the_same_options_again_in_one_process_need_no_file_at_all(env: SimpleNamespace, no_toml) -> None:
    env.default.write_text(NAMESPACE_5)
    first = daemon_settings.settings(())
    no_toml()
    for entry in env.cache.iterdir():
        entry.unlink()
    env.default.unlink()
    assert daemon_settings.settings(()) == first


def rewrite_bigger(path: Path) -> None:
    path.write_text(path.read_text().replace("= 5", "= 50"))


def rewrite_in_place_with_a_new_mtime(path: Path) -> None:
    st = os.stat(path)
    text = path.read_text().replace("= 5", "= 7")
    with open(path, "r+") as f:  # same inode, same size
        f.write(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def replace_with_same_size_and_mtime(path: Path) -> None:
    st = os.stat(path)
    new = path.with_suffix(".new")
    new.write_text(path.read_text().replace("= 5", "= 7"))
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, path)  # only the inode differs


@pytest.mark.parametrize("rewrite, max_tasks", [
    (rewrite_bigger, 50), (rewrite_in_place_with_a_new_mtime, 7), (replace_with_same_size_and_mtime, 7),
])
def test_a_rewritten_file_is_a_miss(env: SimpleNamespace, rewrite, max_tasks: int) -> None:
    env.default.write_text(NAMESPACE_5)
    assert daemon_settings.settings(()).max_tasks == 5
    rewrite(env.default)
    next_start()
    assert daemon_settings.settings(()) == Settings("namespace", max_tasks, 2.5, False)
    assert len(entries(env)) == 2


def test_another_default_file_is_a_miss(env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    env.default.write_text(NAMESPACE_5)
    assert daemon_settings.settings(()).sharing == "namespace"
    other = env.tmp / "other.toml"
    other.write_text("max_tasks_per_daemon = 4\n")
    monkeypatch.setenv("PYSHIM_CONFIG", str(other))
    next_start()
    assert daemon_settings.settings(()) == Settings("pod", 4, 60.0, True)


def test_the_entry_format_is_what_a_hit_reads(env: SimpleNamespace) -> None:
    env.default.write_text(NAMESPACE_5)
    daemon_settings.settings(())
    [(name, text)] = entries(env).items()
    assert text == "v1 namespace 5 2.5 0\n"
    (env.cache / name).write_text("v1 namespace 3 7.25 1\n")  # the hit path believes the entry
    next_start()
    assert daemon_settings.settings(()) == Settings("namespace", 3, 7.25, True)


def test_infinite_idle_time_survives_the_cache(env: SimpleNamespace) -> None:
    env.default.write_text('sharing = "namespace"\nidle_timeout = inf\n')
    assert daemon_settings.settings(()).idle_timeout == float("inf")
    next_start()
    assert daemon_settings.settings(()) == Settings("namespace", 64, float("inf"), False)


@pytest.mark.parametrize("garbage", ["", "v0 namespace 3 1.0 1\n", "v1 namespace 3 1.0\n", "v1 namespace x 1.0 1\n",
                                     "v1 namespace 3 soon 1\n", "\xff\xfe"])
def test_an_unreadable_entry_is_a_miss_and_is_rewritten(env: SimpleNamespace, garbage: str) -> None:
    env.default.write_text(NAMESPACE_5)
    daemon_settings.settings(())
    [name] = entries(env)
    (env.cache / name).write_bytes(garbage.encode("latin-1"))
    next_start()
    assert daemon_settings.settings(()) == Settings("namespace", 5, 2.5, False)
    assert entries(env) == {name: "v1 namespace 5 2.5 0\n"}


def test_a_cache_dir_that_cannot_be_made_costs_only_time(env: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    (env.tmp / "file").write_text("")
    monkeypatch.setattr(daemon_settings, "CACHE_DIR", str(env.tmp / "file" / "cache"))
    env.default.write_text(NAMESPACE_5)
    for _ in range(2):
        next_start()
        assert daemon_settings.settings(()) == Settings("namespace", 5, 2.5, False)
    assert (env.tmp / "file").read_text() == ""
