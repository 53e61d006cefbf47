"""Mode selection for process stdio (containerd ``pkg/process/io.go`` at v1.6.20): a table of requests and the plans they give."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shim.io.config import Mode, Output, Sink, StdioConfig, binary_argv, plan
from shim.io.errors import UnsupportedStdioError

FIFO_OUT = "/run/containerd/fifo/123/c1-stdout"
FIFO_ERR = "/run/containerd/fifo/123/c1-stderr"
FIFO_IN = "/run/containerd/fifo/123/c1-stdin"
LOGGER = "binary:///usr/bin/logger-x?id=abc&mode=fast"

NONE = Output(Sink.NONE)


@pytest.mark.parametrize(
    "cfg, mode, stdin, stdout, stderr",
    [
        (StdioConfig(), Mode.NULL, "", NONE, NONE),
        (StdioConfig(FIFO_IN, FIFO_OUT, FIFO_ERR), Mode.PIPES, FIFO_IN,
         Output(Sink.PATH, FIFO_OUT), Output(Sink.PATH, FIFO_ERR)),
        # an empty stream is /dev/null, not an attempt to open "" (upstream leniency gap)
        (StdioConfig("", FIFO_OUT, ""), Mode.PIPES, "", Output(Sink.PATH, FIFO_OUT), NONE),
        (StdioConfig(FIFO_IN, "", ""), Mode.PIPES, FIFO_IN, NONE, NONE),
        (StdioConfig("", "fifo://" + FIFO_OUT, FIFO_ERR), Mode.PIPES, "",
         Output(Sink.PATH, FIFO_OUT), Output(Sink.PATH, FIFO_ERR)),
        # a plain path is kept verbatim, even with URL-special characters
        (StdioConfig("", "/tmp/a b#c?d", ""), Mode.PIPES, "", Output(Sink.PATH, "/tmp/a b#c?d"), NONE),
        # file://: both streams go to the stdout file, whatever stderr says
        (StdioConfig("", "file:///var/log/c1.log", "file:///elsewhere"), Mode.PIPES, "",
         Output(Sink.FILE, "/var/log/c1.log"), Output(Sink.FILE, "/var/log/c1.log")),
        (StdioConfig("", "file:///var/log/c1.log", ""), Mode.PIPES, "", Output(Sink.FILE, "/var/log/c1.log"), NONE),
        # binary: no stdin, stderr to the logger's fd 4
        (StdioConfig(FIFO_IN, LOGGER, LOGGER), Mode.BINARY, "",
         Output(Sink.BINARY, "/usr/bin/logger-x"), Output(Sink.BINARY)),
        # terminal: stdout decides where the tty output goes, stderr is unused
        (StdioConfig(FIFO_IN, FIFO_OUT, FIFO_ERR, True), Mode.TERMINAL, FIFO_IN, Output(Sink.PATH, FIFO_OUT), NONE),
        (StdioConfig("", "", "", True), Mode.TERMINAL, "", NONE, NONE),
        (StdioConfig("", LOGGER, "", True), Mode.TERMINAL, "", Output(Sink.BINARY, "/usr/bin/logger-x"), NONE),
        (StdioConfig("", "file:///l", "", True), Mode.TERMINAL, "", Output(Sink.FILE, "/l"), NONE),
    ],
)
def test_plan_table(cfg: StdioConfig, mode: Mode, stdin: str, stdout: Output, stderr: Output) -> None:
    p = plan(cfg)
    assert (p.mode, p.stdin, p.stdout, p.stderr) == (mode, stdin, stdout, stderr)


def test_binary_plan_carries_logger_argv() -> None:
    assert plan(StdioConfig("", LOGGER, LOGGER)).logger_argv == ("/usr/bin/logger-x", "id", "abc", "mode", "fast")
    assert plan(StdioConfig("", LOGGER, "", True)).logger_argv[0] == "/usr/bin/logger-x"
    assert plan(StdioConfig("", FIFO_OUT, "")).logger_argv == ()


@pytest.mark.parametrize(
    "uri, argv",
    [
        ("binary:///bin/l", ("/bin/l",)),
        ("binary:///bin/l?a=1&b=2", ("/bin/l", "a", "1", "b", "2")),
        ("binary:///bin/l?a=1&a=2&b=", ("/bin/l", "a", "1", "b", "")),  # first value per key; blank kept
        ("binary:///bin/l?flag", ("/bin/l", "flag", "")),  # Go's url.Query gives a key without value ""
        ("binary:///bin/l?p=%2Fvar%2Flog+x", ("/bin/l", "p", "/var/log x")),
        ("binary://ignored-host/bin/l?k=v", ("/bin/l", "k", "v")),
    ],
)
def test_binary_argv(uri: str, argv: tuple[str, ...]) -> None:
    assert binary_argv(uri) == argv


@pytest.mark.parametrize(
    "cfg, message",
    [
        (StdioConfig("", "foo://x", ""), "unknown STDIO scheme foo"),
        (StdioConfig("", "http://host/x", "", True), "unknown STDIO scheme http"),
        (StdioConfig("", "binary://", ""), "must name an absolute path"),
        (StdioConfig("", "file:relative/x", ""), "must name an absolute path"),
        (StdioConfig("", "file://", ""), "must name an absolute path"),
    ],
)
def test_unsupported_requests(cfg: StdioConfig, message: str) -> None:
    with pytest.raises(UnsupportedStdioError, match=message) as info:
        plan(cfg)
    assert isinstance(info.value, ValueError)


def test_unknown_stderr_scheme_is_not_consulted() -> None:
    # only stdout's scheme selects the mode (upstream parses stdout alone)
    assert plan(StdioConfig("", FIFO_OUT, "weird://x")).stderr == Output(Sink.PATH, "weird://x")


@given(st.text(alphabet=st.characters(blacklist_characters=":\x00"), min_size=1))
def test_any_colon_free_string_is_a_path(path: str) -> None:
    p = plan(StdioConfig("", path, ""))
    assert (p.mode, p.stdout) == (Mode.PIPES, Output(Sink.PATH, path))
