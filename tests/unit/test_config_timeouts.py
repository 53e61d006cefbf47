"""``[call_timeouts]`` of pyshim's configuration (shim/runc/config.py): one deadline per backend call, defaults
for the rest, every error naming the key; the backend a container gets carries them (shim/runc/deadlines.py)."""
from __future__ import annotations

import math

import pytest

from runtime.base import REQUIRED_METHODS
from shim.runc import config
from shim.runc.config import CALL_TIMEOUTS, ConfigError
from shim.runc.deadlines import Deadlined

from .test_config import backend_for


def timeouts(text: str, tmp_path) -> dict[str, float]:
    path = tmp_path / "pyshim.toml"
    path.write_text(text)
    return dict(config.load(str(path)).call_timeouts)


def test_every_backend_call_has_a_default():
    assert tuple(CALL_TIMEOUTS) == REQUIRED_METHODS
    assert all(0 < s < math.inf for s in CALL_TIMEOUTS.values())
    assert config.DEFAULTS.call_timeouts == CALL_TIMEOUTS


@pytest.mark.parametrize(("text", "changed"), [
    ("", {}),
    ("[call_timeouts]\nexec = 5\n", {"exec": 5.0}),
    ("[call_timeouts]\ncreate = 0.5\ndelete = 300\n", {"create": 0.5, "delete": 300.0}),
    ("[call_timeouts]\nkill = inf\n", {"kill": math.inf}),
    ("call_timeouts = {}\n", {}),
])
def test_values_override_the_defaults(tmp_path, text, changed):
    assert timeouts(text, tmp_path) == {**CALL_TIMEOUTS, **changed}


@pytest.mark.parametrize(("text", "message"), [
    ("call_timeouts = 5\n", r"key 'call_timeouts' must be a table of seconds per backend call, got int 5"),
    ("[call_timeouts]\nrun = 5\n", r"key 'call_timeouts.run' is unknown \(calls: create, start, exec, kill"),
    ("[call_timeouts]\nexec = 0\n", r"key 'call_timeouts.exec' must be a number of seconds above 0 \(inf: no "
                                    r"deadline\), got 0"),
    ("[call_timeouts]\nexec = -1.5\n", r"'call_timeouts.exec' must be a number .* got -1.5"),
    ("[call_timeouts]\nexec = nan\n", r"'call_timeouts.exec' must be a number .* got nan"),
    ("[call_timeouts]\nexec = true\n", r"'call_timeouts.exec' must be a number .* got True"),
    ("[call_timeouts]\nexec = \"5s\"\n", r"'call_timeouts.exec' must be a number .* got '5s'"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        timeouts(text, tmp_path)


def test_the_backend_of_a_container_carries_its_deadlines(tmp_path):
    b = backend_for(tmp_path, default_text="[call_timeouts]\nstart = 9\n")
    assert isinstance(b, Deadlined) and b.name == "runc"
    assert b._timeouts == {**CALL_TIMEOUTS, "start": 9.0} and b._source == str(tmp_path / "default.toml")
