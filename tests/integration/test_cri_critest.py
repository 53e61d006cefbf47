"""cri-tools' critest (the Kubernetes CRI validation suite) against containerd's CRI plugin with runtime
handler ``pyshim``, and with ``runc`` (io.containerd.runc.v2) side by side, on each containerd version.

Rules:
- critest is built from Go modules (harness/cri_tools.py, cached); its images come from the harness's
  local registry under their own names (harness/cri_images.py, cri_registry.py).
- Not run: only the specs in critest_skips.py, each with a reason that holds for every runtime.  Every other
  spec must pass for both handlers, and pyshim must pass exactly the specs runc passes (and skip exactly
  what it skips): a spec that fails only for pyshim is ours to fix.  The one stated exception is
  critest_skips.NOT_INTROSPECTED: specs critest skips for pyshim on containerd 2.x because containerd reports
  handler features only for runtime_type io.containerd.runc.v2; they must pass for runc and be skipped
  (not failed) for pyshim.
- Each run prints ``critest <version> <handler>: N passed, M failed, K skipped`` (also in the JUnit
  properties of the test), the counts the CI log reports.
- Versions: the three pyshim targets (CRITEST_VERSIONS) among those selected by $PYSHIM_CONTAINERD_VERSIONS;
  a critest run takes minutes per handler, so the newer builds in the matrix run the short CRI tests only.
"""
from __future__ import annotations

import re
import subprocess

import pytest

from tests.integration.conftest import _versions
from tests.integration.critest_skips import BY_VERSION, NOT_INTROSPECTED, SKIPS, skips_for
from tests.integration.cri_helpers import cri, cri_registry  # noqa: F401
from tests.integration.harness import cri_tools, critest, dist
from tests.integration.harness.cri_daemon import HANDLERS, CriContainerd
from tests.prereq import unavailable

OUTCOMES: dict[tuple[str, str], critest.Outcome] = {}
CRITEST_VERSIONS = ("1.6.20", "1.7.24", "2.1.9")
versions = pytest.mark.parametrize("containerd_version", [v for v in _versions() if v in CRITEST_VERSIONS],
                                   indirect=True, ids=lambda v: f"containerd-{v}")


@pytest.fixture(scope="session")
def critools(integration_host: None) -> cri_tools.CriTools:
    try:
        return cri_tools.ensure()
    except dist.Unavailable as exc:
        unavailable(f"critest {cri_tools.CRI_TOOLS_VERSION} could not be built: {exc}")


def test_every_skip_names_a_spec(critools: cri_tools.CriTools, tmp_path) -> None:
    report = tmp_path / "dry-run.xml"
    res = subprocess.run([str(critools.critest), "--ginkgo.dry-run", "--ginkgo.no-color",
                          f"--ginkgo.junit-report={report}"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, stdin=subprocess.DEVNULL)
    assert report.exists(), res.stdout[-2000:] + res.stderr[-2000:]
    passed, failed, skipped = critest.parse_report(report)
    specs = passed + list(failed) + skipped
    assert len(specs) > 50, specs
    keys = [*SKIPS, *(k for version in BY_VERSION.values() for k in version),
            *(k for major in NOT_INTROSPECTED.values() for k in major)]
    unmatched = [key for key in keys if not any(re.search(key, s) for s in specs)]
    assert unmatched == [], f"skip keys matching no spec of critest {critools.version}"


@versions
@pytest.mark.parametrize("handler", list(HANDLERS))
def test_critest(cri: CriContainerd, critools: cri_tools.CriTools, handler: str, tmp_path,
                 record_property) -> None:
    outcome = critest.run(critools, cri, handler, tmp_path, skips_for(cri.dist.version))
    OUTCOMES[(cri.dist.version, handler)] = outcome
    line = f"critest {cri.dist.version} {handler}: {outcome.summary()} ({outcome.seconds:.0f}s)"
    print(line)
    record_property("critest", line)
    failures = "\n".join(f"- {name}\n    {msg.replace(chr(10), chr(10) + '    ')}"
                         for name, msg in outcome.failed.items())
    assert not outcome.failed, f"{line}\n{failures}"
    assert outcome.passed, line


@versions
def test_pyshim_passes_what_runc_passes(containerd_version: str) -> None:
    runs = {h: OUTCOMES.get((containerd_version, h)) for h in HANDLERS}
    missing = [h for h, o in runs.items() if o is None]
    if missing:
        pytest.fail(f"no critest run for {missing} on {containerd_version} (run test_critest first)", pytrace=False)
    pyshim, runc = runs["pyshim"], runs["runc"]
    keys = NOT_INTROSPECTED.get(int(containerd_version.split(".")[0]), ())
    unasked = {s for s in runc.passed if any(re.search(k, s) for k in keys)}
    assert set(pyshim.failed) == set(runc.failed) == set()
    assert set(pyshim.passed) == set(runc.passed) - unasked
    assert set(pyshim.skipped) == set(runc.skipped) | unasked
    assert bool(unasked) == bool(keys), sorted(unasked)  # the exception names specs runc really passes
