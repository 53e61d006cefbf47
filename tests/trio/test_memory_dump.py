"""SIGUSR1's memory report (shim/daemon.py ``_memory_dump``): the top sites, then what grew since the last one."""
from __future__ import annotations

import logging
import tracemalloc

import pytest

from shim import daemon

kept: list[bytes] = []


def grow() -> None:
    kept.extend(bytes(100) + bytes([i % 256]) for i in range(500))


@pytest.fixture
def tracing():
    tracemalloc.start(4)
    daemon._last_snapshot = None
    yield
    tracemalloc.stop()
    daemon._last_snapshot = None
    kept.clear()


def test_the_second_dump_names_what_grew_by_its_traceback(tracing, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="shim"):
        daemon._memory_dump()
        assert "traced memory:" in caplog.text and "grown since" not in caplog.text
        caplog.clear()
        grow()
        daemon._memory_dump()
    grown = [r.getMessage() for r in caplog.records if r.getMessage().startswith("grown since")]
    assert grown, caplog.text
    assert "+500 blocks" in grown[0] and "test_memory_dump.py" in grown[0].split(" at ", 1)[1]
    assert all(len(m) < 4096 for m in grown)  # one bounded record per traceback


def test_no_dump_when_not_tracing(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="shim"):
        daemon._memory_dump()
    assert caplog.text == ""
