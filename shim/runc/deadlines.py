"""Deadlines on backend calls: no call pyshim makes to a container's runtime backend waits for ever.

Rules:
- ``Deadlined`` wraps the RuntimeBackend a container gets at Create (shim/runc/backend_factory.py). Each call of
  ``runtime.base.REQUIRED_METHODS`` runs under ``trio.fail_after`` with its own deadline (shim/runc/config.py
  ``call_timeouts``). On expiry the call is cancelled where it waits: an OCI CLI backend's runtime command is
  then stopped with its whole process group and reaped by the launcher (shim/reaper.py), a plugin's coroutine is
  cancelled. ``runtime.errors.CallTimedOut`` is raised instead, naming the call, the container, the deadline and
  the setting; the task code maps it to DEADLINE_EXCEEDED (shim/runc/task/errmap.py) like any BackendError, and
  the container's state is what it was before the call (a retry, or kill and delete, may follow).
- The deadline is per backend call. A request's own deadline (containerd's TimeoutNano) still applies around
  it, as it does for runc.v2, whose runtime calls have no other bound; ``inf`` restores that behaviour.
- Every other attribute (name, capabilities, cfg, ...) is the wrapped backend's: capability checks and
  pyshim.json (``cleanup_info``) see through the wrapper. ``inner`` is the wrapped backend.
"""
from __future__ import annotations

from collections.abc import Mapping

import trio

from runtime.base import REQUIRED_METHODS
from runtime.errors import CallTimedOut


class Deadlined:
    """A backend whose every call has a deadline (module rules)."""

    def __init__(self, inner, timeouts: Mapping[str, float], source: str) -> None:
        self.inner = inner
        self._timeouts = timeouts
        self._source = source  # where the timeouts came from, for the error message

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _deadlined(call: str):
    async def method(self: Deadlined, target, *args, **kwargs):
        # the first argument of every call is a CreateSpec, ExecSpec, RestoreSpec or ContainerRef
        seconds = self._timeouts[call]
        try:
            with trio.fail_after(seconds):
                return await getattr(self.inner, call)(target, *args, **kwargs)
        except trio.TooSlowError:
            raise CallTimedOut(call, target.id, seconds,
                               f"call_timeouts.{call} in pyshim config {self._source}") from None
    method.__name__ = method.__qualname__ = call
    return method


for _call in REQUIRED_METHODS:
    setattr(Deadlined, _call, _deadlined(_call))
