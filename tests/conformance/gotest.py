"""Results of one ``go test`` run, read from ``go tool test2json`` events, and their JUnit report.

Rules:
- A result is counted per leaf test: a test that ran subtests is represented by its subtests only (its own
  pass/fail follows from theirs), so "TestUserNamespaces" counts as its six cases.
- A test with a start but no end event (the binary died or timed out) is a failure, as is a run whose
  binary exited non-zero while every test passed (e.g. TestMain failed or the suite panicked).
- Each test keeps its own output lines, so a failure or skip can be shown with its reason.
- Tests excluded by the skip list never run; the caller adds them as skipped with the list's reason.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable


@dataclass
class TestResult:
    name: str
    status: str = "run"            # run (started, never ended), pass, fail, skip
    seconds: float = 0.0
    output: list[str] = field(default_factory=list)

    def reason(self, lines: int = 60) -> str:
        """The test's output tail: the failure messages or the skip reason."""
        body = [ln for ln in self.output if not ln.startswith(("=== RUN", "=== PAUSE", "=== CONT", "=== NAME"))]
        return "".join(body[-lines:]).rstrip()


@dataclass
class RunResult:
    tests: dict[str, TestResult] = field(default_factory=dict)
    package_output: list[str] = field(default_factory=list)  # output outside any test (TestMain, panics)
    exit_code: int | None = None
    excluded: dict[str, str] = field(default_factory=dict)   # skip list: test pattern -> reason
    problems: list[str] = field(default_factory=list)        # the runner's own findings (leftovers, ...)

    def feed(self, events: Iterable[str]) -> None:
        for line in events:
            try:
                ev = json.loads(line)
            except ValueError:
                self.package_output.append(line)
                continue
            name = ev.get("Test")
            if not name:
                if ev.get("Action") == "output":
                    self.package_output.append(ev.get("Output", ""))
                continue
            t = self.tests.setdefault(name, TestResult(name))
            action = ev.get("Action")
            if action == "output":
                t.output.append(ev.get("Output", ""))
            elif action in ("pass", "fail", "skip"):
                t.status, t.seconds = action, float(ev.get("Elapsed", 0.0))

    def leaves(self) -> list[TestResult]:
        parents = {n.rsplit("/", 1)[0] for n in self.tests if "/" in n}
        return [t for n, t in sorted(self.tests.items()) if n not in parents]

    def counts(self) -> tuple[int, int, int]:
        leaves = self.leaves()
        passed = sum(t.status == "pass" for t in leaves)
        failed = sum(t.status in ("fail", "run") for t in leaves) + len(self.problems)
        skipped = sum(t.status == "skip" for t in leaves) + len(self.excluded)
        if self.exit_code not in (0, None) and failed == 0:
            failed = 1  # the binary failed outside any test: TestMain, a panic, the time-out
        return passed, failed, skipped

    def failures(self) -> list[TestResult]:
        return [t for t in self.leaves() if t.status in ("fail", "run")]

    def skips(self) -> list[TestResult]:
        return [t for t in self.leaves() if t.status == "skip"]


def write_junit(runs: list[tuple[str, RunResult]], path: Path) -> None:
    """One JUnit file, one ``testsuite`` per run, whose counts equal ``RunResult.counts()``."""
    root = ET.Element("testsuites")
    for suite_name, result in runs:
        _suite(root, suite_name, result)
    ET.ElementTree(root).write(path, encoding="unicode", xml_declaration=True)


def _suite(root: ET.Element, suite_name: str, result: RunResult) -> None:
    passed, failed, skipped = result.counts()
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(passed + failed + skipped),
                          failures=str(failed), errors="0", skipped=str(skipped))
    for t in result.leaves():
        case = ET.SubElement(suite, "testcase", classname=suite_name, name=t.name, time=f"{t.seconds:.3f}")
        if t.status in ("fail", "run"):
            what = "failed" if t.status == "fail" else "never finished"
            ET.SubElement(case, "failure", message=what).text = t.reason()
        elif t.status == "skip":
            ET.SubElement(case, "skipped", message=t.reason(5))
    for pattern, reason in sorted(result.excluded.items()):
        case = ET.SubElement(suite, "testcase", classname=suite_name, name=pattern)
        ET.SubElement(case, "skipped", message=f"skip list: {reason}")
    extra = list(result.problems)
    if result.exit_code not in (0, None) and not result.failures() and not result.problems:
        extra.append(f"test binary exited {result.exit_code}:\n" + "".join(result.package_output[-80:]))
    for i, problem in enumerate(extra):
        case = ET.SubElement(suite, "testcase", classname=suite_name, name=f"runner-check-{i}")
        ET.SubElement(case, "failure", message="runner check").text = problem
