"""The images containerd's client integration suite pulls, made here and served under their own references.

Rules:
- Nothing is downloaded.  Every image starts from the harness's busybox image (tests/integration/harness/
  busybox.py, built from Debian's busybox-static) and adds small layers written here.
- ``served()`` maps each reference the suite pulls by name (its image list, integration/images, and the
  references its tests hard-code) to an image carrying the content those tests rely on:
  * busybox (``testImage``; 1.36 for 1.7/2.x, 1.32 for 1.6): like the official image an index of several
    platforms (TestExportAllCases exports "all platforms" of it after pulling one); linux/amd64 is busybox
    plus a layer with the accounts the tests name (sys 3:3 for TestContainerUserID, www-data 33:33 for
    TestContainerUser/Username) and an ``nc`` that, like the official image's (busybox's nc_bloaty, which
    catches SIGTERM and exits 128+15), ends on SIGTERM even as pid 1; Debian's busybox nc ignores it there,
    which would hang TestBindLowPortNonOpt forever.
  * volume-copy-up:2.1 and 2.2 (``testMultiLayeredImage``): three layers and a volume.
  * volume-ownership:2.1 and alpine:3.14.0 (``testUserNSImage`` of 2.x and 1.x): user ``backup`` (34),
    a ``bash`` (a script that execs busybox sh) and a setuid ``/usr/bin/passwd`` (TestUserNamespaces).
  * pause (3.8 and 3.10 from the image lists, 3.6 hard-coded): an index of three platforms with distinct small layers
    (TestImagePullAllPlatforms, TestImageUsage, TestLeaseResources, TestImagePullWithDistSourceLabel);
    pulled, fetched and unpacked by the suite, never run.
  * e2e-test-images/busybox:1.29-2: an index of five platforms (TestImagePullSomePlatforms picks three).
  * windows/nanoserver:1809: a windows/amd64-only index, which a linux snapshotter must refuse
    (TestImageSupportedBySnapshotter_Error).
  References pinned by digest (schema 1 images) cannot be reproduced and are in the skip list.
- Deterministic: fixed mtimes, sorted entries, gzip mtime 0, canonical JSON, so digests are stable.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.integration.harness import busybox

MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
EPOCH = 946684800

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
backup:x:34:34:backup:/var/backups:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
www-data:x:33:
backup:x:34:
nogroup:x:65534:
"""
NC = """#!/bin/sh
# nc for containerd's client suite: exits 143 on SIGTERM even as a container's pid 1, as the official
# busybox image's nc does (tests/conformance/images.py); otherwise busybox's own nc, exit status kept.
trap 'exit 143' TERM
/bin/busybox nc "$@" &
wait $!
"""
BASH = "#!/bin/sh\n# stand-in for bash: the suite only runs `bash -c <sh-compatible script>`\nexec /bin/sh \"$@\"\n"


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: object) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


@dataclass(frozen=True)
class Image:
    """One repository:tag; ``top`` is its manifest or index, ``blobs`` everything reachable from it."""

    repository: str
    tag: str
    top: Blob
    blobs: tuple[Blob, ...]


@dataclass(frozen=True)
class Entry:
    """One tar member: a regular file (``data``), a directory, or a symlink (``target``)."""

    path: str
    mode: int = 0o644
    data: bytes = b""
    target: str | None = None
    directory: bool = False


@dataclass(frozen=True)
class Layer:
    blob: Blob     # gzip-compressed tar
    diff_id: str   # sha256 of the uncompressed tar


def _json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def make_layer(entries: list[Entry]) -> Layer:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(e.path)
            info.mode, info.mtime, info.uname, info.gname = e.mode, EPOCH, "root", "root"
            if e.directory:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, e.target
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    raw = buf.getvalue()
    return Layer(Blob(MT_LAYER, gzip.compress(raw, compresslevel=6, mtime=0)),
                 "sha256:" + hashlib.sha256(raw).hexdigest())


def base_layer(artifacts: busybox.Busybox) -> Layer:
    """The harness image's single layer (blob and diff id) read from its OCI layout tar."""
    with tarfile.open(artifacts.image) as tar:
        def read(digest: str) -> bytes:
            return tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read()
        index = json.loads(tar.extractfile("index.json").read())
        manifest = json.loads(read(index["manifests"][0]["digest"]))
        config = json.loads(read(manifest["config"]["digest"]))
        (layer,), (diff_id,) = manifest["layers"], config["rootfs"]["diff_ids"]
        return Layer(Blob(layer["mediaType"], read(layer["digest"])), diff_id)


LINUX_AMD64 = {"os": "linux", "architecture": "amd64"}


