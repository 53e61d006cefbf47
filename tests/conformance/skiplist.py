"""The conformance skip list (skiplist.toml beside this file): what is not run, or may skip itself, and why.

Rules:
- ``[[skip]]`` entries are passed to the test binary as ``-test.skip``; they never run and are counted
  as skipped with their reason.  ``[[expect_skip]]`` entries name tests the suite skips by itself here
  (``t.Skip`` after probing the machine); any other self-skip is reported as a failure, so nothing is
  skipped silently.
- Every entry has ``test`` (a test name, ``Parent/Sub`` for a subtest; matched literally per level),
  ``reason`` (non-empty), and optionally ``versions`` and ``runtimes`` restricting where it applies and
  ``when``, a machine condition (CONDITIONS) the runner probes: the entry applies only while it holds, so a
  machine that can run the test does run it.
- Unknown keys, an empty reason or a duplicate entry are errors: the file is checked when loaded.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT = Path(__file__).with_name("skiplist.toml")
KEYS = {"test", "reason", "versions", "runtimes", "when"}
CONDITIONS = {
    "criu-unusable": "`criu check` fails (criu missing, or the kernel lacks what it needs)",
}


class SkipListError(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    kind: str                    # "skip" or "expect_skip"
    test: str
    reason: str
    versions: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()
    when: str | None = None

    def applies(self, version: str, runtime: str, conditions: frozenset[str]) -> bool:
        return ((not self.versions or version in self.versions) and (not self.runtimes or runtime in self.runtimes)
                and (self.when is None or self.when in conditions))

    def covers(self, name: str) -> bool:
        """True for the test itself and, for a parent test, its subtests."""
        return name == self.test or name.startswith(self.test + "/")


def load(path: Path = DEFAULT) -> list[Entry]:
    data = tomllib.loads(path.read_text())
    unknown = set(data) - {"skip", "expect_skip"}
    if unknown:
        raise SkipListError(f"{path}: unknown tables {sorted(unknown)}")
    entries, seen = [], set()
    for kind in ("skip", "expect_skip"):
        for raw in data.get(kind, []):
            bad = set(raw) - KEYS
            if bad or not raw.get("test") or not str(raw.get("reason", "")).strip():
                raise SkipListError(f"{path}: [[{kind}]] {raw.get('test')!r}: needs test and reason, "
                                    f"allows {sorted(KEYS)} (unknown: {sorted(bad)})")
            if raw.get("when") is not None and raw["when"] not in CONDITIONS:
                raise SkipListError(f"{path}: {raw['test']}: unknown condition {raw['when']!r}; "
                                    f"known {sorted(CONDITIONS)}")
            entry = Entry(kind, raw["test"], " ".join(raw["reason"].split()),
                          tuple(raw.get("versions", ())), tuple(raw.get("runtimes", ())), raw.get("when"))
            key = (entry.test, entry.versions, entry.runtimes, entry.when)
            if key in seen:
                raise SkipListError(f"{path}: duplicate entry for {entry.test}")
            seen.add(key)
            entries.append(entry)
    return entries


def excluded(entries: list[Entry], version: str, runtime: str, conditions: frozenset[str]) -> list[Entry]:
    return [e for e in entries if e.kind == "skip" and e.applies(version, runtime, conditions)]


def skip_pattern(entries: list[Entry]) -> str:
    """The ``-test.skip`` value for ``entries``: alternatives, each anchored per ``/`` level."""
    return "|".join("/".join(f"^{re.escape(level)}$" for level in e.test.split("/")) for e in entries)


def expected_skip(entries: list[Entry], version: str, runtime: str, conditions: frozenset[str],
                  name: str) -> Entry | None:
    for e in entries:
        if e.kind == "expect_skip" and e.applies(version, runtime, conditions) and e.covers(name):
            return e
    return None


def probe_conditions() -> frozenset[str]:
    """Which CONDITIONS hold on this machine now."""
    held = set()
    criu = shutil.which("criu")
    if criu is None or subprocess.run([criu, "check"], capture_output=True, timeout=60).returncode != 0:
        held.add("criu-unusable")
    return frozenset(held)
