"""protos/*.proto against containerd's own definitions (tools/upstream_protos.py).

Rules:
* Upstream comes from Debian's golang-github-containerd-*-dev packages (1.6.20)
  and pinned Go modules (containerd 2.1.9, 2.3.7, 2.4.2 api; cgroups v3.0.5;
  ttrpc v1.2.7) cached outside the repository.  A missing prerequisite skips
  with its reason on a developer machine and fails under CI=true.
* Every accepted difference is in ACCEPTED with its reason; one that no longer
  occurs fails too, so the list cannot rot.
* Mutating a descriptor must produce a report (the check can fail).
"""
import copy
import importlib

import pytest

from tests.prereq import unavailable
from google.protobuf import descriptor_pb2

from tools import protocompare, upstream_protos

C21 = "containerd 2.1.9 (api v1.9.0)"
C16 = "containerd 1.6.20"
ACCEPTED = {
    ("containerd.runc.v1.Options.criu_path", C21, "reserved-upstream"):
        "field 8 is criu_path in 1.6/1.7 (the 1.6 runc shim passes it as --criu); 2.x reserved the number"
        " without reusing it, so decoding it is harmless",
    ("containerd.services.events.ttrpc.v1.ForwardRequest.envelope", C21, "field-mismatch"):
        "2.x declares the field as containerd.types.Envelope; both Envelope messages have the same fields"
        " (test_proto_wire.py::test_envelopes_are_wire_identical), so the bytes are identical",
    ("ttrpc.Response.status", "ttrpc v1.2.7", "field-mismatch"):
        "ttrpc's proto/status.proto is a placeholder without a package; Protobuild.toml maps it to"
        " google.golang.org/genproto/googleapis/rpc/status, i.e. google.rpc.Status",
    ("containerd.linux.runc.RuncOptions", C16, "not-mirrored"):
        "v1-shim era options; pyshim only needs to recognise CreateOptions",
    ("containerd.linux.runc.CheckpointOptions", C16, "not-mirrored"):
        "v1-shim era; containerd.runc.v1.CheckpointOptions is what v2 shims receive",
    ("containerd.linux.runc.ProcessDetails", C16, "not-mirrored"):
        "v1-shim era; containerd.runc.v1.ProcessDetails is what v2 shims send",
}


@pytest.fixture(scope="module")
def upstream():
    try:
        return upstream_protos.load_upstream()
    except upstream_protos.Unavailable as exc:
        unavailable(f"conformance prerequisite missing: {exc}")


@pytest.fixture(scope="module")
def ours():
    return upstream_protos.load_ours()


def test_every_definition_matches_upstream(ours, upstream):
    unexpected = [p for p in protocompare.compare(ours, upstream) if p.key not in ACCEPTED]
    assert not unexpected, "differences from upstream:\n" + "\n".join(map(str, unexpected))


def test_every_accepted_difference_still_occurs(ours, upstream):
    found = {p.key for p in protocompare.compare(ours, upstream)}
    assert set(ACCEPTED) <= found, f"stale ACCEPTED entries: {sorted(set(ACCEPTED) - found)}"


def test_upstream_sources_are_all_compiled(upstream):
    labels = {u.label for u in upstream}
    assert labels == {s.label for s in upstream_protos.SOURCES}
    assert len(upstream) == sum(len(s.files) for s in upstream_protos.SOURCES)


def _find(files, full_name):
    for fd in files:
        for name, defn in protocompare.definitions(fd):
            if name == full_name:
                return defn.proto
    raise KeyError(full_name)


def _field(files, message, field):
    return next(f for f in _find(files, message).field if f.name == field)


def _method(files, service, method):
    return next(m for m in _find(files, service).method if m.name == method)


