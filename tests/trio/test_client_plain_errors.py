"""Errors raised inside `open_client` reach the caller as themselves, not wrapped in an ExceptionGroup.

Found with containerd: the shim's event publisher caught ConnectionClosed around `open_unix_client`, got an
ExceptionGroup instead when containerd restarted, and the whole daemon died.
"""
import pytest
import trio
import trio.testing

from ttrpc.client import open_client
from ttrpc.status import ConnectionClosed, StatusError


async def test_connection_closed_is_not_wrapped():
    a, b = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        with pytest.raises(ConnectionClosed):
            async with open_client(a) as client:
                await b.aclose()  # the server goes away
                await client.call("s", "m", _Msg(), _Msg)


async def test_caller_exception_is_not_wrapped():
    a, _b = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        with pytest.raises(StatusError, match="mine"):
            async with open_client(a):
                raise StatusError("mine")


class _Msg:
    def SerializeToString(self) -> bytes:
        return b""

    @classmethod
    def FromString(cls, data: bytes) -> "_Msg":
        return cls()
