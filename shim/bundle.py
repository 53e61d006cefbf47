"""Files in a container's bundle that the library reads or writes: config.json's annotations and ``./address``.

Rules:
- ``./address`` holds the socket address byte for byte with no trailing newline (containerd 1.6/1.7 read it back
  untrimmed) and is replaced atomically (``.address`` then rename).
- A missing or malformed config.json raises OSError / ValueError: upstream's start fails then too.
- Standard library only (critical path), JSON through stdlib_lite.
"""

from __future__ import annotations

import os

from shim.stdlib_lite import loads_json

__all__ = ["read_address", "read_annotations", "write_address"]


def read_annotations(bundle: str) -> dict[str, object]:
    """The ``annotations`` object of ``<bundle>/config.json`` ({} when the spec has none).

    A missing or malformed config.json raises (OSError / ValueError): upstream's start fails then too.
    """
    with open(os.path.join(bundle, "config.json"), "rb") as f:
        spec = loads_json(f.read())
    if not isinstance(spec, dict):
        raise ValueError("config.json: not a JSON object")
    annotations = spec.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise ValueError("config.json: annotations is not an object")
    return annotations


def write_address(bundle: str, address: str) -> None:
    """Atomically write ``<bundle>/address`` with exactly the address bytes (no newline)."""
    final = os.path.join(bundle, "address")
    temp = os.path.join(bundle, ".address")
    data = address.encode("utf-8")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {temp}: {written} of {len(data)} bytes")
    finally:
        os.close(fd)
    os.rename(temp, final)


def read_address(bundle: str) -> str:
    """The content of ``<bundle>/address`` as written (untrimmed, like containerd reads it)."""
    with open(os.path.join(bundle, "address"), "rb") as f:
        return f.read().decode("utf-8")
