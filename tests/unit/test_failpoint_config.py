"""When pyshim applies containerd's failpoint annotations: pyshim.toml's ``failpoints`` key, per task through its
runtime options, or always when run as ``containerd-shim-runc-fp-v1`` (shim/runc/main.py, shim/runc/manager.py)."""
from __future__ import annotations

import pytest

from protos import runc_options_pb2, runtimeoptions_pb2
from protos import task_v2_pb2 as pb
from shim.runc import config, main, manager
from shim.runc.config import ConfigError
from shim.runc.service import RuncTaskService


def create_request(options=None) -> pb.CreateTaskRequest:
    request = pb.CreateTaskRequest(id="c1", bundle="/b/c1")
    if options is not None:
        request.options.Pack(options)
    return request


def service(failpoints: bool = False) -> RuncTaskService:
    return RuncTaskService(tasks=None, shutdown=lambda: None, failpoints=failpoints)


def test_the_key_is_off_by_default_and_takes_a_boolean() -> None:
    assert config.build({}, "t").failpoints is False
    assert config.build({"failpoints": True}, "t").failpoints is True
    with pytest.raises(ConfigError, match="key 'failpoints' must be true or false, got str 'yes'"):
        config.build({"failpoints": "yes"}, "t")


def test_a_task_gets_failpoints_from_the_configuration_its_create_loads(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(config.ENV_PATH, str(tmp_path / "absent.toml"))
    on = tmp_path / "fp.toml"
    on.write_text("failpoints = true\n")
    assert not service().failpoints_enabled(create_request())
    assert service().failpoints_enabled(create_request(runtimeoptions_pb2.Options(config_path=str(on))))
    assert service().failpoints_enabled(create_request(runtimeoptions_pb2.Options(config_body=b"failpoints = true")))
    assert not service().failpoints_enabled(create_request(runc_options_pb2.Options(binary_name="runc")))
    monkeypatch.setenv(config.ENV_PATH, str(on))
    assert service().failpoints_enabled(create_request())
    assert service().failpoints_enabled(create_request(runc_options_pb2.Options(binary_name="runc")))


def test_a_configuration_that_does_not_load_gives_no_failpoints(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(config.ENV_PATH, str(tmp_path / "absent.toml"))
    bad = create_request(runtimeoptions_pb2.Options(config_body=b"failpoints = 1"))
    assert not service().failpoints_enabled(bad)
    assert not service().failpoints_enabled(create_request(runtimeoptions_pb2.Options(config_path="relative")))


def test_the_failpoint_daemon_enables_them_for_every_task(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(config.ENV_PATH, str(tmp_path / "absent.toml"))
    assert service(failpoints=True).failpoints_enabled(create_request())


@pytest.mark.parametrize("program, name", [
    ("/usr/local/bin/containerd-shim-runc-fp-v1", "io.containerd.runc-fp.v1"),
    ("/usr/local/bin/containerd-shim-pyshim-v1", "io.containerd.pyshim.v1"),
    ("containerd-shim-runc-fp-v1.bak", "io.containerd.pyshim.v1"),
])
def test_the_program_name_chooses_the_manager(program: str, name: str, monkeypatch, capfd) -> None:
    monkeypatch.setattr("sys.argv", [program, "start"])
    assert main.main() == 1
    assert capfd.readouterr().err == f"{name}: shim namespace cannot be empty\n"


def test_the_failpoint_manager_is_pyshim_under_containerds_test_runtime_name() -> None:
    fp = manager.FP_MANAGER
    assert isinstance(fp, manager.RuncManager) and fp.name == "io.containerd.runc-fp.v1"
    assert fp.forkserver == "shim.runc.manager:FP_MANAGER" != manager.MANAGER.forkserver
    assert manager.FAILPOINT_BINARY == "containerd-shim-runc-fp-v1"
