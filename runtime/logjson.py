"""Reading the error a runtime call wrote to its `--log <bundle>/log.json --log-format json` file.

Rules:
- The shim never truncates log.json, so an error from an earlier call may still be in it. A `LogCursor` is taken
  just before a call (it remembers the file size) and only what was appended after that offset is scanned; the last
  object whose level is "error" (or "fatal") wins, its `msg` stripped (as C16 getLastRuntimeError does, minus the
  stale-error problem). If the file shrank or was replaced, the whole file is scanned.
- The content is a sequence of JSON objects: runc and crun end each with a newline, runsc does not (objects are
  glued together `}{`), so decoding is by consecutive `raw_decode`, not by lines. Anything undecodable (garbage,
  an object still being written) is skipped up to the next `{`.
- At most `MAX_SCAN` bytes (the newest) are read, so a debug-level log cannot make error reporting slow.
- Plain blocking file reads: the file is local and small; this module has no async code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

MAX_SCAN = 1 << 20
_ERROR_LEVELS = frozenset({"error", "fatal"})


@dataclass(frozen=True)
class LogCursor:
    path: str
    offset: int
    inode: int | None

    @classmethod
    def at_end(cls, path: str) -> LogCursor:
        """A cursor after everything currently in `path` (offset 0 if the file does not exist yet)."""
        try:
            st = os.stat(path)
        except OSError:   # not there yet (or unreadable: last_error will say so)
            return cls(path, 0, None)
        return cls(path, st.st_size, st.st_ino)

    def last_error(self) -> str | None:
        """The msg of the last error record appended since the cursor was taken, or None.

        Raises OSError if the file exists but cannot be read (the caller reports that, as upstream does)."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return None
        with f:
            st = os.fstat(f.fileno())
            start = self.offset
            if st.st_size < start or (self.inode is not None and st.st_ino != self.inode):
                start = 0               # truncated or replaced: everything in it is new
            start = max(start, st.st_size - MAX_SCAN)
            f.seek(start)
            data = f.read(MAX_SCAN)
        return last_error_in(data.decode("utf-8", errors="replace"))


def last_error_in(text: str) -> str | None:
    """The stripped msg of the last JSON object in `text` with level error/fatal; garbage is skipped."""
    decoder = json.JSONDecoder()
    found: str | None = None
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict) and obj.get("level") in _ERROR_LEVELS:
            msg = obj.get("msg")
            if isinstance(msg, str):
                found = msg.strip()
        pos = text.find("{", end)
    return found
