"""Go-style flag parsing (shim/flags.py): spellings, stop rules, unknown flags, errors; the Record type."""

from __future__ import annotations

import pytest

from shim.flags import FlagError, HelpRequested, ShimFlags, parse
from shim.record import Record

CONTAINERD_16_START = [
    "-namespace", "default", "-address", "/run/containerd/containerd.sock",
    "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-debug", "start",
]
CONTAINERD_17_DELETE = [
    "-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
    "-publish-binary", "/usr/bin/containerd", "-id", "c2",
    "-bundle", "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c2", "-debug", "delete",
]


def test_containerd_start_command_line() -> None:
    assert parse(CONTAINERD_16_START) == ShimFlags(
        namespace="default", address="/run/containerd/containerd.sock", publish_binary="/usr/bin/containerd",
        id="c1", debug=True, action="start")


def test_containerd_delete_command_line() -> None:
    flags = parse(CONTAINERD_17_DELETE)
    assert (flags.action, flags.id, flags.bundle, flags.debug) == (
        "delete", "c2", "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c2", True)


def test_daemon_command_line_has_no_action() -> None:
    flags = parse(["-namespace", "ns", "-id", "c1", "-address", "/a.sock"])
    assert flags.action == "" and flags.id == "c1"


@pytest.mark.parametrize("argv", [
    ["-namespace", "ns"], ["-namespace=ns"], ["--namespace", "ns"], ["--namespace=ns"],
])
def test_string_flag_spellings(argv: list[str]) -> None:
    assert parse(argv).namespace == "ns"


def test_string_flag_value_may_start_with_dash_or_be_empty() -> None:
    assert parse(["-id", "-weird", "start"]) == ShimFlags(id="-weird", action="start")
    assert parse(["-id=", "start"]) == ShimFlags(id="", action="start")
    assert parse(["-bundle=/a=b"]).bundle == "/a=b"


@pytest.mark.parametrize("word,value", [
    ("1", True), ("t", True), ("T", True), ("true", True), ("TRUE", True), ("True", True),
    ("0", False), ("f", False), ("F", False), ("false", False), ("FALSE", False), ("False", False),
])
def test_bool_values(word: str, value: bool) -> None:
    assert parse([f"-debug={word}"]).debug is value


def test_bare_bool_does_not_consume_the_next_argument() -> None:
    assert parse(["-debug", "false"]) == ShimFlags(debug=True, action="false")


def test_version_and_info() -> None:
    assert parse(["-v"]).version and parse(["-info"]).info
    assert parse(["--info=false"]).info is False


def test_repeated_flag_keeps_last_value() -> None:
    assert parse(["-id", "a", "-id", "b"]).id == "b"


def test_parsing_stops_at_first_non_flag() -> None:
    flags = parse(["-id", "a", "start", "-id", "b", "-debug"])
    assert (flags.id, flags.action, flags.debug) == ("a", "start", False)


def test_double_dash_ends_flags() -> None:
    assert parse(["-id", "a", "--", "-debug"]) == ShimFlags(id="a", action="-debug")
    assert parse(["--"]) == ShimFlags()


def test_lone_dash_is_a_non_flag() -> None:
    assert parse(["-", "-debug"]).action == "-"


@pytest.mark.parametrize("argv,extra,action", [
    (["-future=1", "start"], ("-future=1",), "start"),
    (["-future", "start"], ("-future",), "start"),
    (["--sandbox-thing=x", "-id", "c"], ("--sandbox-thing=x",), ""),
    # Go would fail; we skip the bare flag and its would-be value becomes the (then rejected) action word.
    (["-future", "value", "start"], ("-future",), "value"),
])
def test_unknown_flags_are_skipped(argv: list[str], extra: tuple[str, ...], action: str) -> None:
    flags = parse(argv)
    assert (flags.extra, flags.action) == (extra, action)


@pytest.mark.parametrize("argv,message", [
    (["-namespace"], "flag needs an argument: -namespace"),
    (["-debug=yes"], "invalid boolean value"),
    (["---x"], "bad flag syntax"),
    (["-=x"], "bad flag syntax"),
])
def test_errors(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message):
        parse(argv)


@pytest.mark.parametrize("argv", [["-h"], ["-help"], ["--help"], ["-id", "x", "-h", "start"]])
def test_help(argv: list[str]) -> None:
    with pytest.raises(HelpRequested):
        parse(argv)


def test_flags_are_a_frozen_value() -> None:
    flags = parse(["-id", "a"])
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError is an AttributeError too
        flags.id = "b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del flags.id
    assert flags.replace(id="b") == ShimFlags(id="b") and flags.id == "a"
    assert hash(flags) == hash(ShimFlags(id="a")) and flags != ShimFlags(id="b")
    assert repr(ShimFlags()).startswith("ShimFlags(namespace='', id='',")


class Point(Record):
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()


def test_record_construction_rules() -> None:
    assert Point(1) == Point(x=1, y=0) == Point(1, 0, ())
    assert Point(1, y=2).y == 2
    assert Point(1) != (1, 0, ())
    assert Point._fields == ("x", "y", "tags")
    assert not hasattr(Point, "y")  # defaults live in _defaults, never shadow an instance
    for args, kwargs, message in [((), {}, "missing required argument 'x'"), ((1, 2, 3, 4), {}, "positional"),
                                  ((1,), {"x": 2}, "multiple values"), ((1,), {"z": 2}, "unexpected keyword")]:
        with pytest.raises(TypeError, match=message):
            Point(*args, **kwargs)
