"""Build the test VM image from Debian packages and cache it under CACHE/vm/<key>/ (key: spec.cache_key).

Rules:
- Needs root (debootstrap, chroot) and the host packages debootstrap, cpio, e2fsprogs (install.sh).  Nothing
  is installed on the host: the kernel .deb is unpacked with ``dpkg -x``, the rootfs is debootstrap's.
- An image directory holds vmlinuz, initrd.img, rootfs.img and manifest.json (package versions, build
  times).  It is built in a temporary directory beside it and renamed into place under CACHE/vm/.lock, so
  concurrent callers never see half an image; a complete directory is never modified (qemu opens rootfs.img
  with snapshot=on).  After a successful build the other image directories are removed.
- Downloads are cached: the debs debootstrap fetched (CACHE/vm/debs), the kernel .deb (CACHE/vm/kernel),
  pip's wheels (pip's own cache).  ``apt-get update`` runs only when the host's lists do not know the kernel.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import spec as S

CACHE = Path(os.environ.get("PYSHIM_CACHE", "/var/cache/pyshim")) / "vm"
IMAGE_SIZE = "2G"  # sparse; the rootfs uses ~0.4 GB, the rest is room for containers' snapshots
HOST_PYTHON = "/usr/bin/python3"  # Debian's 3.11, the same as the guest's, so wheels (protobuf's upb) match
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt/archives",
        "var/lib/apt/lists")


class BuildError(Exception):
    """The image could not be built; the message says which step and shows its output."""


@dataclass(frozen=True)
class Image:
    directory: Path
    key: str

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs.img"

    @property
    def manifest(self) -> dict:
        return json.loads((self.directory / "manifest.json").read_text())

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.kernel, self.initrd, self.rootfs, self.directory / "manifest.json"))


def _run(step: str, argv: list[str], timeout: float = 900, **kw) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if res.returncode != 0:
        raise BuildError(f"{step}: {' '.join(argv)} exited {res.returncode}\n{(res.stdout + res.stderr)[-4000:]}")
    return res.stdout


def host_sources() -> list[tuple[str, str]]:
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    return [(p.name, p.read_text()) for p in files if p.is_file() and p.suffix in (".list", ".sources")]


def resolve_kernel() -> str:
    """The concrete cloud kernel package of today's host apt lists (apt-get update once if they lack it)."""
    for attempt in range(2):
        res = subprocess.run(["apt-cache", "depends", S.KERNEL_META], capture_output=True, text=True, timeout=120)
        found = S.kernel_package(res.stdout) if res.returncode == 0 else None
        if found:
            return found
        if attempt == 0:
            _run("apt-get update", ["apt-get", "update", "-q"], timeout=600)
    raise BuildError(f"apt-cache depends {S.KERNEL_META} names no kernel package (is this Debian bookworm?)")


def current_spec(root: Path) -> S.ImageSpec:
    return S.ImageSpec(packages=S.GUEST_PACKAGES, kernel_package=resolve_kernel(),
                       requirements=S.requirements((root / "pyproject.toml").read_text()),
                       inputs_digest=S.inputs_digest(S.read_inputs()))


def _kernel(pkg: str, work: Path) -> Path:
    """Download (cached) and unpack ``pkg``; returns the unpacked tree."""
    debs = CACHE / "kernel"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if not found:
        try:
            _run("kernel download", ["apt-get", "download", "-q", pkg], cwd=debs, timeout=600)
        except BuildError:
            _run("apt-get update", ["apt-get", "update", "-q"], timeout=600)
            _run("kernel download", ["apt-get", "download", "-q", pkg], cwd=debs, timeout=600)
        found = sorted(debs.glob(f"{pkg}_*.deb"))
    for stale in debs.glob("linux-image-*.deb"):
        if stale not in found:
            stale.unlink()
    tree = work / "kernel"
    _run("kernel unpack", ["dpkg-deb", "-x", str(found[-1]), str(tree)])
    return tree


def _rootfs(spec: S.ImageSpec, rootfs: Path) -> None:
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    # Two stages so dpkg can run with force-unsafe-io in between (no fsync per file: the image is rebuilt
    # from scratch if anything goes wrong, and fsyncs made the second stage several times slower).
    _run("debootstrap", ["debootstrap", "--foreign", "--variant=minbase", f"--include={','.join(spec.packages)}",
                         f"--cache-dir={debs}", spec.suite, str(rootfs), S.mirror(host_sources())], timeout=1800)
    unsafe = rootfs / "etc/dpkg/dpkg.cfg.d/pyshim-vm-unsafe-io"
    unsafe.parent.mkdir(parents=True, exist_ok=True)
    unsafe.write_text("force-unsafe-io\n")
    _run("debootstrap --second-stage", ["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"],
         timeout=1800)
    unsafe.unlink()


