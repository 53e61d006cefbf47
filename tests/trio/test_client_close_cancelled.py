"""Regression: closing a client while an outer scope is cancelled must not hang.

The reader task's final close can itself be cancelled by the outer scope; aclose() waits (shielded) for the
reader, so the reader must signal that it is done even then. Found with containerd: the shim's event publisher
hung in aclose() when the daemon's root scope was cancelled at shutdown. A hang cannot be interrupted from
inside (the wait is shielded), so the scenario runs in a child interpreter with a timeout.
"""
import subprocess
import sys

SCENARIO = r"""
import trio, trio.testing
from ttrpc.client import open_client

async def main():
    a, b = trio.testing.memory_stream_pair()
    with trio.CancelScope() as outer:
        async with open_client(a) as client:
            await trio.sleep(0)  # let the reader start and block on receive
            outer.cancel()
    print("closed")

trio.run(main)
"""


def test_close_under_cancelled_scope_returns():
    res = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "closed"
