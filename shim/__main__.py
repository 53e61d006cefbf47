"""``python -m shim``: the same program as the ``containerd-shim-pyshim-v1`` console script."""

from shim.commands.main import main

raise SystemExit(main())
