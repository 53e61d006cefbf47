"""Runtime options from containerd (CreateTaskRequest.options) as one frozen dataclass.

Rules (containerd's ``runtime/v2/runc/options`` and ``pkg/runtimeoptions`` at v1.6.20): accept no options, `containerd.runc.v1.Options` (ctr --runc-* flags, CRI
runc-style options, and 2.x task options), `runtimeoptions.v1.Options` (config_path / config_body),
and tolerate the legacy `containerd.linux.runc.CreateOptions` that 1.6/1.7 clients send for non-runc
runtimes. Any other type URL is an InvalidArgument. Type URLs may carry a `type.googleapis.com/`-style
prefix; only the last path component counts.
"""
from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from shim.errors import InvalidArgument
from shim.runc.typeurls import LEGACY_CREATE_OPTIONS, RUNC_OPTIONS, RUNTIME_OPTIONS, type_name



@dataclass(frozen=True)
class RuntimeOptions:
    type_url: str = ""
    binary_name: str = ""
    root: str = ""
    systemd_cgroup: bool = False
    criu_path: str = ""
    criu_image_path: str = ""  # 1.x: containerd's restore source for runc runtimes; the shim gets it as checkpoint
    criu_work_path: str = ""   # restore's CRIU work dir (default <bundle>/work)
    no_pivot_root: bool = False
    no_new_keyring: bool = False
    io_uid: int = 0
    io_gid: int = 0
    shim_cgroup: str = ""
    config_path: str = ""
    config_body: bytes = b""


def parse(type_url: str, value: bytes) -> RuntimeOptions:
    name = type_name(type_url)
    try:
        if not name:
            return RuntimeOptions()
        if name == RUNC_OPTIONS:
            from protos.runc_options_pb2 import Options

            o = Options.FromString(value)
            return RuntimeOptions(
                type_url=name, binary_name=o.binary_name, root=o.root, systemd_cgroup=o.systemd_cgroup,
                criu_path=o.criu_path, criu_image_path=o.criu_image_path, criu_work_path=o.criu_work_path,
                no_pivot_root=o.no_pivot_root, no_new_keyring=o.no_new_keyring,
                io_uid=o.io_uid, io_gid=o.io_gid, shim_cgroup=o.shim_cgroup,
            )
        if name == RUNTIME_OPTIONS:
            from protos.runtimeoptions_pb2 import Options

            o = Options.FromString(value)
            return RuntimeOptions(type_url=name, config_path=o.config_path, config_body=o.config_body)
        if name == LEGACY_CREATE_OPTIONS:
            from protos.runctypes_pb2 import CreateOptions

            o = CreateOptions.FromString(value)
            return RuntimeOptions(
                type_url=name, no_pivot_root=o.no_pivot_root, no_new_keyring=o.no_new_keyring,
                shim_cgroup=o.shim_cgroup, io_uid=o.io_uid, io_gid=o.io_gid,
            )
    except DecodeError as e:
        raise InvalidArgument(f"cannot decode runtime options {name}: {e}") from None
    raise InvalidArgument(
        f"unsupported runtime options type {type_url!r}: pyshim accepts {RUNC_OPTIONS}, "
        f"{RUNTIME_OPTIONS} or none"
    )