F = descriptor_pb2.FieldDescriptorProto
MUTATIONS = {
    "type": (lambda o: setattr(_field(o, "containerd.task.v2.KillRequest", "signal"), "type", F.TYPE_INT32),
             "containerd.task.v2.KillRequest.signal", "field-mismatch"),
    "number": (lambda o: setattr(_field(o, "containerd.events.TaskExit", "exited_at"), "number", 6),
               "containerd.events.TaskExit.exited_at", "missing-field"),
    "label": (lambda o: setattr(_field(o, "containerd.types.Mount", "options"), "label", F.LABEL_OPTIONAL),
              "containerd.types.Mount.options", "field-mismatch"),
    "type_name": (lambda o: setattr(_field(o, "containerd.task.v3.StateResponse", "status"), "type_name",
                                    ".containerd.runtime.bootstrap.v1.LogLevel"),
                  "containerd.task.v3.StateResponse.status", "field-mismatch"),
    "rename field": (lambda o: setattr(_field(o, "io.containerd.cgroups.v2.CPUStat", "psi"), "name", "pressure"),
                     "io.containerd.cgroups.v2.CPUStat.pressure", "field-mismatch"),
    "drop field": (lambda o: _find(o, "containerd.task.v2.StateResponse").field.pop(),
                   "containerd.task.v2.StateResponse.exec_id", "missing-field"),
    "extra field": (lambda o: _find(o, "containerd.task.v2.ConnectResponse").field.add(
                        name="extra", number=99, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL),
                    "containerd.task.v2.ConnectResponse.extra", "not-upstream"),
    "rename message": (lambda o: setattr(_find(o, "containerd.events.TaskOOM"), "name", "TaskOom"),
                       "containerd.events.TaskOom", "not-upstream"),
    "enum value": (lambda o: setattr(_find(o, "containerd.v1.types.Status").value[5], "number", 6),
                   "containerd.v1.types.Status.PAUSING", "enum-value"),
    "method input": (lambda o: setattr(_method(o, "containerd.task.v3.Task", "Kill"), "input_type",
                                       ".containerd.task.v3.KillRequestX"),
                     "containerd.task.v3.Task.Kill", "method-mismatch"),
    "method name": (lambda o: setattr(_method(o, "containerd.services.events.ttrpc.v1.Events", "Forward"),
                                      "name", "Publish"),
                    "containerd.services.events.ttrpc.v1.Events.Forward", "missing-method"),
    "optional": (lambda o: setattr(_field(o, "containerd.runtime.bootstrap.v1.BootstrapParams", "socket_dir"),
                                   "proto3_optional", False),
                 "containerd.runtime.bootstrap.v1.BootstrapParams.socket_dir", "field-mismatch"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_altered_descriptor_is_reported(ours, upstream, mutation):
    mutate, subject, what = MUTATIONS[mutation]
    altered = copy.deepcopy(ours)
    mutate(altered)
    problems = protocompare.compare(altered, upstream)
    assert [p for p in problems if p.subject == subject and p.what == what], \
        f"{mutation}: expected {what} for {subject}, got:\n" + "\n".join(map(str, problems))


def _without_json_names(fd):
    fd = copy.deepcopy(fd)
    pending = list(fd.message_type)
    while pending:
        m = pending.pop()
        for f in m.field:
            f.ClearField("json_name")
        pending.extend(m.nested_type)
    return fd


def test_generated_modules_match_sources(ours):
    """The committed *_pb2.py embed exactly the descriptors the .proto files compile to."""
    for fd in ours:
        module = importlib.import_module(fd.name.removesuffix(".proto").replace("/", ".") + "_pb2")
        embedded = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert _without_json_names(embedded) == _without_json_names(fd), f"{fd.name}: run tools/genprotos.py"


TASK_METHODS = ("State Create Start Delete Pids Pause Resume Checkpoint Kill Exec ResizePty CloseIO Update Wait "
                "Stats Connect Shutdown").split()
REQUIRED = {   # what pyshim relies on, independent of the upstream files (runs without prerequisites)
    "mount": ["containerd.types.Mount"],
    "task_types": ["containerd.v1.types.Status", "containerd.v1.types.Process", "containerd.v1.types.ProcessInfo"],
    "metrics": ["containerd.types.Metric"],
    "platform": ["containerd.types.Platform"],
    "introspection": ["containerd.types.RuntimeInfo", "containerd.types.RuntimeVersion"],
    "event": ["containerd.types.Envelope"],
    "task_events": [f"containerd.events.Task{n}" for n in
                    "Create Start Delete IO Exit OOM ExecAdded ExecStarted Paused Resumed Checkpointed".split()],
    "ttrpc_events": ["containerd.services.events.ttrpc.v1.ForwardRequest",
                     "containerd.services.events.ttrpc.v1.Envelope"],
    "cgroups_v1": ["io.containerd.cgroups.v1.Metrics"],
    "cgroups_v2": ["io.containerd.cgroups.v2.Metrics", "io.containerd.cgroups.v2.PSIStats"],
    "runc_options": ["containerd.runc.v1.Options", "containerd.runc.v1.CheckpointOptions",
                     "containerd.runc.v1.ProcessDetails"],
    "runtimeoptions": ["runtimeoptions.v1.Options"],
    "runctypes": ["containerd.linux.runc.CreateOptions"],
    "bootstrap": ["containerd.runtime.bootstrap.v1.BootstrapParams", "containerd.runtime.bootstrap.v1.BootstrapResult",
                  "containerd.runtime.bootstrap.v1.Extension"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_definitions_exist(name):
    module = importlib.import_module(f"protos.{name}_pb2")
    defined = {full for full, _ in protocompare.definitions(
        descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb))}
    assert set(REQUIRED[name]) <= defined


@pytest.mark.parametrize("package", ["containerd.task.v2", "containerd.task.v3"])
def test_task_service_method_paths(package):
    module = importlib.import_module(f"protos.task_{package[-2:]}_pb2")
    service = module.DESCRIPTOR.services_by_name["Task"]
    assert service.full_name == f"{package}.Task"
    assert [m.name for m in service.methods] == TASK_METHODS


def test_events_service_method_path():
    from protos import ttrpc_events_pb2
    forward = ttrpc_events_pb2.DESCRIPTOR.services_by_name["Events"].methods_by_name["Forward"]
    assert f"/{forward.containing_service.full_name}/{forward.name}" == \
        "/containerd.services.events.ttrpc.v1.Events/Forward"
    assert forward.output_type.full_name == "google.protobuf.Empty"
