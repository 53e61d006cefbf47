"""What goes into the test VM image, and the cache key that names a built image.

Rules:
- The image is made of Debian bookworm packages (``GUEST_PACKAGES``, installed by debootstrap's minbase),
  Debian's cloud kernel (the package the ``linux-image-cloud-amd64`` metapackage depends on today), and the
  project's PyPI dependencies (``dependencies`` plus the ``test`` extra of pyproject.toml) pip-installed into
  a venv.  The project's own code is *not* in the image: it travels with every run (payload.py).
- ``cache_key`` hashes everything that decides the image's content: the layout version, the package list, the
  kernel package name, the pip requirements and the bytes of the build inputs (``BUILD_INPUTS``: the build
  script and the guest's init scripts).  Change any of them and the next run builds a new image.
- Pure functions only (no subprocess, no file writes); build.py does the work.
"""
from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

LAYOUT = 1  # bump when the meaning of the cached files changes
SUITE = "bookworm"
KERNEL_META = "linux-image-cloud-amd64"
# iptables: what a container host has (CNI, and CRIU locks a container's own netns with iptables-restore)
GUEST_PACKAGES = (
    "containerd", "runc", "busybox-static", "criu", "python3", "kmod", "iproute2", "procps", "iptables",
)
# venv inside the guest, created with the guest's /usr/bin/python3 (3.11, like the host's)
GUEST_VENV = "/opt/pyshim/venv"
GUEST_SITE = f"{GUEST_VENV}/lib/python3.11/site-packages"
HERE = Path(__file__).resolve().parent
BUILD_INPUTS = ("build.py", "spec.py", "guest/vminit", "guest/initramfs-init")
# The kernel's modules the initramfs loads, in dependency order, to reach /dev/vda (ext4 is built in).
INITRAMFS_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
                     "virtio_blk")


@dataclass(frozen=True)
class ImageSpec:
    packages: tuple[str, ...]
    kernel_package: str
    requirements: tuple[str, ...]
    inputs_digest: str
    suite: str = SUITE

    def key(self) -> str:
        return cache_key(self)


def cache_key(spec: ImageSpec) -> str:
    """A short, stable name for the image ``spec`` describes (order of packages/requirements irrelevant)."""
    doc = {
        "layout": LAYOUT,
        "suite": spec.suite,
        "packages": sorted(spec.packages),
        "kernel": spec.kernel_package,
        "requirements": sorted(spec.requirements),
        "inputs": spec.inputs_digest,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def inputs_digest(files: dict[str, bytes]) -> str:
    """sha256 over the (name, content) pairs of the build inputs, independent of dict order."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).hexdigest().encode() + b"\n")
    return h.hexdigest()


def read_inputs(base: Path = HERE) -> dict[str, bytes]:
    return {name: (base / name).read_bytes() for name in BUILD_INPUTS}


def requirements(pyproject_text: str) -> tuple[str, ...]:
    """The project's runtime dependencies plus its ``test`` extra, as pip requirement strings."""
    project = tomllib.loads(pyproject_text)["project"]
    deps = list(project.get("dependencies", []))
    deps += project.get("optional-dependencies", {}).get("test", [])
    return tuple(deps)


_DEPENDS = re.compile(r"^\s*Depends:\s*(linux-image-\S+)\s*$", re.M)


def kernel_package(depends_output: str) -> str | None:
    """The concrete kernel package from ``apt-cache depends linux-image-cloud-amd64`` output."""
    m = _DEPENDS.search(depends_output)
    return m.group(1) if m else None


def kernel_release(package: str) -> str:
    """``linux-image-6.1.0-56-cloud-amd64`` -> ``6.1.0-56-cloud-amd64`` (the /lib/modules directory name)."""
    prefix = "linux-image-"
    if not package.startswith(prefix) or package.endswith("-unsigned"):
        raise ValueError(f"not a kernel image package: {package}")
    return package[len(prefix):]


def mirror(sources: list[tuple[str, str]]) -> str:
    """The Debian mirror for ``SUITE`` from the host's apt sources: ``[(file name, text), ...]`` in both the
    one-line (``deb URI suite ...``) and the deb822 (``URIs:``/``Suites:``) formats; deb.debian.org if none."""
    for name, text in sources:
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                    return fields.get("URIs", "").split()[0].rstrip("/")
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                    return parts[1].rstrip("/")
    return "http://deb.debian.org/debian"
