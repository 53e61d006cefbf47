"""unavailable(): a skip on a developer's machine, a failure under CI."""
import pytest

from tests.prereq import unavailable


def test_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="needs X"):
        unavailable("needs X")


def test_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs X"):
        unavailable("needs X")
