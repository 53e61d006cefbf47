"""Which tasks a daemon serves, seen from the Task API: the task table's outline, reservations, idle exit.

Rules:
- ``wrap`` puts every Task method of a shim behind the same three steps, so no shim has to do them: the request's
  ``id`` becomes ``daemon_log.current_task`` for the handler (and every trio task it starts); a Create that
  succeeds makes its id a live task (``created``: its log FIFO opened, its reservation used up); a Delete of the
  init (empty exec_id) that succeeds ends it (``deleted``). Requests are otherwise passed through untouched.
- Before those steps, the request's ``id`` and ``exec_id`` are checked against containerd's identifier rule
  (shim/ids.py): a non-empty one that breaks it, a Create without an id or an Exec without an exec_id is answered
  INVALID_ARGUMENT and never reaches the handler, so no shim builds a path (``<bundle>/<exec_id>.pid``, a
  runtime's state directory) from it. Empty ids pass (``ctr shim`` sends Shutdown and State without one); the
  handler decides. A Reserve for an invalid id is refused the same way.
- Sharing (shim/sharing.py): ``reserve`` answers a starting container. It accepts an id that is already live or
  reserved, refuses once the daemon is closing, and refuses when live tasks + unexpired reservations reach
  ``max_tasks``; otherwise it holds a place for RESERVATION_TTL. A Create is served even without a reservation
  (containerd 2.3+ may attach a pod's containers to the sandbox's daemon without a start of their own), and
  while it runs it holds a place of its own, so the daemon never leaves under a Create in flight. A Create that
  fails frees its id's place at once: containerd never retries it (it deletes the task and starts afresh).
- Idle exit (sharing only, ``run``): once no task is live and no reservation is held for ``idle_exit`` seconds,
  the daemon closes (every later reservation is refused) and shuts down. Without sharing, the daemon leaves on
  ``Daemon.shutdown``, and ``run`` only watches for the first Create: a daemon that none has reached
  ``unused_exit`` seconds (UNUSED_EXIT) after it started leaves the same way. containerd starts a shim, then may
  fail on its own before any Create (1.6 cannot write ``shim-binary-path``, 2.x ``bootstrap.json``, in a full
  bundle) and never shuts that shim down, nor runs its ``delete``; the Go shim then stays for ever. Once a Create
  came, succeeded or not, only ``Daemon.shutdown`` ends the daemon (containerd follows a failed one with Delete
  and Shutdown).
- Everything here runs in the daemon's one trio thread: the checks and the changes of one call never interleave
  with another's.
"""
from __future__ import annotations

import logging
import math

import trio

from shim import ids, sharing
from shim.daemon_log import TaskLogs, current_task
from shim.errors import InvalidArgument
from ttrpc.server import Method

__all__ = ["Occupancy", "UNUSED_EXIT"]

log = logging.getLogger(__name__)

UNUSED_EXIT = 60.0  # seconds from a daemon's start to its first Create (containerd sends it right after start)


def request_problem(method: str, request) -> str:
    """"" when the request's ids may name paths (see the module rules), else why not."""
    for field, what, required in (("id", "container id", method == "Create"),
                                  ("exec_id", "exec id", method == "Exec")):
        value = getattr(request, field, "")
        if value or required:
            why = ids.problem(value, what)
            if why:
                return f"{method}: {why}"
    return ""


