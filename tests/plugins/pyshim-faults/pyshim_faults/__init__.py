"""pyshim-faults: a test-only runtime backend from outside pyshim that wraps pyshim's runc driver and injects a
fault into the one container that asks for it.

Rules:
- The container is chosen by the OCI annotation ``io.pyshim.test.fault`` in its bundle's config.json, read in
  every backend call from the call's own ``spec.bundle`` / ``ref.bundle``: the fault follows that container,
  whatever else the daemon serves. A container without the annotation (or with an empty value), or whose
  config.json cannot be read, is served by the wrapped runc, unchanged.
- The value is ``<kind>:<call>``, ``<call>`` one of the backend's methods (create, start, exec, kill, delete,
  state, ps, pause, resume, update, checkpoint, restore); only that call is faulted, every other call of the
  container goes to runc:
  - ``raise:<call>``: the call raises a plain ``RuntimeError`` (deliberately not a runtime.errors.BackendError:
    a bug in a plugin) whose text is ``pyshim-faults: injected fault raise:<call> in container <id>``, before
    runc runs;
  - ``hang:<call>``: the call logs ``pyshim-faults: io.pyshim.test.fault=hang:<call> in container <id> hangs``
    (a warning: containerd's log shows it) and awaits forever (until the daemon cancels it); runc never runs.
- Any other value makes every call of that container raise a RuntimeError naming the value: a misspelt fault
  must not pass for a healthy container.

Options (the ``[backends.<name>]`` table of pyshim.toml, ``type = "faults"``):
- ``runc`` (table): options for the wrapped runc backend (binary_name, root, ...).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import trio

from runtime import builtin
from runtime.errors import InvalidOptions

log = logging.getLogger(__name__)

NAME = "faults"
ANNOTATION = "io.pyshim.test.fault"
CALLS = ("create", "start", "exec", "kill", "delete", "state", "ps", "pause", "resume", "update", "checkpoint",
         "restore")
KINDS = ("raise", "hang")


def fault_of(bundle: str) -> str:
    """The annotation's value in ``bundle``'s config.json ("" when absent or unreadable)."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return ""
    value = (doc.get("annotations") or {}).get(ANNOTATION, "")
    return value if isinstance(value, str) else repr(value)


class Faults:
    def __init__(self, inner) -> None:
        self.name = NAME
        self.capabilities = inner.capabilities
        self.cfg = inner.cfg          # lets pyshim's `delete` force-delete runc state after a shim crash
        self._inner = inner

    async def _inject(self, call: str, container_id: str, bundle: str) -> None:
        fault = fault_of(bundle)
        if not fault:
            return
        kind, _, target = fault.partition(":")
        if kind not in KINDS or target not in CALLS:
            raise RuntimeError(f"pyshim-faults: bad annotation {ANNOTATION}={fault!r} in container {container_id} "
                               f"(expected <{'|'.join(KINDS)}>:<call>, call one of {', '.join(CALLS)})")
        if target != call:
            return
        if kind == "raise":
            raise RuntimeError(f"pyshim-faults: injected fault {fault} in container {container_id}")
        log.warning("pyshim-faults: %s=%s in container %s hangs", ANNOTATION, fault, container_id)
        await trio.sleep_forever()


def _faulty(call: str):
    async def method(self: Faults, target, *args, **kwargs):
        # the first argument of every call is a CreateSpec, ExecSpec, RestoreSpec or ContainerRef
        await self._inject(call, target.id, target.bundle)
        return await getattr(self._inner, call)(target, *args, **kwargs)
    method.__name__ = method.__qualname__ = call
    return method


for _call in CALLS:
    setattr(Faults, _call, _faulty(_call))


def factory(config: Mapping[str, Any], launcher, namespace: str) -> Faults:
    unknown = sorted(set(config) - {"runc"})
    if unknown:
        raise InvalidOptions(NAME, f"unknown option {unknown[0]!r} (known: runc)")
    runc_options = config.get("runc", {})
    if not isinstance(runc_options, Mapping):
        raise InvalidOptions(NAME, "option 'runc' must be a table of runc options")
    return Faults(builtin.runc(runc_options, launcher, namespace))
