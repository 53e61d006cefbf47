"""shim/runc/config.py's daemon keys (sharing, max_tasks_per_daemon, idle_timeout, fork_server): their defaults, and
errors that name the source and the key."""
from __future__ import annotations

import pytest

from shim.runc import config
from shim.runc.config import ConfigError, Daemons
from ttrpc.status import Code


def daemons(text: str, tmp_path) -> Daemons:
    path = tmp_path / "pyshim.toml"
    path.write_text(text)
    return config.load(default_path=str(path)).daemons


@pytest.mark.parametrize("text, expected", [
    ("", Daemons("pod", 64, 60.0, True)),
    ('sharing = "pod"\n', Daemons("pod", 64, 60.0, True)),
    ('sharing = "namespace"\n', Daemons("namespace", 64, 60.0, False)),
    ('sharing = "namespace"\nfork_server = true\n', Daemons("namespace", 64, 60.0, True)),
    ('sharing = "pod"\nfork_server = false\n', Daemons("pod", 64, 60.0, False)),
    ('sharing = "namespace"\nmax_tasks_per_daemon = 1\nidle_timeout = 0\n', Daemons("namespace", 1, 0.0, False)),
    ("max_tasks_per_daemon = 1000\nidle_timeout = 0.25\n", Daemons("pod", 1000, 0.25, True)),
])
def test_values_and_defaults(tmp_path, text: str, expected: Daemons) -> None:
    got = daemons(text, tmp_path)
    assert got == expected
    assert type(got.idle_timeout) is float


def test_builtin_defaults_and_no_file() -> None:
    assert config.DEFAULTS.daemons == Daemons("pod", 64, 60.0, True)
    assert config.build({}, "x").daemons == Daemons()


@pytest.mark.parametrize("text, key, words", [
    ('sharing = "everything"\n', "sharing", "must be one of 'pod', 'namespace', got 'everything'"),
    ('sharing = "Namespace"\n', "sharing", "got 'Namespace'"),
    ("sharing = 1\n", "sharing", "must be one of pod, namespace, got int 1"),
    ("max_tasks_per_daemon = 0\n", "max_tasks_per_daemon", "must be at least 1, got 0"),
    ("max_tasks_per_daemon = -4\n", "max_tasks_per_daemon", "must be at least 1, got -4"),
    ("max_tasks_per_daemon = true\n", "max_tasks_per_daemon", "must be a whole number of tasks, got bool True"),
    ("max_tasks_per_daemon = 2.0\n", "max_tasks_per_daemon", "must be a whole number of tasks, got float 2.0"),
    ('max_tasks_per_daemon = "8"\n', "max_tasks_per_daemon", "got str '8'"),
    ("idle_timeout = -1\n", "idle_timeout", "must be a number of seconds (0 or more), got -1"),
    ("idle_timeout = -0.5\n", "idle_timeout", "got -0.5"),
    ("idle_timeout = true\n", "idle_timeout", "must be a number of seconds (0 or more), got True"),
    ('idle_timeout = "60"\n', "idle_timeout", "got '60'"),
    ("idle_timeout = nan\n", "idle_timeout", "must be a number of seconds (0 or more), got nan"),
    ('fork_server = "yes"\n', "fork_server", "must be true or false, got str 'yes'"),
    ("fork_server = 1\n", "fork_server", "must be true or false, got int 1"),
])
def test_a_bad_value_names_the_file_and_the_key(tmp_path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        daemons(text, tmp_path)
    assert f"pyshim config {tmp_path}/pyshim.toml: key {key!r} " in str(err.value)
    assert words in str(err.value)
    assert err.value.code == Code.INVALID_ARGUMENT


def test_a_bad_value_in_config_body_names_the_body(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^pyshim config config_body: key 'max_tasks_per_daemon' must be at least 1"):
        config.load("", b"max_tasks_per_daemon = 0\n", default_path=str(tmp_path / "absent.toml"))
    (tmp_path / "pyshim.toml").write_text('sharing = "namespace"\n')
    with pytest.raises(ConfigError, match=rf"^pyshim config {tmp_path}/pyshim.toml \+ config_body: key 'sharing' "):
        config.load("", b'sharing = "shard"\n', default_path=str(tmp_path / "pyshim.toml"))


def test_config_body_sets_the_daemon_keys_over_the_file(tmp_path) -> None:
    (tmp_path / "pyshim.toml").write_text('sharing = "namespace"\nmax_tasks_per_daemon = 5\n')
    cfg = config.load("", b"idle_timeout = 3\nfork_server = true\n", default_path=str(tmp_path / "pyshim.toml"))
    assert cfg.daemons == Daemons("namespace", 5, 3.0, True)


def test_the_daemon_keys_are_known_keys(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        daemons("max_tasks = 3\n", tmp_path)
    assert "key 'max_tasks' is unknown" in str(err.value)
    assert "sharing, max_tasks_per_daemon, idle_timeout, fork_server" in str(err.value)
