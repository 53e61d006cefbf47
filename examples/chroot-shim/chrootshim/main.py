"""``containerd-shim-pychroot-v1``, the console script: the library's ``shim.run`` with this shim's Manager."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the shim binary (``start``, ``delete``, ``-v``, ``-info`` or the daemon); returns the exit status."""
    from shim import run

    from chrootshim.manager import MANAGER

    return run(MANAGER, argv)
