"""What ``start`` and the fork server agree on: where the server lives, and the request and reply bytes.

Rules:
- Standard library only (``start`` imports this on the critical path), none of enum/re/json (see stdlib_lite.py).
- One fork server per installed copy of the code and manager: its files are named after ``key()``, a hash of
  the interpreter, the directory the ``shim`` package was imported from and the manager's "module:attribute"
  (shim/manager.py), so a server only ever forks daemons of the code and shim the asking ``start`` runs. The directory is ``$PYSHIM_FORKSERVER_DIR``, else /run/pyshim
  (root-only, 0700; /run is a tmpfs, so nothing survives a reboot).
- ``$PYSHIM_FORKSERVER`` = 0/off/false/no turns the fork server off (every start spawns a fresh daemon).
- The control socket is SOCK_SEQPACKET: one request message (with the listening socket as SCM_RIGHTS) and one
  reply message, so neither side needs framing. Both are protobuf wire format (ttrpc/wire.py); the reply
  comes from the forked daemon itself, not from the server.
- Request: 1 version, 2 argv (repeated: the daemon's flags), 3 env (repeated ``NAME=value`` bytes), 4 cwd
  (bytes), 5 umask + 1 (so umask 0 survives proto3's zero omission), 6 program (repeated: what a fresh
  daemon's command line would start with, interpreter and options included), 7 comm (the name the kernel
  would give it). Reply: 1 pid, 2 error text; exactly one is set.
"""

from __future__ import annotations

import os
import sys

from shim.record import Record
from ttrpc import wire

try:  # as in address.py: the builtin module avoids loading OpenSSL
    from _sha256 import sha256
except ImportError:  # pragma: no cover
    from hashlib import sha256

VERSION = 1
DIR_ENV = "PYSHIM_FORKSERVER_DIR"
SWITCH_ENV = "PYSHIM_FORKSERVER"
DEFAULT_DIR = "/run/pyshim"
MAX_REQUEST = 256 * 1024  # argv + environment; containerd's environment is a few KiB
MAX_FDS = 1
_OFF = frozenset({"0", "off", "false", "no"})


def enabled(environ) -> bool:
    return environ.get(SWITCH_ENV, "").strip().lower() not in _OFF


def package_root() -> str:
    """The directory the ``shim`` package was imported from."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def key(executable: str | None = None, root: str | None = None, manager: str = "") -> str:
    text = f"{executable or sys.executable}\0{root or package_root()}\0{manager}"
    return sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class Location(Record):
    """The fork server's files: ``<dir>/fs-<key>.{sock,lock,pid,log,revive}``."""

    directory: str
    key: str
    manager: str = ""  # "module:attribute" of the Manager the server's daemons run (shim/manager.py)

    @classmethod
    def of(cls, environ, manager: str) -> Location:
        return cls(environ.get(DIR_ENV) or DEFAULT_DIR, key(manager=manager), manager)

    def path(self, suffix: str) -> str:
        return os.path.join(self.directory, f"fs-{self.key}.{suffix}")


class Request(Record):
    argv: tuple[str, ...]
    env: tuple[bytes, ...]
    cwd: bytes
    umask: int
    program: tuple[str, ...]
    comm: str = ""


def encode_request(req: Request) -> bytes:
    out = [wire.uint_field(1, VERSION)]
    out += [wire.message_field(2, a.encode("utf-8", "surrogateescape")) for a in req.argv]
    out += [wire.message_field(3, e) for e in req.env]
    out.append(wire.bytes_field(4, req.cwd))
    out.append(wire.uint_field(5, req.umask + 1))
    out += [wire.message_field(6, p.encode("utf-8", "surrogateescape")) for p in req.program]
    out.append(wire.string_field(7, req.comm))
    return b"".join(out)


def decode_request(data: bytes) -> Request:
    """Raises ValueError (wire.WireError) for bytes that are not a request of this version."""
    version, umask, cwd, comm = 0, 0, b"", ""
    argv: list[str] = []
    env: list[bytes] = []
    program: list[str] = []
    for number, wire_type, value in wire.iter_fields(data):
        if number == 1 and wire_type == wire.VARINT:
            version = value
        elif number in (2, 6) and wire_type == wire.LEN:
            (argv if number == 2 else program).append(value.decode("utf-8", "surrogateescape"))
        elif number == 3 and wire_type == wire.LEN:
            env.append(value)
        elif number == 4 and wire_type == wire.LEN:
            cwd = value
        elif number == 5 and wire_type == wire.VARINT:
            umask = value
        elif number == 7 and wire_type == wire.LEN:
            comm = value.decode("utf-8", "surrogateescape")
    if version != VERSION:
        raise wire.WireError(f"fork request version {version}, expected {VERSION}")
    if not cwd.startswith(b"/") or not program or not umask:
        raise wire.WireError("fork request without an absolute cwd, a program or a umask")
    if any(b"=" not in e or b"\0" in e for e in env):
        raise wire.WireError("fork request environment entries must be NAME=value")
    return Request(tuple(argv), tuple(env), cwd, (umask - 1) & 0o777, tuple(program), comm)


def encode_reply(pid: int = 0, error: str = "") -> bytes:
    return wire.uint_field(1, pid) + wire.string_field(2, error)


def decode_reply(data: bytes) -> tuple[int, str]:
    """(pid, "") or (0, error); an empty or malformed reply is an error."""
    try:
        decoded = wire.fields(data)
        pid, error = wire.get_uint(decoded, 1), wire.get_string(decoded, 2)
    except wire.WireError as exc:
        return 0, f"malformed reply: {exc}"
    if pid and not error:
        return pid, ""
    return 0, error or "empty reply"
