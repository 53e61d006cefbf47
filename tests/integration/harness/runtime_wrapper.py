"""A runtime binary for fault injection: runc, except for one armed call of one container.

Configured as the runtime binary of a container (pyshim: ``binary_name`` in its pyshim.toml, or the runc options'
``BinaryName``; runc.v2: ``ctr run --runc-binary``), the wrapper script passes every call to runc unchanged, except
the first call of the armed subcommand (``create``, ``exec``, ``delete``...) naming the wrapper's container. That
call writes the wrapper's pid to ``pidfile`` and then, by ``mode``:
- ``sleep``: becomes ``sleep 600`` (exec: the runtime process itself hangs);
- ``hang``:  runs ``sleep 600`` as a child and waits for it (a hung runtime that forked a helper: only a kill of the
  whole process group leaves nothing behind);
- ``block``: waits until ``release()`` is called, then runs runc (a slow call that completes);
- ``segv``:  dies of SIGSEGV (a crashing runtime).

Rules: arming is a file read by the wrapper at each call, so a test arms one call at a time (``arm``) and the next
call of that subcommand after the armed one is runc again; the wrapper never matches another container. The
faulted call and its helpers run programs from the wrapper's own directory (the script, a link to ``sleep``), so
``leftovers`` finds exactly them by their command line, however they were reparented.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from . import procs

MODES = ("sleep", "hang", "block", "segv")
ACTIONS = {
    "sleep": 'exec "$DIR/sleep" 600',
    "hang": '"$DIR/sleep" 600 &\nwait',
    "block": 'while [ ! -e "$DIR/go" ]; do "$DIR/sleep" 0.02; done',
    "segv": "kill -SEGV $$",
}
SCRIPT = """#!/bin/sh
# runc, except the armed call of container {cid} (tests/integration/harness/runtime_wrapper.py)
DIR="{dir}"
op=
hit=
for a in "$@"; do
  case "$a" in
    create|start|exec|kill|delete|state|ps|pause|resume|update|checkpoint|restore|events) [ -z "$op" ] && op=$a ;;
  esac
  [ "$a" = "{cid}" ] && hit=1
done
if [ -n "$op" ] && [ -n "$hit" ] && [ "$(cat "$DIR/armed" 2>/dev/null)" = "$op" ] && rm "$DIR/armed" 2>/dev/null; then
  echo $$ > "$DIR/pid.tmp" && mv "$DIR/pid.tmp" "$DIR/pid"
  {action}
fi
exec "{runc}" "$@"
"""


class RuntimeWrapper:
    """The wrapper of container ``cid`` in directory ``directory`` (created), faulting by ``mode``."""

    def __init__(self, directory: Path, cid: str, mode: str, runc: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {MODES}")
        runc, sleep = runc or shutil.which("runc"), shutil.which("sleep")
        if runc is None or sleep is None:
            raise FileNotFoundError("runc and sleep must be on PATH")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cid = cid
        self.path = self.dir / "runc"
        (self.dir / "sleep").unlink(missing_ok=True)
        (self.dir / "sleep").symlink_to(sleep)
        self.path.write_text(SCRIPT.format(cid=cid, dir=self.dir, runc=runc, action=ACTIONS[mode]))
        self.path.chmod(0o755)

    def arm(self, op: str) -> None:
        """Fault the next ``op`` of the container (and only that one)."""
        for name in ("pid", "go"):
            (self.dir / name).unlink(missing_ok=True)
        (self.dir / "armed.tmp").write_text(op)
        os.replace(self.dir / "armed.tmp", self.dir / "armed")

    def pid(self) -> int:
        """The pid of the faulted call once it started, else 0."""
        try:
            return int((self.dir / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def wait_faulted(self, timeout: float = 60.0, still=lambda: True) -> int:
        """Until the armed call started (``still()`` must stay true meanwhile, e.g. the client still waits)."""
        deadline = time.monotonic() + timeout
        while not (pid := self.pid()):
            assert still(), "the faulted call's client ended before the call started"
            if time.monotonic() > deadline:
                raise AssertionError(f"the armed call of {self.cid} did not start within {timeout} s")
            time.sleep(0.02)
        return pid

    def release(self) -> None:
        """Let a ``block``ed call go on to runc."""
        (self.dir / "go").touch()

    def leftovers(self) -> list[procs.Proc]:
        """Live processes this wrapper started (the faulted call and its helpers)."""
        mine = (str(self.path), str(self.dir / "sleep"))
        return [p for p in procs.all_processes() if set(p.argv[:2]) & set(mine)]
