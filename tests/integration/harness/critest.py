"""Run cri-tools' critest against a CRI containerd with one runtime handler and read back its JUnit report.

Rules:
- critest talks to the instance's gRPC socket (runtime and image endpoints), with ``--runtime-handler``;
  its images come from the local registry through the instance's hosts.toml (cri_registry.py), so the
  reference names it uses are its own, unchanged.
- The specs we do not run are passed as ``--ginkgo.skip`` regular expressions; the caller owns that list
  and its reasons (tests/integration/critest_skips.py).  Specs critest skips by itself (e.g. NRI without
  a socket) count as skipped.
- The result counts come from ginkgo's JUnit report.  A run that leaves no report is an error carrying the
  output's tail.  critest runs under a hard time-out.
- A failed spec is run once more (``--ginkgo.flake-attempts=2``), for both handlers alike: a few specs race
  their own container's exit against StopPodSandbox inside containerd (seen once for runc.v2 on 1.6.20:
  attach, "failed to kill container: ttrpc: closed").  Ginkgo counts such a spec as passed; how many needed
  the second run is read from its summary line ("N Flaked") and shown in ``summary()``, never hidden.
"""
from __future__ import annotations

import re
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .cri_daemon import CriContainerd
from .cri_tools import CriTools

TIMEOUT = 30 * 60


class CritestError(Exception):
    """critest did not produce a report (crash, time-out, usage error); the message has its output."""


@dataclass(frozen=True)
class Outcome:
    passed: tuple[str, ...]
    failed: dict[str, str] = field(default_factory=dict)   # spec name -> failure message (first lines)
    skipped: tuple[str, ...] = ()
    seconds: float = 0.0
    output: str = field(default="", repr=False)
    flaked: int = 0   # specs that passed only on their second run

    def summary(self) -> str:
        return (f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"
                + (f" ({self.flaked} passed on a second run)" if self.flaked else ""))


def argv(tools: CriTools, instance: CriContainerd, handler: str, report: Path, skips: Sequence[str]) -> list[str]:
    """Serial run: critest's ``--parallel`` needs the ginkgo CLI, and 2 cores gain little from it."""
    endpoint = f"unix://{instance.address}"
    return [str(tools.critest), f"--runtime-endpoint={endpoint}", f"--image-endpoint={endpoint}",
            f"--runtime-handler={handler}", "--ginkgo.no-color",
            f"--ginkgo.junit-report={report}", "--ginkgo.flake-attempts=2",
            *(f"--ginkgo.skip={s}" for s in skips)]


def parse_report(report: Path) -> tuple[list[str], dict[str, str], list[str]]:
    passed, failed, skipped = [], {}, []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = re.sub(r"\s+", " ", case.get("name", "")).strip()
        if name.startswith("[BeforeSuite]") or name.startswith("[AfterSuite]") or \
                name.startswith("[SynchronizedBeforeSuite]") or name.startswith("[SynchronizedAfterSuite]"):
            bad = case.find("failure") is not None or case.find("error") is not None
            if not bad:
                continue
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            message = (problem.get("message") or problem.text or "").strip()
            failed[name] = "\n".join(message.splitlines()[:6])
        elif case.find("skipped") is not None:
            skipped.append(name)
        else:
            passed.append(name)
    return passed, failed, skipped


def run(tools: CriTools, instance: CriContainerd, handler: str, workdir: Path, skips: Sequence[str],
        timeout: float = TIMEOUT) -> Outcome:
    report = workdir / f"critest-{handler}.xml"
    report.unlink(missing_ok=True)
    cmd = argv(tools, instance, handler, report, skips)
    start = time.monotonic()
    try:
        res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, env=instance.env())
        output = res.stdout + res.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        raise CritestError(f"critest timed out after {timeout}s:\n{text[-4000:]}") from None
    if not report.exists():
        raise CritestError(f"critest (exit {res.returncode}) wrote no report:\n{output[-4000:]}")
    passed, failed, skipped = parse_report(report)
    flaked = re.findall(r"\b(\d+) Flaked\b", output)
    return Outcome(tuple(passed), failed, tuple(skipped), time.monotonic() - start, output,
                   int(flaked[-1]) if flaked else 0)
