"""Entry point of ``containerd-shim-pyshim-v1`` (the console script, and ``python -m shim``).

Run under the name ``containerd-shim-runc-fp-v1`` (a symlink to the console script), it is the failpoint shim of
containerd's CRI tests instead (shim/runc/manager.py, FP_MANAGER).
"""

from __future__ import annotations

import os
import sys

from shim.commands.run import run
from shim.runc.manager import FAILPOINT_BINARY, FP_MANAGER, MANAGER


def main(argv=None) -> int:
    """Run the pyshim shim binary; returns the exit status."""
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    return run(FP_MANAGER if program == FAILPOINT_BINARY else MANAGER, argv)
