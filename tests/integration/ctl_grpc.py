"""containerd's Tasks gRPC API for what ``ctr`` cannot do: Update, Checkpoint with explicit options, a task
Create from a checkpoint into an existing container, and a task Create without its Start.

Why: no ctr (1.6.20, 1.7.24, 2.1.9) has ``task update``; ctr 1.6/1.7 send checkpoint options only to runtimes
named io.containerd.runc.*; ``ctr run`` declares no ``--checkpoint`` flag; and ``ctr run`` and ``ctr task start``
create and start in one go. These are the calls the
containerd client library (and CRI) make, so the shim sees exactly what a Go program would send.

Rules:
- The request messages are built at import time from descriptors written here (containerd.services.tasks.v1
  field numbers, read from C16 ``api/services/tasks/v1/tasks.proto``), in a private descriptor pool; nothing
  generated is committed.  Only the fields these tests use are declared (unknown fields survive decoding).
- grpcio is a test dependency; without it, ``require()`` makes the test unavailable (skip, or fail under CI).
- Each call has a time-out and carries the namespace as the ``containerd-namespace`` metadata.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

from tests.prereq import unavailable

from .harness.daemon import PrivateContainerd

PACKAGE = "containerd.services.tasks.v1"
SERVICE = f"/{PACKAGE}.Tasks"
RESOURCES_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
CHECKPOINT_OPTIONS_URL = "containerd.runc.v1.CheckpointOptions"
RUNC_OPTIONS_URL = "containerd.runc.v1.Options"
CRIU_CHECKPOINT_MEDIA_TYPE = "application/vnd.containerd.container.criu.checkpoint.criu.tar"

_T = descriptor_pb2.FieldDescriptorProto
_FIELDS = {  # message -> [(name, number, type, label, type_name)]
    "Descriptor": [("media_type", 1, _T.TYPE_STRING), ("digest", 2, _T.TYPE_STRING), ("size", 3, _T.TYPE_INT64)],
    "Mount": [("type", 1, _T.TYPE_STRING), ("source", 2, _T.TYPE_STRING), ("target", 3, _T.TYPE_STRING),
              ("options", 4, _T.TYPE_STRING, _T.LABEL_REPEATED)],  # containerd.types.Mount
    "CreateTaskRequest": [("container_id", 1, _T.TYPE_STRING), ("rootfs", 3, ".%s.Mount" % PACKAGE, _T.LABEL_REPEATED),
                          ("stdin", 4, _T.TYPE_STRING),
                          ("stdout", 5, _T.TYPE_STRING), ("stderr", 6, _T.TYPE_STRING),
                          ("terminal", 7, _T.TYPE_BOOL), ("checkpoint", 8, ".%s.Descriptor" % PACKAGE),
                          ("options", 9, ".google.protobuf.Any")],
    "CreateTaskResponse": [("container_id", 1, _T.TYPE_STRING), ("pid", 2, _T.TYPE_UINT32)],
    "StartRequest": [("container_id", 1, _T.TYPE_STRING), ("exec_id", 2, _T.TYPE_STRING)],
    "StartResponse": [("pid", 1, _T.TYPE_UINT32)],
    "CheckpointTaskRequest": [("container_id", 1, _T.TYPE_STRING), ("parent_checkpoint", 2, _T.TYPE_STRING),
                              ("options", 3, ".google.protobuf.Any")],
    "CheckpointTaskResponse": [("descriptors", 1, ".%s.Descriptor" % PACKAGE, _T.LABEL_REPEATED)],
    "UpdateTaskRequest": [("container_id", 1, _T.TYPE_STRING), ("resources", 2, ".google.protobuf.Any")],
    "Empty": [],
}


def _messages() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FileDescriptorProto(name="pyshim_tests/tasks_v1.proto", package=PACKAGE, syntax="proto3",
                                           dependency=["google/protobuf/any.proto"])
    for name, fields in _FIELDS.items():
        m = f.message_type.add(name=name)
        for spec in fields:
            fname, number, ftype = spec[:3]
            label = spec[3] if len(spec) > 3 else _T.LABEL_OPTIONAL
            fd = m.field.add(name=fname, number=number, label=label)
            if isinstance(ftype, str):
                fd.type, fd.type_name = _T.TYPE_MESSAGE, ftype
            else:
                fd.type = ftype
    pool.Add(f)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in _FIELDS}


M = _messages()


def require() -> None:
    try:
        import grpc  # noqa: F401
    except ImportError:
        unavailable("grpcio is not installed (pip install 'pyshim[test]'): needed for containerd's Tasks API")


class CallError(Exception):
    """A failed gRPC call: ``code`` is the grpc.StatusCode name (e.g. "NOT_FOUND"), ``details`` its message."""

    def __init__(self, method: str, code: str, details: str) -> None:
        super().__init__(f"{method}: {code}: {details}")
        self.code = code
        self.details = details


@dataclass
class Tasks:
    """The Tasks service of one private containerd, for its test namespace."""

    c: PrivateContainerd
    timeout: float = 60.0

    def _call(self, method: str, request, response: str, timeout: float | None = None):
        import grpc

        with grpc.insecure_channel(f"unix://{self.c.address}") as channel:
            stub = channel.unary_unary(f"{SERVICE}/{method}", request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=M[response].FromString)
            try:
                return stub(request, timeout=timeout or self.timeout,
                            metadata=[("containerd-namespace", self.c.namespace)])
            except grpc.RpcError as e:
                raise CallError(method, e.code().name, e.details()) from None

    def update(self, cid: str, resources: dict) -> None:
        req = M["UpdateTaskRequest"](container_id=cid)
        req.resources.type_url = RESOURCES_URL
        req.resources.value = json.dumps(resources).encode()
        self._call("Update", req, "Empty")

    def checkpoint(self, cid: str, options=None, timeout: float | None = None) -> list:
        """``options``: a protos.runc_options_pb2.CheckpointOptions, or None to send none.  Returns the
        descriptors containerd wrote into its content store (none when it used the options' image_path)."""
        req = M["CheckpointTaskRequest"](container_id=cid)
        if options is not None:
            req.options.type_url = CHECKPOINT_OPTIONS_URL
            req.options.value = options.SerializeToString()
        return list(self._call("Checkpoint", req, "CheckpointTaskResponse", timeout).descriptors)

    def create(self, cid: str, *, checkpoint=None, runc_options=None, stdout: str = "", stderr: str = "",
               rootfs: list[tuple[str, str, list[str]]] = ()) -> int:
        """A task for the existing container ``cid``, on the ``rootfs`` mounts given as (type, source, options)
        (``snapshot_mounts``; none for a container made with ``--rootfs``), restored from ``checkpoint`` (a
        Descriptor of the content store) or from ``runc_options.criu_image_path`` (honoured by containerd 2.x for
        every runtime)."""
        req = M["CreateTaskRequest"](container_id=cid, stdout=stdout, stderr=stderr)
        for kind, source, options in rootfs:
            req.rootfs.add(type=kind, source=source, options=options)
        if checkpoint is not None:
            req.checkpoint.CopyFrom(checkpoint)
        if runc_options is not None:
            req.options.type_url = RUNC_OPTIONS_URL
            req.options.value = runc_options.SerializeToString()
        return self._call("Create", req, "CreateTaskResponse").pid

    def start(self, cid: str) -> int:
        return self._call("Start", M["StartRequest"](container_id=cid), "StartResponse").pid


def snapshot_mounts(c: PrivateContainerd, key: str) -> list[tuple[str, str, list[str]]]:
    """The mounts of snapshot ``key`` (a container's, made from an image) as (type, source, options), read from
    ``ctr snapshots mounts``, which prints ``mount -t TYPE SOURCE TARGET -o OPTIONS`` per mount."""
    found = []
    for line in c.ctr("snapshots", "mounts", "/unused", key).stdout.splitlines():
        words = line.split()
        if words[:2] != ["mount", "-t"] or len(words) not in (5, 7):
            raise ValueError(f"unexpected ctr snapshots mounts line: {line!r}")
        found.append((words[2], words[3], words[6].split(",") if len(words) == 7 else []))
    return found


def criu_descriptor(descriptors: list):
    """The CRIU image archive among a checkpoint's descriptors."""
    found = [d for d in descriptors if d.media_type == CRIU_CHECKPOINT_MEDIA_TYPE]
    assert len(found) == 1, [d.media_type for d in descriptors]
    return found[0]
