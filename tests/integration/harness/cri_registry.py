"""A read-only OCI distribution registry on 127.0.0.1 serving harness-built images, and the containerd
``hosts.toml`` files that send pulls for the public registries the CRI tests name to it.

Rules:
- Only the pull side of the distribution API: ``GET /v2/``, ``GET|HEAD /v2/<name>/manifests/<tag|digest>``
  and ``GET|HEAD /v2/<name>/blobs/<digest>``.  Everything else is 404/405.  A mirror request carries
  ``?ns=<upstream host>``; names are unique across the hosts we serve, so ``ns`` is ignored.
- It listens on 127.0.0.1 only, on a port the kernel picks; nothing leaves the machine.
- ``Registry`` is a context manager that owns its server thread: ``__exit__`` shuts it down and joins it.
- ``write_hosts`` writes ``<dir>/<host>/hosts.toml`` for each host (containerd's ``config_path`` layout,
  read by 1.6, 1.7 and 2.x alike): ``server`` and the only ``host`` are the local registry over plain HTTP.
"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from . import busybox
from .cri_images import Image

MIRRORED_HOSTS = ("registry.k8s.io", "k8s.gcr.io", "gcr.io")


def split_ref(ref: str) -> tuple[str, str, str]:
    """``host/name:tag`` -> (host, name, tag)."""
    host, _, rest = ref.partition("/")
    name, _, tag = rest.rpartition(":")
    return host, name, tag


class Registry:
    def __init__(self, images: Mapping[str, Image]) -> None:
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[str] = []
        for ref, image in images.items():
            _host, name, tag = split_ref(ref)
            self.manifests[(name, tag)] = image.manifest
            self.manifests[(name, image.digest)] = image.manifest
            self.blobs.update(image.blobs)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "Registry":
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: object) -> None:
                registry.requests.append(f"{self.command} {self.path} " + (fmt % args))

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                status, ctype, data = registry.lookup(urlsplit(self.path).path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                if status == 200 and data:
                    self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest())
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="cri-registry")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def lookup(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request path."""
        if path in ("/v2", "/v2/"):
            return 200, "application/json", b"{}"
        if not path.startswith("/v2/"):
            return 404, "text/plain", b""
        rest = path[len("/v2/"):]
        for kind in ("/manifests/", "/blobs/"):
            name, sep, ref = rest.rpartition(kind)
            if not sep:
                continue
            if kind == "/blobs/":
                data = self.blobs.get(ref)
                return (200, "application/octet-stream", data) if data is not None else (404, "text/plain", b"")
            data = self.manifests.get((name, ref))
            return (200, busybox.MT_MANIFEST, data) if data is not None else (404, "text/plain", b"")
        return 404, "text/plain", b""


def write_hosts(directory: Path, url: str, hosts: tuple[str, ...] = MIRRORED_HOSTS) -> None:
    for host in hosts:
        (directory / host).mkdir(parents=True, exist_ok=True)
        (directory / host / "hosts.toml").write_text(
            f'server = "{url}"\n\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n')
