"""``python -P -m shim.forkserver DIR [padding]``: run the fork server (shim/forkserver/server.py)."""
import sys

from shim.forkserver.server import main

sys.exit(main(sys.argv[1:]))
