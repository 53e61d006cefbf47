"""Missing prerequisites: skip with the reason on a developer's machine, fail under CI.

Rule: every test that cannot run without something (root, a binary, a cgroup hierarchy, a download) calls
`unavailable(reason)`; nothing in tests/ calls pytest.skip directly, so CI (CI=true) can never pass on a skip.
"""
from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: prerequisites must be present)", pytrace=False)
    pytest.skip(reason)
