"""The shim socket address: grouping id, hash name, ``unix://`` form, and the bundle's ``address`` file.

Rules (shim-v2.md §3.2, §4, §7):
- Address = ``unix://`` + SOCKET_DIR + ``/`` + lowercase hex SHA-256 of Go's ``filepath.Join(<-address>,
  <namespace>, <grouping id>)`` (Join drops empty elements, joins with ``/`` and applies Go's ``path.Clean``).
  SOCKET_DIR is upstream's hard-coded ``/run/containerd/s``; tests pass another directory.
- Grouping id: the first non-empty annotation of GROUP_ANNOTATIONS in the bundle's config.json, else the
  container id. pyshim's own ``io.pyshim.group`` comes first, then the runc shim's key (so specs written for
  runc group the same way), then CRI's sandbox id. Deviation: Go's runc shim also accepts an annotation whose
  value is empty (grouping everything with an empty value); we treat an empty value as absent.
- Never an abstract socket (CVE-2020-15257): every address produced here is a filesystem path with ``unix://``.
- ``./address`` holds the address byte for byte with no trailing newline (containerd 1.6/1.7 read it back
  untrimmed) and is replaced atomically (``.address`` then rename).
- Standard library only (critical path).
"""

from __future__ import annotations

import os

from shim.stdlib_lite import loads_json

try:  # the builtin module avoids loading OpenSSL through hashlib (a few ms on every start)
    from _sha256 import sha256
except ImportError:  # pragma: no cover - other interpreters / Python 3.12+ name it _sha2
    from hashlib import sha256

SOCKET_DIR = "/run/containerd/s"
UNIX_SCHEME = "unix://"
SOCKET_PATH_LIMIT = 106  # upstream's limit for socket paths (Linux sun_path is 108 bytes)
GROUP_ANNOTATIONS = (
    "io.pyshim.group",
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
)


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: shortest equivalent path by purely lexical processing."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def go_join(*elements: str) -> str:
    """Go's ``filepath.Join`` on Unix: join the non-empty elements with ``/`` and clean; "" if all are empty."""
    kept = [e for e in elements if e]
    if not kept:
        return ""
    return go_clean("/".join(kept))


def socket_address(containerd_address: str, namespace: str, group: str, socket_dir: str = SOCKET_DIR) -> str:
    """The ``unix://`` address a shim of (containerd, namespace, group) listens on."""
    digest = sha256(go_join(containerd_address, namespace, group).encode("utf-8")).hexdigest()
    return f"{UNIX_SCHEME}{go_join(socket_dir)}/{digest}"


def socket_path(address: str) -> str:
    """The filesystem path of a ``unix://`` address; anything else is refused (no abstract sockets)."""
    if not address.startswith(UNIX_SCHEME) or not address[len(UNIX_SCHEME):].startswith("/"):
        raise ValueError(f"not a unix:// socket path address: {address!r}")
    path = address[len(UNIX_SCHEME):]
    if len(path.encode()) > SOCKET_PATH_LIMIT:
        raise ValueError(f"socket path {path!r} is longer than {SOCKET_PATH_LIMIT} bytes")
    return path


def grouping_id(annotations: dict[str, object], container_id: str) -> str:
    """The first non-empty string among GROUP_ANNOTATIONS, else the container id."""
    for key in GROUP_ANNOTATIONS:
        value = annotations.get(key)
        if isinstance(value, str) and value:
            return value
    return container_id


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