class Occupancy:
    """The live tasks, reservations and idle exit of one daemon (see the module rules)."""

    def __init__(self, first_task: str, task_logs: TaskLogs | None, shared: sharing.Sharing | None,
                 on_idle, stopping=lambda: False, unused_exit: float = UNUSED_EXIT) -> None:
        self.tasks: dict[str, str] = {}         # live task id -> bundle
        self.reservations: dict[str, float] = {}  # reserved id -> trio.current_time() deadline
        self.closing = False
        self.used = False                       # a Create has come
        self._unused_exit = unused_exit
        self._logs = task_logs
        self._shared = shared
        self._on_idle = on_idle                 # called once the idle exit is due
        self._stopping = stopping               # the daemon leaves for another reason (SIGTERM): refuse too
        self._changed = trio.Event()
        if shared is not None and first_task:
            self._first = first_task            # reserved once trio runs (``run``)
        else:
            self._first = ""

    # -- the Task API's view --------------------------------------------------------------------------
    def wrap(self, methods: dict[str, Method]) -> dict[str, Method]:
        """``methods`` with each handler behind the steps of the module rules."""
        return {name: Method(m.request_type, self._wrapped(name, m.handler)) for name, m in methods.items()}

    def _wrapped(self, name: str, handler):
        async def call(ctx, request):
            why = request_problem(name, request)
            if why:
                raise InvalidArgument(why)
            task = getattr(request, "id", "")
            token = current_task.set(task)
            if name == "Create" and not self.used:
                self.used = True
                self._touch()
            held = name == "Create" and task not in self.tasks
            if held:  # a Create in flight holds its place, reserved or not: the daemon must not leave under it
                self.reservations[task] = math.inf
                self._touch()
            try:
                response = await handler(ctx, request)
            except BaseException:
                if held:  # containerd never retries a failed Create: its place is free at once
                    self.reservations.pop(task, None)
                    self._touch()
                raise
            finally:
                current_task.reset(token)
            if name == "Create":
                self.created(task, request.bundle)
            elif name == "Delete" and not request.exec_id:
                self.deleted(task)
            return response
        return call

    def created(self, task: str, bundle: str) -> None:
        """``task`` is live (its Create succeeded)."""
        self.reservations.pop(task, None)
        self.tasks[task] = bundle
        if self._logs is not None:
            self._logs.open(task, bundle)
        self._touch()

    def deleted(self, task: str) -> None:
        """``task`` is gone (its Delete succeeded)."""
        self.tasks.pop(task, None)
        if self._logs is not None:
            self._logs.close_task(task)
        self._touch()

    # -- sharing --------------------------------------------------------------------------------------
    def _expire(self) -> None:
        now = trio.current_time()
        for task, deadline in list(self.reservations.items()):
            if deadline <= now:
                del self.reservations[task]
                log.warning("reservation of %s expired: no Create within %.0f s", task, sharing.RESERVATION_TTL)

    def reserve(self, task: str) -> sharing.ReserveResponse:
        """Hold a place for ``task`` if there is one (see the module rules)."""
        if self.closing or self._stopping():
            return sharing.ReserveResponse(False, "shutting down")
        self._expire()
        if task in self.tasks or task in self.reservations:
            return sharing.ReserveResponse(True)
        limit = self._shared.max_tasks if self._shared is not None else 1
        used = len(self.tasks) + len(self.reservations)
        if used >= limit:
            return sharing.ReserveResponse(False, f"full: {used} of {limit} tasks")
        self.reservations[task] = trio.current_time() + sharing.RESERVATION_TTL
        self._touch()
        return sharing.ReserveResponse(True)

    def shard_methods(self) -> dict[str, Method]:
        """The ``pyshim.shard.v1.Shard`` service of a sharing daemon."""
        async def handle(ctx, request: sharing.ReserveRequest) -> sharing.ReserveResponse:
            why = ids.problem(request.id, "container id")
            if why:
                return sharing.ReserveResponse(False, why)
            return self.reserve(request.id)
        return {sharing.METHOD: Method(sharing.ReserveRequest, handle)}

    @property
    def idle(self) -> bool:
        return not self.tasks and not self.reservations

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Idle exit of a sharing daemon, unused exit of any other (see the module rules)."""
        if self._shared is None:
            task_status.started()
            with trio.move_on_after(self._unused_exit):
                while not self.used:
                    await self._changed.wait()
                return
            self.closing = True
            log.warning("no Create within %.0f s of the start: exiting (containerd gave up on this shim)",
                        self._unused_exit)
            self._on_idle()
            return
        if self._first:
            self.reserve(self._first)
        task_status.started()
        while True:
            self._expire()
            if not self.idle:
                next_expiry = min(self.reservations.values(), default=None)
                with trio.move_on_at(next_expiry if next_expiry is not None else float("inf")):
                    await self._changed.wait()
                continue
            with trio.move_on_after(self._shared.idle_exit) as idle_wait:
                await self._changed.wait()
            if idle_wait.cancelled_caught and self.idle:
                self.closing = True
                log.info("no task for %.0f s: exiting", self._shared.idle_exit)
                self._on_idle()
                return
