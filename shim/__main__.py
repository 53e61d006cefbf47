"""``python -m shim``: the same program as the ``containerd-shim-pyshim-v1`` console script."""

from shim.runc.main import main

raise SystemExit(main())
