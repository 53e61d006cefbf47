"""configure(): options are validated, never silently ignored; the namespace is appended to the state root once."""

from __future__ import annotations

import pytest

from runtime import builtin
from runtime.base import Capability
from runtime.errors import InvalidOptions
from runtime.oci_config import configure


def test_defaults_and_namespace():
    cfg = configure(builtin.RUNC, {}, "default")
    assert (cfg.binary, cfg.root, cfg.log_path("/b")) == ("runc", "/run/containerd/runc/default", "/b/log.json")


def test_options_override_fields():
    cfg = configure(builtin.RUNSC, {"binary_name": "/usr/local/bin/runsc", "root": "/var/run/x",
                                    "global_flags": ["--network=sandbox", "--platform=kvm"],
                                    "capabilities": ["exec", "pause"],
                                    "finished_patterns": ["gone"]}, "ns")
    assert cfg.binary == "/usr/local/bin/runsc"
    assert cfg.root == "/var/run/x/ns"
    assert cfg.global_flags == ("--network=sandbox", "--platform=kvm")
    assert cfg.capabilities == {Capability.EXEC, Capability.PAUSE}
    assert cfg.finished_patterns == ("gone",)


def test_empty_binary_and_root_keep_defaults():
    # containerd's runc Options leave unset strings empty
    cfg = configure(builtin.CRUN, {"binary_name": "", "root": ""}, "ns")
    assert (cfg.binary, cfg.root) == ("crun", "/run/containerd/crun/ns")


@pytest.mark.parametrize(("options", "namespace", "message"), [
    ({"binray_name": "x"}, "ns", "unknown option 'binray_name'"),
    ({"systemd_cgroup": "yes"}, "ns", "'systemd_cgroup' must be a boolean"),
    ({"binary_name": 3}, "ns", "'binary_name' must be a string"),
    ({"global_flags": "--network=none"}, "ns", "'global_flags' must be a list of strings"),
    ({"global_flags": ["--a", 1]}, "ns", "'global_flags' must be a string"),
    ({"extra_env": ["A=1"]}, "ns", "'extra_env' must be a table of strings"),
    ({"capabilities": ["teleport"]}, "ns", "unknown capability 'teleport'"),
    ({"root": "relative/root"}, "ns", "must be an absolute path"),
    ({}, "", "invalid namespace ''"),
    ({}, "../etc", "invalid namespace"),
])
def test_invalid_options(options, namespace, message):
    with pytest.raises(InvalidOptions, match=message.replace("(", r"\(")) as info:
        configure(builtin.RUNC, options, namespace)
    assert str(info.value).startswith("runtime 'runc': ")
