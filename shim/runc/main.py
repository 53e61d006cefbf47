"""Entry point of ``containerd-shim-pyshim-v1`` (the console script, and ``python -m shim``)."""

from __future__ import annotations

from shim.commands.run import run
from shim.runc.manager import MANAGER


def main(argv=None) -> int:
    """Run the pyshim shim binary; returns the exit status."""
    return run(MANAGER, argv)
