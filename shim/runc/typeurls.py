"""The protobuf type names of the runtime options and details pyshim exchanges with containerd, in one place.

Rules:
- A type URL may carry a ``type.googleapis.com/``-style prefix; only the last path component counts
  (``type_name``), as containerd's typeurl registry matches them.
- Standard library only (``start`` and ``-info`` read options).
"""

from __future__ import annotations

RUNC_OPTIONS = "containerd.runc.v1.Options"               # ctr --runc-* flags, CRI runc-style options, 2.x
RUNTIME_OPTIONS = "runtimeoptions.v1.Options"             # config_path / config_body (CRI)
LEGACY_CREATE_OPTIONS = "containerd.linux.runc.CreateOptions"  # 1.6/1.7 clients, runtimes not named runc
CHECKPOINT_OPTIONS = "containerd.runc.v1.CheckpointOptions"
PROCESS_DETAILS = "containerd.runc.v1.ProcessDetails"


def type_name(type_url: str) -> str:
    """The message name of a type URL (its last path component)."""
    return type_url.rsplit("/", 1)[-1]
