"""Images for the CRI tests: a pause image built from a small C program, and busybox-based images under the
names critest (cri-tools) and our own CRI tests ask for, served by ``cri_registry``.

Rules:
- Nothing is downloaded: the busybox layer is built from harness/busybox.py's rootfs (Debian's
  busybox-static) with the applets as *hard* links, like the busybox images critest expects (its MaskedPaths
  spec masks /bin/ls; masking a symlink would mask busybox itself).  The C programs below are compiled here
  with gcc, static (the images need no libc), cached under CACHE/cri/<name>-<hash of source>/ and built
  under a lock, renamed into place when complete.
- pause behaves like Kubernetes' pause: it exits 0 on SIGINT/SIGTERM, reaps any child (it is PID 1 of the
  pod), and otherwise sleeps.  ``busybox sleep`` would not do: as PID 1 it ignores SIGTERM.
- Images are single-platform (linux/amd64) OCI manifests; their bytes are deterministic (fixed mtimes,
  sorted entries), so a repeated build gives the same digests.  The critest images follow cri-tools'
  images/build script: each ``test-image-*`` adds one empty file named after it to busybox, the user
  images set ``User``, and the same-image tags share one manifest.  critest's digest-pinned reference
  (test-image-digest@sha256:9700…) cannot be reproduced and is not served.
- Stand-ins, each doing exactly what critest uses the real thing for, never more: ``pgrep``/``ipcs`` shell
  scripts (Debian's busybox-static lacks both applets); ``nginx`` = the pause program named nginx, writing
  /var/run/nginx.pid and carrying ``master process`` in its command line (critest's PID-namespace specs
  look for exactly these); ``httpd`` = busybox httpd, announcing itself on stdout (critest's
  multi-container exec/log specs); ``nonewprivs`` = a setuid-root program printing its effective uid.
  Specs that need a real web server reachable from the host are not run (tests/integration/critest_skips.py).
- pause:3.9 (critest's two-registry spec) differs from the sandbox image pause:3.10 by one label, so that
  removing it removes exactly its own two tags.
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
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

/* Optional: write our pid to $PIDFILE (the nginx stand-in). */
static int write_pidfile(void) {
    const char *path = getenv("PIDFILE");
    if (!path) return 0;
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "%d\n", (int)getpid());
    return fclose(f);
}

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
    if (write_pidfile() < 0) return 3;
    for (;;) pause();
}
"""


NNP_C = r"""
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("Effective uid: %d\n", (int)geteuid());
    return 0;
}
"""

PGREP_SH = """#!/bin/sh
# pgrep PATTERN: pids of processes whose name contains PATTERN (stand-in, see cri_images.py)
status=1
for d in /proc/[0-9]*; do
  read -r name < "$d/comm" 2>/dev/null || continue
  case "$name" in *"$1"*) echo "${d#/proc/}"; status=0;; esac
done
exit $status
"""

IPCS_SH = """#!/bin/sh
# ipcs -m: the shared memory segments of this IPC namespace (stand-in, see cri_images.py)
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch"
tail -n +2 /proc/sysvipc/shm | while read -r key shmid perms size cpid lpid nattch uid rest; do
  echo "$key $shmid $uid $perms $size $nattch"
done
"""


@dataclass(frozen=True)
class Image:
    """One image as a registry serves it: the manifest bytes and every blob it references."""

    manifest: bytes
    blobs: Mapping[str, bytes] = field(repr=False)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()


def static_binary(name: str, source: str) -> Path:
    """The static executable compiled from C ``source``, once per source text."""
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    out = CACHE / "cri" / f"{name}-{key}" / name
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file():
            return out
        src = out.parent / f"{name}.c"
        src.write_text(source)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{name}-")
        os.close(fd)
        try:
            res = subprocess.run(["gcc", "-static", "-Os", "-s", "-o", tmp, str(src)],
                                 capture_output=True, text=True, timeout=300)
        except FileNotFoundError:
            raise Unavailable("gcc is needed to build the CRI test images (./install.sh, as root)") from None
        if res.returncode != 0:
            os.unlink(tmp)
            raise Unavailable(f"gcc -static {name}.c failed (libc6-dev installed?): {res.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
    return out


def hardlinked_rootfs(artifacts: busybox.Busybox) -> Path:
    """A copy of the busybox rootfs whose applet symlinks are hard links to /bin/busybox."""
    base = artifacts.rootfs.parent / "rootfs-hardlinks"
    if base.is_dir():
        return base
    with open(artifacts.rootfs.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if base.is_dir():
            return base
        tmp = Path(tempfile.mkdtemp(dir=base.parent, prefix=".rootfs-hardlinks-"))
        busybox.copy_rootfs(artifacts.rootfs, tmp / "rootfs")
        target = tmp / "rootfs" / "bin" / "busybox"
        for link in sorted((tmp / "rootfs").rglob("*")):
            if link.is_symlink() and link.resolve() == target.resolve():
                link.unlink()
                os.link(target, link)
        os.chmod(tmp / "rootfs", 0o755)
        (tmp / "rootfs").rename(base)
        os.rmdir(tmp)
    return base


def _files_layer(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed layer tar holding ``files`` (path -> (content, mode)), parents created, root-owned."""
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
    base = busybox._layer_tar(hardlinked_rootfs(artifacts))
    pause = static_binary("pause", PAUSE_C).read_bytes()
    extras = _files_layer({
        "etc/passwd": ((busybox.PASSWD + PASSWD_EXTRA).encode(), 0o644),
        "etc/group": ((busybox.GROUP + GROUP_EXTRA).encode(), 0o644),
        "home/default-user/.keep": (b"", 0o644),
        "usr/bin/pgrep": (PGREP_SH.encode(), 0o755),
        "usr/bin/ipcs": (IPCS_SH.encode(), 0o755),
    })
    shell = {"Env": [busybox.PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/"}

    def variant(marker: str | None = None, layers: tuple[bytes, ...] = (), **config: object) -> Image:
        more = [_files_layer({marker: (b"", 0o644)})] if marker else []
        return build_image([base, extras, *layers, *more], {**shell, **config})

    pause_layer = _files_layer({"pause": (pause, 0o755)})
    pause_config = {"Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/"}
    refs = {
        PAUSE_REF: build_image([pause_layer], pause_config),
        BUSYBOX_REF: variant(),
        "registry.k8s.io/e2e-test-images/nginx:1.14-2": variant(
            layers=(_files_layer({"usr/sbin/nginx": (pause, 0o755), "var/run/.keep": (b"", 0o644)}),),
            Entrypoint=["/usr/sbin/nginx", "master process"], Cmd=None,
            Env=[busybox.PATH_ENV, "PIDFILE=/var/run/nginx.pid"]),
        "registry.k8s.io/e2e-test-images/httpd:2.4.39-4": variant(
            Cmd=["sh", "-c", "echo httpd: serving /var/www on port 80; mkdir -p /var/www; exec httpd -f -p 80 -h /var/www"]),
        "registry.k8s.io/e2e-test-images/nonewprivs:1.3": variant(
            layers=(_files_layer({"usr/local/bin/nnp": (static_binary("nnp", NNP_C).read_bytes(), 0o4755)}),),
            Cmd=["/usr/local/bin/nnp"]),
    }
    refs["registry.k8s.io/pause:3.9"] = refs["k8s.gcr.io/pause:3.9"] = build_image(
        [pause_layer], {**pause_config, "Labels": {"org.opencontainers.image.version": "3.9"}})
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
