"""Container, exec and namespace ids: containerd's identifier rule, checked before an id names anything.

Rules (containerd ``identifiers.Validate``: ``identifiers/validate.go`` at v1.6.20, ``pkg/identifiers`` at 2.x):
- A valid id has 1 to MAX_LENGTH (76) characters: runs of ASCII letters and digits joined by single ``.``, ``_``
  or ``-``, i.e. ``^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$``. So it has no ``/``, no NUL, no ``..``, does not
  start with a dot, and is safe as one path component.
- containerd applies the same rule to container ids (its metadata store), task ids (the runtime's bundle),
  exec ids (the runtime's Exec) and namespaces, so nothing containerd sends is refused. The checks here stop
  whatever else reaches a shim's socket or command line before an id becomes part of a path (a pid file, a
  runtime's state directory, a runtime root) or of a runtime's command line.
- ``problem`` answers a sentence instead of raising: the callers raise their own errors (``start`` and
  ``delete`` fail with it, the daemon answers INVALID_ARGUMENT, shim/occupancy.py).
- Standard library only, and no ``re`` (critical path: ``start`` and ``delete``, see stdlib_lite.py).
"""

from __future__ import annotations

__all__ = ["MAX_LENGTH", "PATTERN", "problem"]

MAX_LENGTH = 76
PATTERN = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_SEPARATORS = frozenset("._-")


def problem(value: str, what: str = "id") -> str:
    """"" if ``value`` is a valid identifier, else why not (a sentence naming ``what``)."""
    if not value:
        return f"{what} must not be empty"
    if len(value) > MAX_LENGTH:
        return f"{what} {value[:MAX_LENGTH]!r}... is longer than {MAX_LENGTH} characters"
    previous_is_alnum = False
    for char in value:
        if char in _ALNUM:
            previous_is_alnum = True
        elif char in _SEPARATORS and previous_is_alnum:
            previous_is_alnum = False
        else:
            break
    else:
        if previous_is_alnum:
            return ""
    return f"{what} {value!r} must match {PATTERN} (containerd's identifier rule)"
