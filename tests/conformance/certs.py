"""A throw-away certificate authority and one server certificate for the registries the suite names.

Rules:
- Made with the ``openssl`` command (Debian's openssl package) in a directory the caller owns, valid for
  two days, P-256 keys.  Nothing is installed in the machine's trust store: only processes given
  ``SSL_CERT_FILE=<ca>`` (Go reads it instead of the system roots) trust it.
- The server certificate names every host in ``hosts`` as a DNS subjectAltName (Go ignores the CN).
- Failures raise ``CertError`` with openssl's output.
"""
from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class CertError(Exception):
    pass


@dataclass(frozen=True)
class Certs:
    ca: Path     # CA certificate (PEM): the only root the suite's processes trust
    cert: Path   # server certificate chain (PEM)
    key: Path    # server private key (PEM)


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise CertError("openssl is not installed (apt-get install openssl)")
    res = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise CertError(f"openssl {' '.join(args)}: exit {res.returncode}: {res.stderr.strip()[-1000:]}")


def make(directory: Path, hosts: list[str]) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    key_opts = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *key_opts, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=pyshim conformance test CA (throw-away)",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    _openssl("req", *key_opts, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=pyshim conformance registry", cwd=directory)
    (directory / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=" + ",".join(f"DNS:{h}" for h in hosts) + "\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-set_serial", str(secrets.randbits(63)), "-days", "2", "-extfile", "server.ext",
             "-out", "server.pem", cwd=directory)
    return Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key")
