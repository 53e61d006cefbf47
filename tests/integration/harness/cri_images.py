"""Images for the CRI tests: a pause image built from a small C program, and busybox-based images under the
names critest (cri-tools) and our own CRI tests ask for, served by ``cri_registry``.

Rules:
- Nothing is downloaded: the busybox layer is harness/busybox.py's (Debian's busybox-static), the pause binary
  is compiled here with gcc from PAUSE_C (static, so the image needs no libc).  The binary is cached under
  CACHE/cri/pause-<hash of source>/ and built under a lock, renamed into place when complete.
- pause behaves like Kubernetes' pause: it exits 0 on SIGINT/SIGTERM, reaps any child (it is PID 1 of the
  pod), and otherwise sleeps.  ``busybox sleep`` would not do: as PID 1 it ignores SIGTERM.
- Images are single-platform (linux/amd64) OCI manifests; their bytes are deterministic (fixed mtimes,
  sorted entries), so a repeated build gives the same digests.  The critest images follow cri-tools'
  images/build script: each ``test-image-*`` adds one empty file named after it to busybox, the user
  images set ``User``, and the same-image tags share one manifest.  critest's digest-pinned reference
  (test-image-digest@sha256:9700…) cannot be reproduced and is not served.
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from . import busybox
from .dist import CACHE, Unavailable

PAUSE_REF = "registry.k8s.io/pause:3.10"
BUSYBOX_REF = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
STAGING = "gcr.io/k8s-staging-cri-tools/"

PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = stop;
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) return 1;
    sa.sa_handler = reap;
    sa.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &sa, NULL) < 0) return 2;
    for (;;) pause();
}
"""


@dataclass(frozen=True)
class Image:
    """One image as a registry serves it: the manifest bytes and every blob it references."""

    manifest: bytes
    blobs: Mapping[str, bytes] = field(repr=False)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()


def pause_binary() -> Path:
    """The static pause executable, compiled once per PAUSE_C."""
    key = hashlib.sha256(PAUSE_C.encode()).hexdigest()[:16]
    out = CACHE / "cri" / f"pause-{key}" / "pause"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file():
            return out
        src = out.parent / "pause.c"
        src.write_text(PAUSE_C)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".pause-")
        os.close(fd)
        try:
            res = subprocess.run(["gcc", "-static", "-Os", "-s", "-o", tmp, str(src)],
                                 capture_output=True, text=True, timeout=300)
        except FileNotFoundError:
            raise Unavailable("gcc is needed to build the pause image (sudo ./install.sh)") from None
        if res.returncode != 0:
            os.unlink(tmp)
            raise Unavailable(f"gcc -static pause.c failed (libc6-dev installed?): {res.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
    return out


def _files_layer(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed layer tar holding ``files`` (path -> (content, mode)), parents created."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in files if str(Path(p).parent) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, busybox.EPOCH
            tar.addfile(info)
        for path in sorted(files):
            data, mode = files[path]
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, busybox.EPOCH
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(layers: list[bytes], config: Mapping[str, object]) -> Image:
    """An OCI image of uncompressed layer tars ``layers`` (gzipped here) and the runtime ``config``."""
    blobs: dict[str, bytes] = {}
    descs, diff_ids = [], []
    for raw in layers:
        gz = gzip.compress(raw, compresslevel=6, mtime=0)
        digest = "sha256:" + hashlib.sha256(gz).hexdigest()
        blobs[digest] = gz
        descs.append({"mediaType": busybox.MT_LAYER, "digest": digest, "size": len(gz)})
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    cfg = busybox._json({
        "architecture": "amd64", "os": "linux", "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "pyshim tests/integration/harness/cri_images.py"}],
    })
    cfg_digest = "sha256:" + hashlib.sha256(cfg).hexdigest()
    blobs[cfg_digest] = cfg
    manifest = busybox._json({
        "schemaVersion": 2, "mediaType": busybox.MT_MANIFEST,
        "config": {"mediaType": busybox.MT_CONFIG, "digest": cfg_digest, "size": len(cfg)},
        "layers": descs,
    })
    return Image(manifest, blobs)


PASSWD_EXTRA = ("www-data:x:33:33:www-data:/var/www:/bin/false\n"
                "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n")
GROUP_EXTRA = "www-data:x:33:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"


def catalogue() -> dict[str, Image]:
    """Every reference the CRI tests may pull, mapped to its image (see the module rules)."""
    artifacts = busybox.ensure()
    base = busybox._layer_tar(artifacts.rootfs)
    users = _files_layer({"etc/passwd": ((busybox.PASSWD + PASSWD_EXTRA).encode(), 0o644),
                          "etc/group": ((busybox.GROUP + GROUP_EXTRA).encode(), 0o644),
                          "home/default-user/.keep": (b"", 0o644)})
    shell = {"Env": [busybox.PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/"}

    def variant(marker: str | None = None, **config: object) -> Image:
        layers = [base, users] + ([_files_layer({marker: (b"", 0o644)})] if marker else [])
        return build_image(layers, {**shell, **config})

    pause_layer = _files_layer({"pause": (pause_binary().read_bytes(), 0o755)})
    refs = {
        PAUSE_REF: build_image([pause_layer], {"Entrypoint": ["/pause"], "User": "65535:65535",
                                               "WorkingDir": "/"}),
        BUSYBOX_REF: variant(),
    }
    refs["registry.k8s.io/pause:3.9"] = refs["k8s.gcr.io/pause:3.9"] = refs[PAUSE_REF]
    for name in ("test-image-1", "test-image-2", "test-image-3", "test-image-latest"):
        refs[f"{STAGING}{name}:latest"] = variant(name)
    same = variant("same-image")
    for tag in ("1", "2", "3"):
        refs[f"{STAGING}test-image-tags:{tag}"] = same
    for tag in ("test", "all"):
        refs[f"{STAGING}test-image-tag:{tag}"] = variant(tag)
    for name, user in (("test-image-user-uid", "1002"), ("test-image-user-username", "www-data"),
                       ("test-image-user-uid-group", "1003:1004"),
                       ("test-image-user-username-group", "www-data:1004"),
                       ("test-image-predefined-group", "1000")):
        refs[f"{STAGING}{name}:latest"] = variant(User=user)
    return refs