def _python(spec: S.ImageSpec, rootfs: Path) -> None:
    """The guest's venv (no pip inside: nothing is installed at run time) with the PyPI dependencies."""
    _run("guest venv", ["chroot", str(rootfs), "/usr/bin/python3", "-m", "venv", "--without-pip", S.GUEST_VENV])
    site = rootfs / S.GUEST_SITE.lstrip("/")
    _run("pip install", [HOST_PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
                         "--only-binary=:all:", "--target", str(site), *spec.requirements], timeout=900)
    _run("compileall", ["chroot", str(rootfs), f"{S.GUEST_VENV}/bin/python", "-m", "compileall", "-q", "-j0",
                        S.GUEST_SITE])
    freeze = _run("pip list", [HOST_PYTHON, "-m", "pip", "list", "--format=freeze", "--path", str(site),
                               "--disable-pip-version-check"])
    (rootfs / S.GUEST_VENV.lstrip("/") / "requirements.txt").write_text(freeze)


def _initramfs(rootfs: Path, release: str, out: Path, work: Path) -> None:
    ird = work / "initramfs"
    (ird / "bin").mkdir(parents=True)
    (ird / "mod").mkdir()
    shutil.copy2(rootfs / "bin/busybox", ird / "bin/busybox")
    moddir = rootfs / "lib/modules" / release
    for name in S.INITRAMFS_MODULES:
        matches = list(moddir.rglob(f"{name}.ko"))
        if len(matches) != 1:
            raise BuildError(f"initramfs: module {name}.ko found {len(matches)} times in {moddir}")
        shutil.copy2(matches[0], ird / "mod" / matches[0].name)
    (ird / "mod/order").write_text("\n".join(S.INITRAMFS_MODULES) + "\n")
    shutil.copy2(S.HERE / "guest/initramfs-init", ird / "init")
    os.chmod(ird / "init", 0o755)
    files = _run("initramfs list", ["find", "."], cwd=ird)
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=files.encode(), cwd=ird,
                          capture_output=True, check=True, timeout=120).stdout
    gz = subprocess.run(["gzip", "-1"], input=cpio, capture_output=True, check=True, timeout=120).stdout
    out.write_bytes(gz)


def _versions(rootfs: Path) -> dict[str, str]:
    out = _run("dpkg-query", ["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Package} ${Version}\\n",
                              "containerd", "runc", "criu", "python3", "busybox-static"])
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def build(spec: S.ImageSpec, dest: Path) -> None:
    """Build the image of ``spec`` into the (new, empty) directory ``dest``."""
    release = S.kernel_release(spec.kernel_package)
    times: dict[str, float] = {}
    t = time.monotonic()
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".work-") as tmp:
        work = Path(tmp)
        kernel = _kernel(spec.kernel_package, work)
        shutil.copy2(kernel / "boot" / f"vmlinuz-{release}", dest / "vmlinuz")
        times["kernel"], t = time.monotonic() - t, time.monotonic()
        rootfs = work / "rootfs"
        _rootfs(spec, rootfs)
        times["debootstrap"], t = time.monotonic() - t, time.monotonic()
        _python(spec, rootfs)
        times["python"], t = time.monotonic() - t, time.monotonic()
        shutil.copytree(kernel / "lib/modules" / release, rootfs / "lib/modules" / release, symlinks=True)
        _run("depmod", ["chroot", str(rootfs), "depmod", release])
        shutil.copy2(S.HERE / "guest/vminit", rootfs / "sbin/vminit")
        os.chmod(rootfs / "sbin/vminit", 0o755)
        (rootfs / "etc/hostname").write_text("pyshim-vm\n")
        versions = _versions(rootfs)
        for rel in TRIM:
            for child in (rootfs / rel).glob("*"):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        _initramfs(rootfs, release, dest / "initrd.img", work)
        _run("mkfs.ext4", ["mkfs.ext4", "-q", "-F", "-L", "pyshimvm", "-d", str(rootfs), str(dest / "rootfs.img"),
                           IMAGE_SIZE], timeout=600)
        times["image"] = time.monotonic() - t
    manifest = {"key": spec.key(), "kernel": spec.kernel_package, "packages": versions,
                "requirements": list(spec.requirements), "build_seconds": {k: round(v, 1) for k, v in times.items()},
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def ensure(spec: S.ImageSpec, log=print) -> tuple[Image, bool]:
    """The cached image of ``spec``, built first if missing; returns (image, whether it was built now)."""
    if os.geteuid() != 0:
        raise BuildError("building the VM image needs root (debootstrap, chroot)")
    missing = [t for t in ("debootstrap", "cpio", "mkfs.ext4", "dpkg-deb", "apt-get") if shutil.which(t) is None]
    if missing:
        raise BuildError(f"host tools missing: {', '.join(missing)} (./install.sh --dev, as root)")
    key = spec.key()
    image = Image(CACHE / key, key)
    if image.complete():
        return image, False
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.complete():
            return image, False
        for stale in CACHE.glob(".*"):  # a build that died (we hold the lock: none is running)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        log(f"vm: building image {key} (kernel {spec.kernel_package}, packages {' '.join(spec.packages)})")
        tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=f".{key}-"))
        try:
            build(spec, tmp)
            if image.directory.exists():
                shutil.rmtree(image.directory)
            tmp.rename(image.directory)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        for other in CACHE.iterdir():
            if other.is_dir() and other != image.directory and other.name not in ("debs", "kernel") \
                    and not other.name.startswith("."):
                shutil.rmtree(other, ignore_errors=True)
    return image, True
