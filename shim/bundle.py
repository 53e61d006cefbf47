"""Files in a container's bundle that the library reads or writes: config.json's annotations and ``./address``.

Rules:
- ``./address`` holds the socket address byte for byte with no trailing newline (containerd 1.6/1.7 read it back
  untrimmed) and is replaced atomically (``.address`` then rename).
- Every file the shim writes into a bundle goes through ``write_atomically``: a reader sees the old file or the
  whole new one, and a failed write (a full file system) leaves neither a partial file nor its temporary one.
- A missing or malformed config.json raises OSError / ValueError: upstream's start fails then too.
- Standard library only (critical path), JSON through stdlib_lite.
"""

from __future__ import annotations

import os

from shim.stdlib_lite import loads_json

__all__ = ["read_address", "read_annotations", "write_address", "write_atomically"]


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


def write_atomically(path: str, data: bytes, mode: int, temp: str = "") -> None:
    """Replace ``path`` by a file of ``data`` in one step: written to ``temp`` (default ``path`` + ".tmp") next to
    it, created afresh with ``mode`` (a leftover is removed first, so it cannot keep another mode), then renamed
    over ``path``. On any failure (ENOSPC, EDQUOT, EIO...) ``temp`` is removed and the error raised: ``path`` is
    then the old file, or absent, never part of the new one."""
    temp = temp or path + ".tmp"
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:  # os.write names no file: say which one
            raise OSError(e.errno, e.strerror, temp) from None
        finally:
            os.close(fd)
        os.rename(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def write_address(bundle: str, address: str) -> None:
    """Atomically write ``<bundle>/address`` with exactly the address bytes (no newline)."""
    write_atomically(os.path.join(bundle, "address"), address.encode("utf-8"), 0o644,
                     temp=os.path.join(bundle, ".address"))


def read_address(bundle: str) -> str:
    """The content of ``<bundle>/address`` as written (untrimmed, like containerd reads it)."""
    with open(os.path.join(bundle, "address"), "rb") as f:
        return f.read().decode("utf-8")
