"""``-info`` for pyshim: the OCI features document of the runtime the runtime options name.

Rules (containerd 2.1.9 ``core/runtime/v2/task_manager.go`` ``validateRuntimeFeatures``):
- The runtime binary: ``binary_name`` of a containerd.runc.v1.Options Any, else ``runc`` from $PATH.
- The features are the JSON document printed by ``<runtime> features``; when the runtime has no ``features``
  command (crun < 1.13, runc < 1.1), or prints something that is not a JSON object, there are none (None), as
  upstream omits them.
- Standard library only (containerd waits for ``-info``).
"""

from __future__ import annotations

import os

from shim.runc.typeurls import RUNC_OPTIONS, type_name
from ttrpc import wire

DEFAULT_RUNTIME = "runc"
FEATURES_TIMEOUT = 10.0


def runtime_binary(options: bytes) -> str:
    """``binary_name`` (field 6) of runc Options in the options Any, else DEFAULT_RUNTIME."""
    if options:
        type_url, value = wire.decode_any(options)
        if type_name(type_url) == RUNC_OPTIONS:
            return wire.get_string(wire.fields(value), 6) or DEFAULT_RUNTIME
    return DEFAULT_RUNTIME


def runtime_features(binary: str, timeout: float = FEATURES_TIMEOUT) -> bytes | None:
    """The JSON printed by ``<binary> features``, or None if the runtime cannot tell."""
    import json
    import subprocess

    from runtime.environ import for_runtime

    env = for_runtime(os.environ)
    try:
        done = subprocess.run([binary, "features"], stdin=subprocess.DEVNULL, capture_output=True,
                              env=env, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        if not isinstance(json.loads(done.stdout), dict):
            return None
    except ValueError:
        return None
    return done.stdout
