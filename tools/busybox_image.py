#!/usr/bin/env python3
"""Build (or find in the cache) the busybox rootfs and OCI image the integration tests use.

Usage: python tools/busybox_image.py [--ref REF]

Prints the rootfs directory and the image tar (see tests/integration/harness/busybox.py); exits 1 with the
reason if busybox-static is not installed.  Import the tar with `ctr images import IMAGE.tar`.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.harness import busybox  # noqa: E402  (after the path setup above)
from tests.integration.harness.dist import Unavailable  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=busybox.IMAGE_REF, help="image reference (default %(default)s)")
    ns = ap.parse_args()
    try:
        bb = busybox.ensure(ns.ref)
    except Unavailable as exc:
        print(f"busybox: UNAVAILABLE: {exc}", file=sys.stderr)
        return 1
    print(f"rootfs: {bb.rootfs}")
    print(f"image:  {bb.image} ({bb.ref})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
