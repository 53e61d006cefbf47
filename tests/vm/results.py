"""What a VM run came to: the exit status of tools/vm-test and the counts of the guest's JUnit report.

Rules (pure functions over what the run left: qemu's fate, the serial markers, the results files):
- qemu killed at its deadline -> 124 (like timeout(1)), whatever the guest wrote.
- No results tar from the guest (it never booted, or died before writing) -> 125.
- Otherwise the guest's run.rc: pytest's exit status (0 passed, 1 failed, 5 nothing collected, ...),
  3 when the guest was not pure cgroup v2, 124 when pytest outlived its time-out in the guest.
- JUnit counting is tools/run-tests's: passed = tests - failures - errors - skipped.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

TIMEOUT = 124
NO_RESULTS = 125
NOT_CGROUP2 = 3


@dataclass(frozen=True)
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    def __str__(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"


@dataclass(frozen=True)
class Verdict:
    code: int
    reason: str


def junit_counts(xml_text: str) -> Counts:
    root = ET.fromstring(xml_text)
    passed = failed = skipped = 0
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        tests, skip = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        passed += tests - bad - skip
        failed += bad
        skipped += skip
    return Counts(passed, failed, skipped)


def verdict(qemu_returncode: int | None, run_rc: str | None) -> Verdict:
    """``qemu_returncode`` None = killed at the deadline; ``run_rc`` = content of the guest's run.rc, if any."""
    if qemu_returncode is None:
        return Verdict(TIMEOUT, "qemu killed at the host-side deadline")
    if run_rc is None:
        return Verdict(NO_RESULTS, f"the guest wrote no results (qemu exit {qemu_returncode})")
    try:
        code = int(run_rc.strip())
    except ValueError:
        return Verdict(NO_RESULTS, f"unreadable run.rc {run_rc!r}")
    reasons = {0: "pytest passed", 1: "tests failed", 2: "pytest interrupted", 4: "pytest usage error",
               5: "no tests collected", NOT_CGROUP2: "the guest is not pure cgroup v2",
               TIMEOUT: "pytest outlived its time-out in the guest"}
    return Verdict(code, reasons.get(code, f"guest run exited {code}"))
