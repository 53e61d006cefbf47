"""A tiny read-only OCI distribution registry on 127.0.0.1 that answers for the registries the suite names.

The suite pulls fixed references (ghcr.io/containerd/busybox:1.36, registry.k8s.io/pause:3.6, ...) from
the client process and, for 2.x transfers, from containerd.  Both are Go programs that honour
``HTTPS_PROXY`` and ``SSL_CERT_FILE``; given ``proxy_env()``, they send every registry request through this
server as an HTTP CONNECT tunnel, and it answers inside the tunnel with TLS for that host (certs.py).  So the
references stay exactly as upstream wrote them, and nothing on the machine (DNS, trust store) changes.

Rules:
- Only what containerd's resolver and fetcher use: ``GET /v2/`` (ping), ``GET``/``HEAD`` of
  ``/v2/<name>/manifests/<tag or digest>`` and ``/v2/<name>/blobs/<digest>``.  Anything else is 404/405 with
  an OCI error body.  A CONNECT to a host not served is refused (403), so nothing leaves the machine.
- Repositories are keyed ``<host>/<name>`` by the request's Host header; a repository serves only its own
  tags and the blobs reachable from them, a digest under either endpoint (as containerd's fetcher asks).
- Responses carry ``Content-Type`` (the stored media type), ``Content-Length`` and ``Docker-Content-Digest``.
- The ``Registry`` object owns its server and serving thread: ``with Registry(images, certs)`` binds an
  ephemeral port, serves until the block ends, then shuts down and joins the thread.  ``requests`` records
  ``(method, host, path, status)`` for post-mortems.
"""
from __future__ import annotations

import json
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable

from .certs import Certs
from .images import Blob, Image

PATH = re.compile(r"^/v2/(?P<name>[a-z0-9._/-]+)/(?P<kind>manifests|blobs)/(?P<ref>[A-Za-z0-9_.:+-]+)$")


class Store:
    """``host/name`` → tags → top-level blob, and ``host/name`` → digest → blob."""

    def __init__(self, images: Iterable[Image]) -> None:
        self.tags: dict[str, dict[str, Blob]] = {}
        self.blobs: dict[str, dict[str, Blob]] = {}
        for image in images:
            self.tags.setdefault(image.repository, {})[image.tag] = image.top
            repo = self.blobs.setdefault(image.repository, {})
            for blob in (image.top, *image.blobs):
                repo[blob.digest] = blob

    @property
    def hosts(self) -> set[str]:
        return {repo.split("/", 1)[0] for repo in self.tags}

    def lookup(self, repository: str, kind: str, ref: str) -> Blob | None:
        if ref.startswith("sha256:"):
            return self.blobs.get(repository, {}).get(ref)
        if kind == "manifests":
            return self.tags.get(repository, {}).get(ref)
        return None


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (BaseHTTPRequestHandler's name)
        pass  # requests are recorded in Registry.requests instead of stderr

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the socket was handed to a TLS tunnel (do_CONNECT) and is closed by now

    def _host(self) -> str:
        host = self.headers.get("Host") or ""
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    def _reply(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
        self.server.record(self.command, self._host(), self.path, status)  # before the client can see it
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, send_body: bool) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        self._reply(status, body, {"Content-Type": "application/json"}, send_body)

    def _serve(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/v2", "/v2/"):
            self._reply(200, b"{}", {"Content-Type": "application/json",
                                     "Docker-Distribution-API-Version": "registry/2.0"}, send_body)
            return
        m = PATH.match(path)
        if not m:
            self._error(404, "NAME_UNKNOWN", f"no route for {path}", send_body)
            return
        repository = f"{self._host()}/{m['name']}"
        blob = self.server.store.lookup(repository, m["kind"], m["ref"])
        if blob is None:
            code = "MANIFEST_UNKNOWN" if m["kind"] == "manifests" else "BLOB_UNKNOWN"
            self._error(404, code, f"{repository}: {m['ref']} not found", send_body)
            return
        self._reply(200, blob.data, {"Content-Type": blob.media_type, "Docker-Content-Digest": blob.digest,
                                     "Docker-Distribution-API-Version": "registry/2.0"}, send_body)

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        self._serve(True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(False)

    def do_CONNECT(self) -> None:  # noqa: N802
        host, _, port = self.path.rpartition(":")
        if host not in self.server.store.hosts or port != "443" or self.server.tls is None:
            self._error(403, "DENIED", f"{self.path} is not served here", True)
            self.close_connection = True
            return
        self.server.record("CONNECT", host, self.path, 200)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        try:
            tunnel = self.server.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.server.record("TLS", host, f"handshake failed: {exc}", 0)
            return
        with tunnel:
            _Handler(tunnel, self.client_address, self.server)  # serves the tunnel's requests until it closes

    def _read_only(self) -> None:
        self._error(405, "UNSUPPORTED", "this registry is read-only", True)

    do_POST = do_PUT = do_PATCH = do_DELETE = _read_only  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: Store, tls: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store, self.tls = store, tls
        self.requests: list[tuple[str, str, str, int]] = []
        self.lock = threading.Lock()

    def record(self, method: str, host: str, path: str, status: int) -> None:
        with self.lock:
            self.requests.append((method, host, path, status))


class Registry:
    def __init__(self, images: Iterable[Image], certs: Certs | None = None) -> None:
        tls = None
        if certs is not None:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(certs.cert, certs.key)
        self.certs = certs
        self._server = _Server(Store(images), tls)
        self._thread = threading.Thread(target=self._server.serve_forever, name="oci-registry", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, str, str, int]]:
        with self._server.lock:
            return list(self._server.requests)

    def proxy_env(self) -> dict[str, str]:
        """Environment that sends a Go program's registry traffic here and trusts only our CA."""
        env = {"HTTPS_PROXY": f"http://{self.address}", "HTTP_PROXY": f"http://{self.address}",
               "NO_PROXY": "localhost,127.0.0.1,::1"}
        if self.certs is not None:
            env["SSL_CERT_FILE"] = str(self.certs.ca)
        return env

    def __enter__(self) -> "Registry":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._server.server_close()
