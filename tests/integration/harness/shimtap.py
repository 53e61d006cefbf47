"""Observe the start handshake and the task API between containerd and a shim, from outside both.

Rules:
- ``write_wrapper`` makes an executable named like the shim (a Python script run by this interpreter) that
  containerd finds first in its PATH.  For ``start`` it records stdin and stdout byte for byte in ``record_dir``
  (``<id>.stdin``, ``<id>.stdout``), passes stdin to the real shim unchanged, and prints the real shim's answer
  with only its address replaced by the tap's.  Every other invocation (``delete``, ``-info``, the daemon) execs
  the real shim unchanged.  The real shim's own daemon is spawned by the real shim, so the wrapper is in no
  process's way after ``start``.
- ``Tap`` listens on that address and forwards each connection to the real shim socket (the last ``start``'s
  address, read from ``<record_dir>/target``), decoding the ttrpc frames containerd sends to record every
  request's ``(service, method)``.  It owns its threads and sockets: ``close`` (or leaving the ``with`` block)
  shuts the connections, joins every thread and removes the socket file.
- Start answers are parsed the way containerd 2.4 does (core/runtime/v2/shim.go ``parseStartResponse``): a
  binary BootstrapResult if it decodes, else trimmed JSON with version >= 2, else a plain address (version 2).
- No pytest here; the protobuf modules are pyshim's own (protos/).
"""
from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from protos import bootstrap_pb2, ttrpc_pb2
from ttrpc.codec import FrameDecoder
from ttrpc.frame import Frame, MessageType

WRAPPER = '''#!{python}
# Written by tests/integration/harness/shimtap.py: records start's stdin/stdout, points containerd at a tap.
import os, subprocess, sys
sys.path.insert(0, {root!r})
REAL, RECORDS, TAP = {real!r}, {records!r}, {tap!r}
args = sys.argv[1:]
if not args or args[-1] != "start":
    os.execv(REAL, [REAL, *args])
from tests.integration.harness.shimtap import readdress
ident = args[args.index("-id") + 1] if "-id" in args else "unknown"
data = sys.stdin.buffer.read()
with open(os.path.join(RECORDS, ident + ".stdin"), "wb") as f:
    f.write(data)
res = subprocess.run([REAL, *args], input=data, stdout=subprocess.PIPE)
with open(os.path.join(RECORDS, ident + ".stdout"), "wb") as f:
    f.write(res.stdout)
out = res.stdout
if res.returncode == 0:
    out, target = readdress(res.stdout, TAP)
    with open(os.path.join(RECORDS, "target"), "w") as f:
        f.write(target)
sys.stdout.buffer.write(out)
sys.exit(res.returncode)
'''


@dataclass(frozen=True)
class StartAnswer:
    """What a shim's ``start`` printed, as containerd 2.4 reads it."""

    form: str        # "binary" (BootstrapResult), "json" or "plain"
    version: int
    address: str
    protocol: str


def parse_start_output(out: bytes) -> StartAnswer:
    result = bootstrap_pb2.BootstrapResult()
    try:
        result.ParseFromString(out)
    except DecodeError:
        pass
    else:
        return StartAnswer("binary", result.version, result.address, result.protocol)
    text = out.strip().decode()
    try:
        params = json.loads(text)
    except ValueError:
        params = None
    if isinstance(params, dict) and int(params.get("version", 0)) >= 2:
        return StartAnswer("json", int(params["version"]), params.get("address", ""), params.get("protocol", ""))
    return StartAnswer("plain", 2, text, "ttrpc")


def readdress(out: bytes, tap_path: str) -> tuple[bytes, str]:
    """``out`` with its address replaced by ``unix://<tap_path>`` (same form), and the original address."""
    answer = parse_start_output(out)
    tap = f"unix://{tap_path}"
    if answer.form == "binary":
        result = bootstrap_pb2.BootstrapResult.FromString(out)
        result.address = tap
        return result.SerializeToString(), answer.address
    if answer.form == "json":
        params = json.loads(out.strip())
        params["address"] = tap
        return json.dumps(params).encode(), answer.address
    return tap.encode(), answer.address


def write_wrapper(directory: Path, name: str, real: Path, record_dir: Path, tap_path: str) -> Path:
    root = str(Path(__file__).resolve().parents[3])
    path = directory / name
    path.write_text(WRAPPER.format(python=sys.executable, root=root, real=str(real), records=str(record_dir),
                                   tap=tap_path))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _requests(decoder: FrameDecoder, data: bytes) -> list[tuple[str, str]]:
    decoder.feed(data)
    found = []
    while isinstance(frame := decoder.next_frame(), Frame):
        if frame.type == MessageType.REQUEST:
            req = ttrpc_pb2.Request.FromString(frame.data)
            found.append((req.service, req.method))
    return found


class Tap:
    """A forwarding unix socket that records the ttrpc requests passing through it."""

    def __init__(self, path: str, record_dir: Path) -> None:
        self.path = path
        self.record_dir = record_dir
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._closing = False
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        os.chmod(path, 0o600)
        self._listener.listen(16)
        self._spawn(self._accept_loop)

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def services(self) -> set[str]:
        with self._lock:
            return {service for service, _ in self.requests}

    def methods(self, service: str) -> list[str]:
        with self._lock:
            return [m for s, m in self.requests if s == service]

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            target = (self.record_dir / "target").read_text()
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(target.removeprefix("unix://"))
            except OSError as exc:
                with self._lock:
                    self.errors.append(f"connect {target}: {exc}")
                client.close()
                upstream.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            self._spawn(self._pump, client, upstream, True)
            self._spawn(self._pump, upstream, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        decoder = FrameDecoder()
        try:
            while data := src.recv(65536):
                if record:
                    found = _requests(decoder, data)
                    with self._lock:
                        self.requests += found
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (dst, src):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() (Linux)
        self._listener.close()
        self._threads[0].join(10)  # the accept loop: no thread or socket is added after it ends
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads[1:]:
            t.join(10)
        for s in self._socks:
            s.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
