"""pyshim's configuration (shim/runc/config.py) and how the daemon turns it into a backend (shim/runc/backend_factory.py):
precedence of the sources, the allowed_backends gate for the io.pyshim.backend annotation, and error messages
that name the source, the key and the fix."""
from __future__ import annotations

import json
import os
import stat

import pytest

from runtime.oci_cli import OciCli
from shim.runc import config
from shim.runc.config import ConfigError
from shim.runc.options import RuntimeOptions
from shim.runc.backend_factory import make_backend
from ttrpc.status import Code


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def bundle(tmp_path, annotations=None) -> str:
    b = tmp_path / "bundle"
    b.mkdir(exist_ok=True)
    (b / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "annotations": annotations or {}}))
    return str(b)


def backend_for(tmp_path, *, default_text=None, annotations=None, **opts):
    default = str(tmp_path / "default.toml")
    if default_text is not None:
        write(tmp_path / "default.toml", default_text)
    return make_backend(RuntimeOptions(**opts), bundle(tmp_path, annotations), launcher=None, namespace="ns",
                        default_path=default)


# -- sources and precedence ------------------------------------------------------------------------------------

def test_no_file_means_runc_with_builtin_options(tmp_path):
    b = backend_for(tmp_path)
    assert isinstance(b.inner, OciCli) and b.name == "runc"
    assert b.cfg.root == "/run/containerd/runc/ns" and b.cfg.binary == "runc"


def test_default_file_chooses_backend_and_options(tmp_path):
    b = backend_for(tmp_path, default_text='backend = "crun"\n[backends.crun]\nroot = "/run/x"\ndebug = true\n')
    assert b.name == "crun" and b.cfg.root == "/run/x/ns" and b.cfg.debug


def test_env_names_the_default_file(tmp_path, monkeypatch):
    monkeypatch.setenv(config.ENV_PATH, write(tmp_path / "env.toml", 'backend = "runsc"\n'))
    cfg = config.load()
    assert cfg.backend == "runsc" and cfg.source == str(tmp_path / "env.toml")


def test_config_path_replaces_the_default_file(tmp_path):
    handler = write(tmp_path / "handler.toml", 'backend = "runsc"\n')
    b = backend_for(tmp_path, default_text='backend = "crun"\nallowed_backends = ["runc"]\n', config_path=handler)
    assert b.name == "runsc"
    assert config.load(handler).allowed_backends == ()      # nothing of the default file leaks in


def test_config_body_merges_over_the_default_file(tmp_path):
    body = b'[backends.runc]\ndebug = true\n'
    b = backend_for(tmp_path, default_text='[backends.runc]\nroot = "/run/r"\n', config_body=body)
    assert b.cfg.root == "/run/r/ns" and b.cfg.debug
    cfg = config.load("", body, default_path=str(tmp_path / "default.toml"))
    assert cfg.source == f"{tmp_path}/default.toml + config_body"


def test_config_body_alone(tmp_path):
    cfg = config.load("", b'backend = "crun"\n', default_path=str(tmp_path / "absent.toml"))
    assert cfg.backend == "crun" and cfg.source == "config_body"


def test_runc_options_override_the_backend_table(tmp_path):
    b = backend_for(tmp_path, default_text='[backends.runc]\nroot = "/run/r"\nsystemd_cgroup = false\n',
                    root="/run/from-ctr", systemd_cgroup=True, binary_name="/usr/sbin/runc")
    assert b.cfg.root == "/run/from-ctr/ns" and b.cfg.systemd_cgroup and b.cfg.binary == "/usr/sbin/runc"


def test_type_makes_a_named_variant_of_an_entry_point(tmp_path):
    b = backend_for(tmp_path, default_text='backend = "gvisor"\n[backends.gvisor]\ntype = "runsc"\n'
                                           'global_flags = ["--network=none", "--platform=ptrace"]\n')
    assert b.name == "runsc" and b.cfg.global_flags == ("--network=none", "--platform=ptrace")


def test_file_is_cached_until_it_changes(tmp_path):
    path = write(tmp_path / "c.toml", 'backend = "crun"\n')
    first = config.read_file(path, required=True)
    assert config.read_file(path, required=True) is first
    write(tmp_path / "c.toml", 'backend = "runsc"  # longer\n')
    assert config.read_file(path, required=True)["backend"] == "runsc"


# -- the annotation gate ---------------------------------------------------------------------------------------

def test_annotation_picks_an_allowed_backend(tmp_path):
    b = backend_for(tmp_path, default_text='allowed_backends = ["crun"]\n',
                    annotations={config.BACKEND_ANNOTATION: "crun"})
    assert b.name == "crun"


def test_annotation_naming_the_default_needs_no_permission(tmp_path):
    assert backend_for(tmp_path, annotations={config.BACKEND_ANNOTATION: "runc"}).name == "runc"


