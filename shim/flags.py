"""Command-line flags of ``containerd-shim-pyshim-v1``, parsed the way Go's ``flag`` package does.

Rules (containerd ``pkg/shim/shim.go`` ``parseFlags`` at v1.6.20):
- Spellings: ``-name value``, ``-name=value``, ``--name value``, ``--name=value``; boolean flags are given bare
  (``-debug``) or as ``-debug=true|false`` (Go's strconv.ParseBool words); a bare boolean never consumes the
  next argument. A repeated flag keeps its last value.
- Parsing stops at the first non-flag argument (the action word, ``start`` or ``delete``; none means "serve as
  the daemon"), at a lone ``-``, or after ``--`` (which is consumed). Arguments after the action are ignored,
  as upstream ignores them.
- Unknown flags (containerd adds flags over time; Go itself would exit with status 2): ``-x=value`` and a bare
  ``-x`` are skipped and recorded in ``ShimFlags.extra``. For ``-x value`` we cannot know whether ``value``
  belongs to the flag, so we do not guess: ``-x`` is skipped as if bare and ``value`` becomes the action word,
  which main.py then rejects as an unknown action unless it is a real one. Failing loudly beats silently
  running the wrong action.
- A known string flag without its value, a malformed boolean value, or bad syntax (``---x``, ``-=x``) raises
  ``FlagError`` (Go: exit status 2). ``-h``/``-help`` raise ``HelpRequested`` (Go prints usage, exit 0).
- Standard library only (critical path, see main.py); ShimFlags is a ``Record`` (record.py) rather than a
  dataclass for the same reason.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, nor collections
if TYPE_CHECKING:
    from collections.abc import Sequence

from shim.record import Record

ACTIONS = ("start", "delete")

# flag name -> ShimFlags attribute
_STRING_FLAGS = {
    "namespace": "namespace",
    "id": "id",
    "address": "address",
    "publish-binary": "publish_binary",
    "bundle": "bundle",
    "socket": "socket",
    "debug-socket": "debug_socket",
    "shared": "shared",
}
_BOOL_FLAGS = {"debug": "debug", "v": "version", "info": "info"}
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})

USAGE = """\
Usage: {program} [flags] [start|delete]

  -namespace string       namespace that owns the shim
  -id string              id of the task
  -address string         grpc address back to main containerd
  -publish-binary string  path to publish binary (ignored; events go to $TTRPC_ADDRESS)
  -bundle string          path to the bundle if not workdir
  -socket string          socket path to serve (daemon without an inherited fd 3)
  -debug-socket string    accepted for compatibility; unused
  -shared string          daemon only, set by start: MAX_TASKS:IDLE_SECONDS of a daemon shared by containers
  -debug                  enable debug output in logs
  -v                      show the shim version and exit
  -info                   read runtime options (an Any) from stdin, print a RuntimeInfo protobuf, and exit
"""


def usage(program: str) -> str:
    """The usage text for a shim binary named ``program``."""
    return USAGE.format(program=program)


class FlagError(ValueError):
    """The command line cannot be parsed (Go's flag package would exit with status 2)."""


class HelpRequested(Exception):
    """``-h`` or ``-help`` was given."""


class ShimFlags(Record):
    """The parsed command line (a frozen value: a Record, not a dataclass, see record.py for why)."""

    namespace: str = ""
    id: str = ""
    address: str = ""
    publish_binary: str = ""
    bundle: str = ""
    socket: str = ""
    debug: bool = False
    version: bool = False
    info: bool = False
    action: str = ""            # "start", "delete", "" for the daemon, or whatever non-flag word came first
    extra: tuple[str, ...] = ()  # unknown flags that were skipped, as given
    debug_socket: str = ""
    shared: str = ""            # "max_tasks:idle_exit" for a daemon that unrelated containers share (sharing.py)


def parse(argv: Sequence[str]) -> ShimFlags:
    """Parse ``argv`` (without the program name) into ShimFlags."""
    values: dict[str, object] = {}
    extra: list[str] = []
    action = ""
    i = 0
    n = len(argv)
    while i < n:
        arg = argv[i]
        if len(arg) < 2 or arg[0] != "-":
            action = arg
            break
        if arg == "--":
            if i + 1 < n:
                action = argv[i + 1]
            break
        name = arg[2:] if arg[1] == "-" else arg[1:]
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        name, has_value, value = name.partition("=")
        i += 1
        if name in ("h", "help"):
            raise HelpRequested()
        if name in _BOOL_FLAGS:
            if not has_value:
                values[_BOOL_FLAGS[name]] = True
            elif value in _TRUE:
                values[_BOOL_FLAGS[name]] = True
            elif value in _FALSE:
                values[_BOOL_FLAGS[name]] = False
            else:
                raise FlagError(f"invalid boolean value {value!r} for -{name}")
        elif name in _STRING_FLAGS:
            if not has_value:
                if i >= n:
                    raise FlagError(f"flag needs an argument: -{name}")
                value = argv[i]
                i += 1
            values[_STRING_FLAGS[name]] = value
        else:
            extra.append(arg)
    return ShimFlags(action=action, extra=tuple(extra), **values)  # type: ignore[arg-type]