def manifest(layers: list[Layer], *, platform: dict[str, str] = LINUX_AMD64, config: dict | None = None,
             note: str) -> tuple[Blob, list[Blob]]:
    """An OCI manifest over ``layers``; returns it and the blobs it references (config first)."""
    cfg = {
        **platform,
        "config": config or {"Env": [busybox.PATH_ENV], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"pyshim tests/conformance/images.py: {note}"}] * len(layers),
    }
    config_blob = Blob(MT_CONFIG, _json(cfg))
    body = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config_blob.descriptor(),
            "layers": [layer.blob.descriptor() for layer in layers]}
    return Blob(MT_MANIFEST, _json(body)), [config_blob, *(layer.blob for layer in layers)]


def single(repository: str, tag: str, layers: list[Layer], note: str, config: dict | None = None) -> Image:
    top, blobs = manifest(layers, config=config, note=note)
    return Image(repository, tag, top, tuple(blobs))


def index(repository: str, tag: str, platforms: list[dict[str, str]], note: str,
          first: list[Layer] | None = None) -> Image:
    """A multi-platform index; the first platform gets ``first`` (if given), the others a small stand-in."""
    manifests, blobs = [], []
    for i, platform in enumerate(platforms):
        label = "/".join(platform[k] for k in ("os", "architecture", "variant") if k in platform)
        if first and i == 0:
            top, refs = manifest(first, platform=platform, note=f"{note} {label}")
        else:
            layer = make_layer([Entry("README", data=f"{note}: stand-in layer for {label}\n".encode() * 64)])
            top, refs = manifest([layer], platform=platform, config={"Entrypoint": ["/pause"]},
                                 note=f"{note} {label}")
        manifests.append(top.descriptor(platform=platform))
        blobs += [top, *refs]
    top = Blob(MT_INDEX, _json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests}))
    return Image(repository, tag, top, tuple(blobs))


def _linux(*archs: str) -> list[dict[str, str]]:
    out = []
    for a in archs:
        arch, _, variant = a.partition("/")
        out.append({"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})})
    return out


def served(artifacts: busybox.Busybox) -> list[Image]:
    """Every image the registry serves, each under the reference (host/repository:tag) the suite uses."""
    base = base_layer(artifacts)
    nc = next(f"{d}/nc" for d in ("usr/bin", "bin") if Path(artifacts.rootfs, d, "nc").is_symlink())
    users = make_layer([Entry("etc", 0o755, directory=True),
                        Entry("etc/passwd", data=PASSWD.encode()), Entry("etc/group", data=GROUP.encode()),
                        *(Entry(d, 0o755, directory=True) for d in ("usr", "usr/bin") if nc.startswith(d + "/")),
                        Entry(nc, 0o755, data=NC.encode())])
    extra = make_layer([Entry("test_dir", 0o755, directory=True),
                        Entry("test_dir/test_file", data=b"copy-up\n")])
    busybox_bin = Path(artifacts.rootfs, "bin", "busybox").read_bytes()
    ownership = make_layer([
        Entry("bin", 0o755, directory=True), Entry("bin/bash", 0o755, data=BASH.encode()),
        Entry("usr", 0o755, directory=True), Entry("usr/bin", 0o755, directory=True),
        Entry("usr/bin/passwd", 0o4755, data=busybox_bin),
    ])
    pause_platforms = _linux("amd64", "arm64", "s390x")
    busybox_platforms = _linux("amd64", "arm/v7", "arm64/v8", "ppc64le", "s390x")
    return [
        index("ghcr.io/containerd/busybox", "1.36", busybox_platforms, "busybox", first=[base, users]),
        index("ghcr.io/containerd/busybox", "1.32", busybox_platforms, "busybox", first=[base, users]),
        *(single("ghcr.io/containerd/volume-copy-up", tag, [base, users, extra], "three layers",
                 config={"Env": [busybox.PATH_ENV], "Cmd": ["/bin/sh"], "Volumes": {"/test_dir": {}}})
          for tag in ("2.1", "2.2")),
        single("ghcr.io/containerd/volume-ownership", "2.1", [base, users, ownership], "bash, setuid passwd"),
        single("ghcr.io/containerd/alpine", "3.14.0", [base, users, ownership], "bash, setuid passwd"),
        index("registry.k8s.io/pause", "3.10", pause_platforms, "pause"),
        index("registry.k8s.io/pause", "3.8", pause_platforms, "pause"),
        index("registry.k8s.io/pause", "3.6", pause_platforms, "pause"),
        index("k8s.gcr.io/pause", "3.6", pause_platforms, "pause"),
        index("registry.k8s.io/e2e-test-images/busybox", "1.29-2",
              _linux("amd64", "arm/v7", "arm64/v8", "ppc64le", "s390x"), "busybox", first=[base, users]),
        index("ghcr.io/containerd/windows/nanoserver", "1809", [{"os": "windows", "architecture": "amd64"}],
              "nanoserver"),
        index("mcr.microsoft.com/windows/nanoserver", "1809", [{"os": "windows", "architecture": "amd64"}],
              "nanoserver"),
    ]


def hosts(images: list[Image]) -> list[str]:
    return sorted({image.repository.split("/", 1)[0] for image in images})
