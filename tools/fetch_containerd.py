#!/usr/bin/env python3
"""Download and cache the containerd versions the integration tests use (see tests/integration/harness/dist.py).

Usage: python tools/fetch_containerd.py [VERSION ...]     (default: all of 1.6.20, 1.7.24, 2.1.9)

Prints one line per version: the version, the directory holding its binaries, or why it is unavailable.
Exits 1 if any requested version is unavailable.  Needs root (writes /var/cache/pyshim, or $PYSHIM_CACHE).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.harness import dist  # noqa: E402  (after the path setup above)


def main(argv: list[str]) -> int:
    versions = argv or list(dist.VERSIONS)
    failed = 0
    for version in versions:
        try:
            d = dist.fetch(version)
        except dist.Unavailable as exc:
            print(f"containerd {version}: UNAVAILABLE: {exc}")
            failed += 1
        else:
            print(f"containerd {version}: {d.bindir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
