"""Peer credentials of a unix socket (SO_PEERCRED) and the "same user" check ttrpc servers apply at accept.

Rules:
- No trio: works on any object with ``getsockopt`` (a socket.socket or a trio socket).
- ``same_user`` mirrors Go's UnixSocketRequireSameUser: the peer's uid AND gid must equal this process's
  *effective* uid and gid, as read when the check runs.  A server that refuses a peer closes the connection without
  sending a byte (no handshake exists on the wire).
- SO_PEERCRED reports the credentials in effect when the peer called connect(2).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import struct
from collections.abc import Callable
from typing import Protocol

__all__ = ["CredentialsCheck", "PeerCredentials", "peer_credentials", "same_user"]

_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid


@dataclasses.dataclass(frozen=True, slots=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


class _HasGetsockopt(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


CredentialsCheck = Callable[[PeerCredentials], bool]


def peer_credentials(sock: _HasGetsockopt) -> PeerCredentials:
    """Read SO_PEERCRED; raises OSError if ``sock`` is not a connected unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return PeerCredentials(*_UCRED.unpack(raw))


def same_user(creds: PeerCredentials) -> bool:
    """True when the peer runs with this process's effective uid and gid."""
    return creds.uid == os.geteuid() and creds.gid == os.getegid()
