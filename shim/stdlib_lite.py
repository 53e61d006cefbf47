"""Lite stand-ins for the stdlib modules that make a cold ``start``/``delete`` slow.

``socket``, ``signal`` and ``json`` (through ``re``) each import ``enum``, which costs a large part of a whole
``start`` (bench/README.md, "Import costs on the critical path"). containerd waits for ``start`` on every container
and for ``delete`` on every task removal.

Rules:
- Only the C modules behind the public ones are used (``_socket``, ``_signal``, ``_json``'s scanner), each
  with a fallback to the public module, so behaviour is the same on interpreters that lack them.
- ``loads_json`` accepts exactly what ``json.loads`` accepts for str/UTF-8 input (it is json's own C scanner
  with json's default decoder settings); errors are ``ValueError`` (json.JSONDecodeError or ours). The error
  path imports json, since the C scanner can only raise json.decoder's exception once that is loaded.
- Nothing here may import enum, re, inspect, typing or dataclasses.
"""

from __future__ import annotations

try:
    import _socket as _sock
except ImportError:  # pragma: no cover - every CPython has it
    import socket as _sock
try:
    from _signal import SIGKILL, SIGPIPE, SIGXFSZ
except ImportError:  # pragma: no cover
    from signal import SIGKILL, SIGPIPE, SIGXFSZ

__all__ = ["SIGKILL", "SIGPIPE", "SIGXFSZ", "loads_json", "unix_socket"]

_WHITESPACE = " \t\n\r"
_scanner = None


def unix_socket():
    """A new AF_UNIX stream socket (``_socket.socket``: same methods as socket.socket, minus the enums)."""
    return _sock.socket(_sock.AF_UNIX, _sock.SOCK_STREAM)


class _DecoderSettings:
    """The attributes json's C scanner reads from its context: json.JSONDecoder()'s defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


def _scan():
    global _scanner
    if _scanner is None:
        try:
            from _json import make_scanner
            _scanner = make_scanner(_DecoderSettings())
        except ImportError:  # pragma: no cover
            import json
            _scanner = json.JSONDecoder().scan_once
    return _scanner


def loads_json(data: bytes | str) -> object:
    """Parse one JSON document (UTF-8 bytes or str), like json.loads."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan()(text, start)
    except StopIteration as stop:
        raise ValueError(f"invalid JSON: expecting a value at offset {stop.value}") from None
    except SystemError:
        # The C scanner builds its JSONDecodeError from json.decoder only if that is already imported;
        # on this (error) path, let json itself raise the proper exception.
        import json

        return json.loads(text)
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"invalid JSON: extra data at offset {end}")
    return value
