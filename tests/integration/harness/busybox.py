"""A busybox root filesystem and an OCI image of it, built in Python from Debian's busybox-static package.

Rules:
- The only input is the statically linked /bin/busybox of the installed ``busybox-static`` package
  (install.sh installs it).  A dynamically linked busybox is refused: it would not run in the rootfs.
- Artefacts live under CACHE/busybox/<sha256 of the busybox binary>/ so a package upgrade builds afresh;
  each is built in a temporary directory and renamed into place, under a lock, so concurrent test
  processes never see half a rootfs.
- The cached rootfs is shared: callers that run containers on a rootfs directory (``ctr run --rootfs``)
  should use ``copy_rootfs`` to get their own writable copy.
- The image is a deterministic OCI image layout tar (one gzip layer, config, manifest, index.json whose
  manifest carries the ``org.opencontainers.image.ref.name`` annotation), importable with ``ctr images import``.
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .dist import CACHE, Unavailable

BUSYBOX = Path("/bin/busybox")
IMAGE_REF = "docker.io/pyshim/busybox:test"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOCH = 946684800  # 2000-01-01: fixed mtime so the layer (and its digest) is reproducible

MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class Busybox:
    """Paths of the cached artefacts: ``rootfs`` (directory) and ``image`` (OCI layout tar) named ``ref``."""

    rootfs: Path
    image: Path
    ref: str


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP program header (i.e. not dynamically linked)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only, like the machines we run on
            return False
        phoff = int.from_bytes(head[32:40], "little")
        phentsize = int.from_bytes(head[54:56], "little")
        phnum = int.from_bytes(head[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(int.from_bytes(table[i:i + 4], "little") != 3 for i in range(0, len(table), phentsize))


def _source_binary() -> Path:
    if not BUSYBOX.exists():
        raise Unavailable(f"{BUSYBOX} missing: install Debian's busybox-static package (./install.sh, as root)")
    if not _is_static_elf(BUSYBOX):
        raise Unavailable(f"{BUSYBOX} is not statically linked: install busybox-static instead of busybox")
    return BUSYBOX


def _build_rootfs(dest: Path, busybox: Path) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev", "run", "var", "tmp"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    os.chmod(dest / "root", 0o700)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    os.chmod(dest / "bin" / "busybox", 0o755)
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    for rel in applets.split():
        link = dest / rel
        if rel == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(dest / "bin" / "busybox", link.parent))
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / "etc" / "hostname").write_text("busybox\n")


def _layer_tar(rootfs: Path) -> bytes:
    """Deterministic uncompressed tar of ``rootfs``: sorted entries, root ownership, fixed mtime."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = sorted(p.relative_to(rootfs).as_posix() for p in rootfs.rglob("*"))
        for rel in entries:
            info = tar.gettarinfo(str(rootfs / rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = EPOCH
            if info.isreg():
                with open(rootfs / rel, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def _blob(out: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _add_bytes(out, "blobs/sha256/" + digest.split(":", 1)[1], data)
    return digest, len(data)


def _add_bytes(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
    out.addfile(info, io.BytesIO(data))


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _build_image(dest: Path, rootfs: Path, ref: str) -> None:
    raw = _layer_tar(rootfs)
    gz = gzip.compress(raw, compresslevel=6, mtime=0)
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            out.addfile(info)
        layer_digest, layer_size = _blob(out, gz)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": [PATH_ENV], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
            "history": [{"created_by": "pyshim tests/integration/harness/busybox.py"}],
        }
        config_digest, config_size = _blob(out, _json(config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": MT_LAYER, "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = _blob(out, _json(manifest))
        index = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [{
                "mediaType": MT_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }],
        }
        _add_bytes(out, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(out, "index.json", _json(index))


def ensure(ref: str = IMAGE_REF) -> Busybox:
    """Build (once per busybox binary) and return the cached rootfs and image."""
    busybox = _source_binary()
    key = hashlib.sha256(busybox.read_bytes()).hexdigest()[:16]
    base = CACHE / "busybox" / key
    result = Busybox(base / "rootfs", base / f"image-{hashlib.sha256(ref.encode()).hexdigest()[:8]}.tar", ref)
    if result.rootfs.is_dir() and result.image.is_file():
        return result
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.rootfs.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=base, prefix=".rootfs-"))
            _build_rootfs(tmp, busybox)
            os.chmod(tmp, 0o755)
            tmp.rename(result.rootfs)
        if not result.image.is_file():
            fd, tmpname = tempfile.mkstemp(dir=base, prefix=".image-", suffix=".tar")
            os.close(fd)
            _build_image(Path(tmpname), result.rootfs, ref)
            os.chmod(tmpname, 0o644)
            os.rename(tmpname, result.image)
    return result


def copy_rootfs(src: Path, dest: Path) -> Path:
    """A private, writable copy of ``src`` at ``dest`` (symlinks kept as links)."""
    shutil.copytree(src, dest, symlinks=True)
    return dest