def test_annotation_outside_allowed_backends_is_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        backend_for(tmp_path, default_text='backend = "runsc"\nallowed_backends = ["crun"]\n',
                    annotations={config.BACKEND_ANNOTATION: "runc"})
    msg = str(e.value)
    assert e.value.code == Code.INVALID_ARGUMENT
    assert "io.pyshim.backend='runc'" in msg and "allowed_backends" in msg and "default.toml" in msg
    assert "allowed: crun" in msg


# -- bad configuration -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ('backend = "nosuch"\n', ["backend 'nosuch'", "no runtime backend named 'nosuch'", "available:"]),
    ('bakend = "runc"\n', ["key 'bakend' is unknown", "known keys: backend, allowed_backends, backends"]),
    ('backend = 3\n', ["key 'backend' must be a backend name", "got int 3"]),
    ('allowed_backends = "crun"\n', ["key 'allowed_backends' must be a list"]),
    ('[backends]\nrunc = 1\n', ["key 'backends.runc' must be a table"]),
    ('[backends.runc]\nsytemd_cgroup = true\n', ["table [backends.runc]", "unknown option 'sytemd_cgroup'"]),
    ('[backends.runc]\nsystemd_cgroup = "yes"\n', ["table [backends.runc]", "'systemd_cgroup' must be a boolean"]),
    ('[backends.runc]\nbinary_name = "/nonexistent/runc"\n', ["/nonexistent/runc is not an executable file",
                                                               "binary_name"]),
    ('[backends.runc]\nbinary_name = "no-such-runc"\n', ["'no-such-runc' not found in $PATH", "binary_name"]),
    ('backend = "runc\n', ["invalid TOML"]),
])
def test_bad_default_file_names_file_key_and_fix(tmp_path, text, words):
    with pytest.raises(ConfigError) as e:
        backend_for(tmp_path, default_text=text)
    msg = str(e.value)
    assert f"pyshim config {tmp_path}/default.toml" in msg
    for w in words:
        assert w in msg
    assert e.value.code == Code.INVALID_ARGUMENT


def test_missing_config_path_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file .*runtime-config-path"):
        backend_for(tmp_path, config_path=str(tmp_path / "absent.toml"))


def test_relative_config_path_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="must be an absolute path"):
        backend_for(tmp_path, config_path="pyshim.toml")


def test_unreadable_config_path(tmp_path):
    path = write(tmp_path / "dir.toml", "")
    os.unlink(path)
    os.mkdir(path)
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(path)


def test_bad_config_body_names_the_handler_options(tmp_path):
    with pytest.raises(ConfigError, match=r"config_body \(the runtime handler's options table\): invalid TOML"):
        backend_for(tmp_path, config_body=b"backend = [")


def test_non_executable_binary(tmp_path):
    exe = tmp_path / "runc"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(stat.S_IRUSR)
    with pytest.raises(ConfigError, match="is not an executable file"):
        backend_for(tmp_path, default_text=f'[backends.runc]\nbinary_name = "{exe}"\n')


def test_unreadable_spec_is_a_clear_error(tmp_path):
    b = tmp_path / "bundle"
    b.mkdir()
    (b / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the annotations"):
        make_backend(RuntimeOptions(), str(b), None, "ns", default_path=str(tmp_path / "x.toml"))


def test_merge_is_recursive_for_tables_only():
    assert config.merge({"a": {"x": 1, "y": 2}, "l": [1]}, {"a": {"y": 3}, "l": [2]}) == \
        {"a": {"x": 1, "y": 3}, "l": [2]}


def test_cleanup_info_names_the_state_delete_may_check(tmp_path):
    """`delete` skips the runtime when the state path is gone; runsc has no per-id directory, so it has none."""
    from shim.runc.backend_factory import cleanup_info

    runc = cleanup_info(backend_for(tmp_path), "/b/ctr1")
    assert runc["state_path"] == "/run/containerd/runc/ns/ctr1" and runc["binary"] == "runc"
    runsc = cleanup_info(backend_for(tmp_path, default_text='backend = "runsc"\n'), "/b/ctr1")
    assert runsc["state_path"] is None and runsc["global_args"][-1] == "--network=none"


def test_documented_example_is_valid(tmp_path):
    """docs/examples/pyshim.toml parses, and every backend it defines builds."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "pyshim.toml"
    cfg = config.load(str(example))
    assert cfg.backend == "runc" and cfg.allowed_backends == ("runsc",)
    b = bundle(tmp_path)
    for name in cfg.backends:
        backend = make_backend(RuntimeOptions(), b, None, "ns", default_path=str(example)) if name == "runc" else \
            make_backend(RuntimeOptions(config_body=f'backend = "{name}"\n'.encode()), b, None, "ns",
                         default_path=str(example))
        assert backend.name == cfg.backends[name].entry_point
