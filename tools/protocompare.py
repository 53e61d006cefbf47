"""Compare pyshim's proto descriptors with upstream's, by full name (pure, no I/O).

Rules:
* Every message, enum and service pyshim defines (nested ones included) must
  exist under the same full name in at least one upstream file, and must agree
  with *every* upstream version that defines it: same kind; for each of our
  fields that the version has (by number), the same name, type, label,
  type_name, proto3 presence and oneof; for enums the same value names and
  numbers; for services the same methods, input/output types and streaming.
* Version differences are legal in one direction only: a field of ours that a
  version lacks is fine if some other version has it (e.g. 2.1 additions
  checked against 1.6), unless that version reserved the number.
* Omissions are problems: an upstream field, nested type, enum value or method
  missing in ours, and any top-level definition of an upstream file we mirror
  that we do not define.
* Problems are data (Problem); the caller decides which are accepted, each
  with a stated reason, so an accepted difference can never hide a new one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from google.protobuf import descriptor_pb2 as d

FieldD = d.FieldDescriptorProto


@dataclasses.dataclass(frozen=True)
class Upstream:
    """One upstream .proto file at one version."""
    label: str   # e.g. "containerd 1.6.20"
    file: d.FileDescriptorProto


@dataclasses.dataclass(frozen=True, order=True)
class Problem:
    subject: str    # full name of the message/field/enum/method concerned
    upstream: str   # label of the upstream version, or "-" when none applies
    what: str       # short code: field-mismatch, missing-field, not-upstream, ...
    detail: str = dataclasses.field(compare=False, default="")

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.subject, self.upstream, self.what)

    def __str__(self) -> str:
        return f"{self.subject} [{self.upstream}] {self.what}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class Definition:
    kind: str       # "message", "enum" or "service"
    proto: d.DescriptorProto | d.EnumDescriptorProto | d.ServiceDescriptorProto
    syntax: str     # "proto3", or "proto2" for files without a syntax line


def definitions(fd: d.FileDescriptorProto, *, top_level_only: bool = False) -> Iterator[tuple[str, Definition]]:
    """(full name, Definition) for everything file ``fd`` defines."""
    syntax = fd.syntax or "proto2"
    prefix = f".{fd.package}" if fd.package else ""

    def walk(msgs: Iterable[d.DescriptorProto], enums: Iterable[d.EnumDescriptorProto], scope: str):
        for e in enums:
            yield f"{scope}.{e.name}"[1:], Definition("enum", e, syntax)
        for m in msgs:
            yield f"{scope}.{m.name}"[1:], Definition("message", m, syntax)
            if not top_level_only:
                yield from walk(m.nested_type, m.enum_type, f"{scope}.{m.name}")

    yield from walk(fd.message_type, fd.enum_type, prefix)
    for s in fd.service:
        yield f"{prefix}.{s.name}"[1:], Definition("service", s, syntax)


def _field_shape(f: FieldD, oneofs: list[d.OneofDescriptorProto]) -> dict[str, object]:
    in_real_oneof = f.HasField("oneof_index") and not f.proto3_optional
    return {
        "name": f.name,
        "type": FieldD.Type.Name(f.type),
        "label": FieldD.Label.Name(f.label),
        "type_name": f.type_name,
        "proto3_optional": f.proto3_optional,
        "oneof": oneofs[f.oneof_index].name if in_real_oneof else None,
        "packed": f.options.packed if f.options.HasField("packed") else None,
    }


def _compare_message(name: str, ours: d.DescriptorProto, up: d.DescriptorProto, label: str) -> Iterator[Problem]:
    up_fields = {f.number: f for f in up.field}
    our_numbers = {f.number for f in ours.field}
    reserved = [(r.start, r.end) for r in up.reserved_range]   # end is exclusive
    for f in ours.field:
        subject = f"{name}.{f.name}"
        u = up_fields.get(f.number)
        if u is None:
            if any(lo <= f.number < hi for lo, hi in reserved):
                yield Problem(subject, label, "reserved-upstream", f"field number {f.number} is reserved upstream")
            continue
        mine, theirs = _field_shape(f, list(ours.oneof_decl)), _field_shape(u, list(up.oneof_decl))
        diffs = [f"{k} {mine[k]!r} != upstream {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]
        if diffs:
            yield Problem(subject, label, "field-mismatch", f"field {f.number}: " + "; ".join(diffs))
    for u in up.field:
        if u.number not in our_numbers:
            yield Problem(f"{name}.{u.name}", label, "missing-field",
                          f"upstream field {u.number} {FieldD.Type.Name(u.type)} is not defined by pyshim")
    if ours.options.map_entry != up.options.map_entry:
        yield Problem(name, label, "map-entry", f"map_entry {ours.options.map_entry} != upstream {up.options.map_entry}")
    our_nested = {m.name for m in ours.nested_type} | {e.name for e in ours.enum_type}
    for nested in [m.name for m in up.nested_type] + [e.name for e in up.enum_type]:
        if nested not in our_nested:
            yield Problem(f"{name}.{nested}", label, "missing-nested", "nested type is not defined by pyshim")


def _compare_enum(name: str, ours: d.EnumDescriptorProto, up: d.EnumDescriptorProto, label: str) -> Iterator[Problem]:
    mine = {v.name: v.number for v in ours.value}
    theirs = {v.name: v.number for v in up.value}
    for value in sorted(mine.keys() | theirs.keys()):
        if mine.get(value) != theirs.get(value):
            yield Problem(f"{name}.{value}", label, "enum-value",
                          f"number {mine.get(value)} != upstream {theirs.get(value)}")


def _method_shape(m: d.MethodDescriptorProto) -> tuple[str, str, bool, bool]:
    return (m.input_type, m.output_type, m.client_streaming, m.server_streaming)


def _compare_service(name: str, ours: d.ServiceDescriptorProto, up: d.ServiceDescriptorProto,
                     label: str) -> Iterator[Problem]:
    mine = {m.name: _method_shape(m) for m in ours.method}
    theirs = {m.name: _method_shape(m) for m in up.method}
    for method in sorted(mine.keys() | theirs.keys()):
        if method not in mine:
            yield Problem(f"{name}.{method}", label, "missing-method", "upstream method is not defined by pyshim")
        elif method not in theirs:
            yield Problem(f"{name}.{method}", label, "not-upstream", "method does not exist upstream")
        elif mine[method] != theirs[method]:
            yield Problem(f"{name}.{method}", label, "method-mismatch",
                          f"(in, out, client_stream, server_stream) {mine[method]} != upstream {theirs[method]}")


_COMPARERS = {"message": _compare_message, "enum": _compare_enum, "service": _compare_service}


def compare(ours: Iterable[d.FileDescriptorProto], upstream: Iterable[Upstream]) -> list[Problem]:
    """Every difference between our definitions and the upstream files, sorted."""
    upstream = list(upstream)
    up_index: dict[str, list[tuple[str, Definition]]] = {}
    for u in upstream:
        for full, defn in definitions(u.file):
            up_index.setdefault(full, []).append((u.label, defn))
    our_index = dict(kv for fd in ours for kv in definitions(fd))
    problems: list[Problem] = []
    for full, mine in our_index.items():
        versions = up_index.get(full, [])
        if not versions:
            problems.append(Problem(full, "-", "not-upstream", f"{mine.kind} exists in no upstream file"))
        for label, theirs in versions:
            if theirs.kind != mine.kind:
                problems.append(Problem(full, label, "kind", f"{mine.kind} != upstream {theirs.kind}"))
                continue
            if theirs.syntax != mine.syntax:
                problems.append(Problem(full, label, "syntax", f"{mine.syntax} != upstream {theirs.syntax}"))
            problems.extend(_COMPARERS[mine.kind](full, mine.proto, theirs.proto, label))
        if mine.kind == "message" and versions:
            known = {f.number for _, t in versions if t.kind == "message" for f in t.proto.field}
            for f in mine.proto.field:
                if f.number not in known:
                    problems.append(Problem(f"{full}.{f.name}", "-", "not-upstream",
                                            f"field {f.number} exists in no upstream version"))
    for u in upstream:
        for full, defn in definitions(u.file, top_level_only=True):
            if full not in our_index:
                problems.append(Problem(full, u.label, "not-mirrored",
                                        f"{defn.kind} of upstream {u.file.name} is not defined by pyshim"))
    return sorted(set(problems))
