"""containerd's shim failpoint annotations, per task, in front of a shim's Task methods.

containerd's test shim ``containerd-shim-runc-fp-v1`` (integration/failpoint/cmd/containerd-shim-runc-fp-v1 at
v1.7+) reads the annotations ``io.containerd.runtime.v2.shim.failpoint.<Method>`` of the ``config.json`` in its
cwd once, when its daemon starts (so the bundle of the task whose start made the daemon), and evaluates the
failpoint of ``<Method>`` (shim/failpoint.py) before every call of that Task method, whichever task it names.

Rules:
- Per task, not per daemon: a daemon may serve a pod or, shared, unrelated containers (shim/sharing.py), and a
  failpoint must only touch the task that asked for it. A Create reads the annotations of its own bundle's
  config.json, before its handler runs, when the shim's ``enabled(request)`` says failpoints apply to it
  (configuration, off by default); the table it parses (method name -> Failpoint, with its own counts) is
  consulted for every later call whose ``id`` names that task: Create itself, Start, Kill, Delete, Shutdown, ...
  Calls without an id, or for a task without failpoints, pass untouched.
- A Create replaces the task's table (a reused id starts afresh). A task's table outlives its Delete, since
  containerd sends Shutdown after it, and is forgotten once RETIRED_MAX tasks were deleted after it.
- A malformed annotation fails that Create with INVALID_ARGUMENT naming it, before the handler runs (Go's shim
  cannot start its daemon at all). A method name that is no Task method is accepted and never fires, as in Go.
  A config.json that cannot be read gives no failpoints: the Create handler reports it.
- Firing a term: ``off`` lets the call through; ``error(msg)`` answers UNKNOWN with ``msg`` (Go returns a plain
  error, which ttrpc sends as Unknown) and the handler never runs; ``delay(ms)`` sleeps, then the call goes on;
  ``panic(msg)`` kills the daemon as a Go panic does: ``panic: msg`` to the log and stderr, exit status 2, no
  clean-up, so every task the daemon serves loses it (containerd then runs ``delete`` for each).
- A delay is part of the call: it ends early when the call is cancelled (its deadline passes, or containerd
  closes the connection). Go's ``time.Sleep`` runs out regardless, but the handler after it then runs with a
  cancelled context, so such a call fails there too.
- Everything runs in the daemon's one trio thread; the wrapper sits inside shim/occupancy.py's (ids are checked
  and the task's log is chosen before a failpoint fires).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable

import trio

from shim import failpoint
from shim.bundle import read_annotations
from shim.errors import InvalidArgument, Unknown
from ttrpc.server import Method

__all__ = ["PREFIX", "Failpoints", "crash"]

log = logging.getLogger(__name__)

PREFIX = "io.containerd.runtime.v2.shim.failpoint."
RETIRED_MAX = 256
PANIC_EXIT = 2  # a Go program's exit status after an unrecovered panic


def crash(message: str) -> None:
    """Die as a Go program does on ``panic(message)``: no clean-up, exit status 2."""
    log.critical("panic: %s", message)
    try:
        os.write(2, f"panic: {message}\n".encode("utf-8", "replace"))
    except OSError:
        pass
    os._exit(PANIC_EXIT)


def parse_annotations(annotations: dict[str, object]) -> dict[str, failpoint.Failpoint]:
    """Method name -> Failpoint for every failpoint annotation; InvalidArgument for a malformed one."""
    table = {}
    for key, value in annotations.items():
        if not key.startswith(PREFIX):
            continue
        method = key[len(PREFIX):]
        if not isinstance(value, str):
            raise InvalidArgument(f"failed to parse failpoint annotation {key}: not a string")
        try:
            table[method] = failpoint.parse(value)
        except failpoint.FailpointSyntaxError as e:
            raise InvalidArgument(f"failed to parse failpoint annotation {key}={value!r}: {e}") from None
    return table


class Failpoints:
    """The failpoint tables of one daemon's tasks, and the wrapper that consults them (see the module rules)."""

    def __init__(self, enabled: Callable[[object], bool], crash: Callable[[str], None] = crash) -> None:
        self._enabled = enabled      # the shim's say, per CreateTaskRequest
        self._crash = crash
        self._tables: dict[str, dict[str, failpoint.Failpoint]] = {}
        self._retired: OrderedDict[str, dict[str, failpoint.Failpoint]] = OrderedDict()

    def wrap(self, methods: dict[str, Method]) -> dict[str, Method]:
        """``methods`` with each handler behind its task's failpoint."""
        return {name: Method(m.request_type, self._wrapped(name, m.handler)) for name, m in methods.items()}

    def table(self, task: str) -> dict[str, failpoint.Failpoint]:
        """The failpoints of ``task`` ({} when it has none)."""
        found = self._tables.get(task)
        if found is None:
            found = self._retired.get(task, {})
        return found

    def load(self, request) -> None:
        """At a Create: (re)read the task's failpoints from its bundle, when they apply to it."""
        task = request.id
        self._tables.pop(task, None)
        self._retired.pop(task, None)
        if not self._enabled(request):
            return
        try:
            annotations = read_annotations(request.bundle)
        except (OSError, ValueError):
            return  # the Create handler reports the bundle's problem
        table = parse_annotations(annotations)
        if table:
            self._tables[task] = table
            log.info("failpoints of task %s: %s", task,
                     ", ".join(f"{m}={fp.marshal()}" for m, fp in sorted(table.items())))

    def _retire(self, task: str) -> None:
        table = self._tables.pop(task, None)
        if table is None:
            return
        self._retired[task] = table
        while len(self._retired) > RETIRED_MAX:
            self._retired.popitem(last=False)

    async def fire(self, name: str, task: str) -> None:
        """Evaluate ``task``'s failpoint of method ``name``; raises Unknown for an error term."""
        fp = self.table(task).get(name)
        term = fp.next() if fp is not None else None
        if term is None:
            return
        log.info("failpoint %s of task %s fires %s (now %s)", name, task, term.marshal(), fp.marshal())
        if term.kind == failpoint.ERROR:
            raise Unknown(term.message)
        if term.kind == failpoint.DELAY:
            await trio.sleep(term.seconds)
        elif term.kind == failpoint.PANIC:
            self._crash(term.message)

    def _wrapped(self, name: str, handler):
        async def call(ctx, request):
            task = getattr(request, "id", "")
            if name == "Create":
                self.load(request)
            if task:
                await self.fire(name, task)
            response = await handler(ctx, request)
            if name == "Delete" and not request.exec_id:
                self._retire(task)
            return response
        return call
