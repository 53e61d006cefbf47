#!/usr/bin/env python3
"""Download or build, and cache, the containerd versions the integration tests use (tests/integration/harness/dist.py).

Usage: python tools/fetch_containerd.py [VERSION ...]     (default: every version in dist.VERSIONS)

1.7.24 and 2.1.9 come from Debian's archive; 2.2.9 and 2.4.2 are built from Go modules (minutes, once per
machine).  Prints one line per version: the version, the directory holding its binaries and where they came
from, or why it is unavailable, and how long obtaining it took.  Exits 1 if any requested version is
unavailable.  Needs root (writes /var/cache/pyshim, or $PYSHIM_CACHE).
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.harness import dist  # noqa: E402  (after the path setup above)


def main(argv: list[str]) -> int:
    versions = argv or list(dist.VERSIONS)
    failed = 0
    for version in versions:
        start = time.monotonic()
        try:
            d = dist.fetch(version)
        except dist.Unavailable as exc:
            print(f"containerd {version}: UNAVAILABLE: {exc}", flush=True)
            failed += 1
        else:
            print(f"containerd {version}: {d.bindir} ({dist.provenance(version)}; "
                  f"{time.monotonic() - start:.1f} s now)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
