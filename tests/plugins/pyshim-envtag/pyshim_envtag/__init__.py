"""pyshim-envtag: a runtime backend from outside pyshim that wraps pyshim's runc driver.

What it adds, observable from outside the shim: every container it creates gets the environment variable
``PYSHIM_BACKEND=envtag:<tag>`` in its process and the annotation ``io.pyshim.envtag=<tag>`` in its bundle's
config.json. Everything else is runc, unchanged.

Options (the ``[backends.<name>]`` table of pyshim.toml, ``type = "envtag"``):
- ``tag`` (string, default "envtag"): the value added;
- ``runc`` (table): options for the wrapped runc backend (binary_name, root, ...).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from runtime import builtin
from runtime.base import CreateSpec
from runtime.errors import InvalidOptions

NAME = "envtag"
DELEGATED = ("start", "exec", "kill", "delete", "state", "ps", "pause", "resume", "update", "checkpoint", "restore")


class EnvTag:
    def __init__(self, inner, tag: str) -> None:
        self.name = NAME
        self.capabilities = inner.capabilities
        self.cfg = inner.cfg          # lets pyshim's `delete` force-delete runc state after a shim crash
        self.tag = tag
        self._inner = inner
        for method in DELEGATED:
            setattr(self, method, getattr(inner, method))

    async def create(self, spec: CreateSpec) -> int:
        path = os.path.join(spec.ref.bundle, "config.json")
        with open(path, "rb") as f:
            doc = json.load(f)
        process = doc.setdefault("process", {})
        process["env"] = [*process.get("env", []), f"PYSHIM_BACKEND=envtag:{self.tag}"]
        doc.setdefault("annotations", {})["io.pyshim.envtag"] = self.tag
        tmp = path + ".envtag"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
        return await self._inner.create(spec)


def factory(config: Mapping[str, Any], launcher, namespace: str) -> EnvTag:
    unknown = sorted(set(config) - {"tag", "runc"})
    if unknown:
        raise InvalidOptions(NAME, f"unknown option {unknown[0]!r} (known: runc, tag)")
    tag = config.get("tag", NAME)
    if not isinstance(tag, str) or not tag:
        raise InvalidOptions(NAME, "option 'tag' must be a non-empty string")
    runc_options = config.get("runc", {})
    if not isinstance(runc_options, Mapping):
        raise InvalidOptions(NAME, "option 'runc' must be a table of runc options")
    return EnvTag(builtin.runc(runc_options, launcher, namespace), tag)
