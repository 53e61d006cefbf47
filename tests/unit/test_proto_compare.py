"""tools/protocompare.py on small hand-written descriptors (no upstream files needed).

Rules: each rule of the comparison (see its docstring) has a case here that
must be reported and, where versions differ legitimately, one that must not.
"""
from google.protobuf import text_format
from google.protobuf.descriptor_pb2 import FileDescriptorProto

from tools.protocompare import Upstream, compare

BASE = """
name: "x.proto" package: "p" syntax: "proto3"
message_type { name: "Req"
  field { name: "id" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "tags" number: 2 type: TYPE_STRING label: LABEL_REPEATED }
  field { name: "when" number: 3 type: TYPE_MESSAGE label: LABEL_OPTIONAL type_name: ".google.protobuf.Timestamp" }
}
enum_type { name: "Level" value { name: "ZERO" number: 0 } value { name: "LOW" number: -4 } }
service { name: "Svc" method { name: "Call" input_type: ".p.Req" output_type: ".p.Req" } }
"""


def fd(text: str) -> FileDescriptorProto:
    return text_format.Parse(text, FileDescriptorProto())


def keys(ours: str, *upstream: tuple[str, str]) -> set[tuple[str, str, str]]:
    return {p.key for p in compare([fd(ours)], [Upstream(label, fd(text)) for label, text in upstream])}


def test_identical_definitions_have_no_problems():
    assert keys(BASE, ("v1", BASE)) == set()


def test_field_type_label_name_and_type_name_are_compared():
    for old, new in [("TYPE_STRING label: LABEL_OPTIONAL }", "TYPE_BYTES label: LABEL_OPTIONAL }"),
                     ('name: "tags" number: 2 type: TYPE_STRING label: LABEL_REPEATED',
                      'name: "tags" number: 2 type: TYPE_STRING label: LABEL_OPTIONAL'),
                     ('name: "id"', 'name: "ident"'),
                     (".google.protobuf.Timestamp", ".google.protobuf.Duration")]:
        found = keys(BASE.replace(old, new, 1), ("v1", BASE))
        assert any(k[2] == "field-mismatch" for k in found), (old, new, found)


def test_renumbered_field_is_missing_and_unknown():
    found = keys(BASE.replace("number: 3", "number: 4"), ("v1", BASE))
    assert ("p.Req.when", "v1", "missing-field") in found
    assert ("p.Req.when", "-", "not-upstream") in found


def test_field_from_a_newer_version_is_fine_against_an_older_one():
    older = BASE.replace('field { name: "when" number: 3 type: TYPE_MESSAGE label: LABEL_OPTIONAL '
                         'type_name: ".google.protobuf.Timestamp" }', "")
    assert keys(BASE, ("old", older), ("new", BASE)) == set()
    assert ("p.Req.when", "-", "not-upstream") in keys(BASE, ("old", older))


def test_number_reserved_by_a_version_is_reported():
    reserving = BASE.replace('field { name: "when" number: 3 type: TYPE_MESSAGE label: LABEL_OPTIONAL '
                             'type_name: ".google.protobuf.Timestamp" }', "reserved_range { start: 3 end: 4 }")
    assert ("p.Req.when", "new", "reserved-upstream") in keys(BASE, ("old", BASE), ("new", reserving))


def test_every_version_must_agree():
    changed = BASE.replace("TYPE_STRING label: LABEL_OPTIONAL }", "TYPE_BYTES label: LABEL_OPTIONAL }", 1)
    assert ("p.Req.id", "v2", "field-mismatch") in keys(BASE, ("v1", BASE), ("v2", changed))


def test_proto3_optional_and_oneofs_are_compared():
    optional = BASE.replace('name: "id" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL',
                            'name: "id" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL '
                            'oneof_index: 0 proto3_optional: true').replace(
        'type_name: ".google.protobuf.Timestamp" }', 'type_name: ".google.protobuf.Timestamp" }'
        ' oneof_decl { name: "_id" }')
    assert keys(optional, ("v1", optional)) == set()
    assert ("p.Req.id", "v1", "field-mismatch") in keys(BASE, ("v1", optional))
    real_oneof = optional.replace("proto3_optional: true", "").replace('"_id"', '"choice"')
    assert ("p.Req.id", "v1", "field-mismatch") in keys(optional, ("v1", real_oneof))


def test_enum_values_are_compared_both_ways():
    assert ("p.Level.LOW", "v1", "enum-value") in keys(BASE.replace("-4", "-8"), ("v1", BASE))
    assert ("p.Level.HIGH", "v1", "enum-value") in keys(
        BASE, ("v1", BASE.replace('value { name: "LOW"', 'value { name: "HIGH" number: 4 } value { name: "LOW"')))


def test_methods_are_compared_both_ways():
    streaming = BASE.replace('output_type: ".p.Req"', 'output_type: ".p.Req" server_streaming: true')
    assert ("p.Svc.Call", "v1", "method-mismatch") in keys(streaming, ("v1", BASE))
    renamed = BASE.replace('name: "Call"', 'name: "Invoke"')
    assert {("p.Svc.Call", "v1", "missing-method"), ("p.Svc.Invoke", "v1", "not-upstream")} <= keys(
        renamed, ("v1", BASE))


def test_definitions_missing_on_either_side_are_reported():
    upstream_more = BASE + 'message_type { name: "Extra" }'
    assert ("p.Extra", "v1", "not-mirrored") in keys(BASE, ("v1", upstream_more))
    assert ("p.Extra", "-", "not-upstream") in keys(upstream_more, ("v1", BASE))
    moved = BASE.replace('package: "p"', 'package: "q"')
    assert ("q.Req", "-", "not-upstream") in keys(moved, ("v1", BASE))


def test_map_entries_and_nested_types_are_compared():
    entry = ('nested_type { name: "LabelsEntry" options { map_entry: true }'
             ' field { name: "key" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }'
             ' field { name: "value" number: 2 type: TYPE_STRING label: LABEL_OPTIONAL } }')
    with_map = BASE.replace('message_type { name: "Req"', 'message_type { name: "Req" ' + entry)
    assert keys(with_map, ("v1", with_map)) == set()
    assert ("p.Req.LabelsEntry", "v1", "missing-nested") in keys(BASE, ("v1", with_map))
    assert ("p.Req.LabelsEntry", "v1", "map-entry") in keys(
        with_map.replace("map_entry: true", "map_entry: false"), ("v1", with_map))


def test_kind_and_syntax_are_compared():
    as_message = BASE.replace('enum_type { name: "Level" value { name: "ZERO" number: 0 } '
                              'value { name: "LOW" number: -4 } }', 'message_type { name: "Level" }')
    assert ("p.Level", "v1", "kind") in keys(as_message, ("v1", BASE))
    assert ("p.Req", "v1", "syntax") in keys(BASE, ("v1", BASE.replace('syntax: "proto3"', "")))
