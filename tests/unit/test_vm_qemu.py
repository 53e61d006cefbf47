"""tests/vm/qemu.py and results.py: accelerator choice, qemu argv, serial markers, verdicts, JUnit counts."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm import qemu, results

PVM_CPUINFO = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr hypervisor lahf_lm\n"
VMX_CPUINFO = "processor\t: 0\nflags\t\t: fpu vme vmx hypervisor\n"


@pytest.mark.parametrize("wanted,cpuinfo,writable,expected", [
    ("auto", PVM_CPUINFO, True, "tcg"),    # PVM host: /dev/kvm opens, but no vmx/svm -> never kvm
    ("auto", VMX_CPUINFO, True, "kvm"),
    ("auto", VMX_CPUINFO, False, "tcg"),
    ("auto", "flags : svm\n", True, "kvm"),
    ("tcg", VMX_CPUINFO, True, "tcg"),
    ("kvm", PVM_CPUINFO, False, "kvm"),    # explicit choice is obeyed
])
def test_choose_accel(wanted, cpuinfo, writable, expected):
    assert qemu.choose_accel(wanted, cpuinfo, writable) == expected


def test_choose_accel_rejects_unknown():
    with pytest.raises(ValueError):
        qemu.choose_accel("kvm:tcg", PVM_CPUINFO, True)


def _machine(**kw) -> qemu.Machine:
    base = dict(kernel=Path("/c/vmlinuz"), initrd=Path("/c/initrd.img"), rootfs=Path("/c/rootfs.img"),
                exchange=Path("/w/x.img"), serial=Path("/w/serial.log"))
    return qemu.Machine(**{**base, **kw})


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_argv_tcg_defaults():
    argv = qemu.argv(_machine())
    assert argv[0] == "qemu-system-x86_64"
    assert _opt(argv, "-accel") == ["tcg,thread=multi"] and _opt(argv, "-cpu") == ["max"]
    assert _opt(argv, "-m") == ["2048"] and _opt(argv, "-smp") == ["2"]
    assert "-no-reboot" in argv and "-nographic" in argv and "-nodefaults" in argv
    assert _opt(argv, "-serial") == ["file:/w/serial.log"]
    assert _opt(argv, "-kernel") == ["/c/vmlinuz"] and _opt(argv, "-initrd") == ["/c/initrd.img"]
    root, exchange = _opt(argv, "-drive")
    assert root == "file=/c/rootfs.img,format=raw,if=virtio,cache=unsafe,snapshot=on"  # cached image stays pristine
    assert exchange == "file=/w/x.img,format=raw,if=virtio,cache=unsafe"
    (append,) = _opt(argv, "-append")
    assert append.split() == ["root=/dev/vda", "rw", "console=ttyS0", "quiet", "loglevel=3", "panic=-1",
                              "vminit=/sbin/vminit"]


def test_argv_kvm_and_options():
    argv = qemu.argv(_machine(accel="kvm", cpus=4, memory_mb=1024, init="/bin/sh", append="debug"))
    assert _opt(argv, "-accel") == ["kvm"] and _opt(argv, "-cpu") == ["host"]
    assert _opt(argv, "-m") == ["1024"] and _opt(argv, "-smp") == ["4"]
    assert _opt(argv, "-append")[0].endswith("vminit=/bin/sh debug")


def test_markers_survive_escape_prefixes_and_later_lines_win():
    text = ("\x1bc\x1b[?7l\x1b[2JVMTEST init_uptime=6.83\nnoise VMTEST = x\n"
            "VMTEST pytest_rc=1 pytest_done_uptime=40.5\r\nVMTEST pytest_rc=0\n")
    assert qemu.markers(text) == {"init_uptime": "6.83", "pytest_rc": "0", "pytest_done_uptime": "40.5"}


def test_run_kills_qemu_at_the_deadline(tmp_path, monkeypatch):
    # a stand-in for qemu that writes a serial line and never exits: the deadline must end it
    fake = tmp_path / "fake-qemu"
    fake.write_text("#!/bin/sh\nfor a; do case $a in file:*) echo 'VMTEST up=1' > ${a#file:};; esac; done\n"
                    "exec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setattr(qemu, "QEMU", str(fake))
    lines: list[str] = []
    run = qemu.run(_machine(serial=tmp_path / "serial.log"), timeout=1.0, on_line=lines.append)
    assert run.returncode is None and 1.0 <= run.seconds < 10
    assert lines == ["VMTEST up=1"]


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">
<testsuite name="pytest" errors="1" failures="2" skipped="3" tests="20" time="1.0"/></testsuites>"""


def test_junit_counts_like_run_tests():
    assert results.junit_counts(JUNIT) == results.Counts(passed=14, failed=3, skipped=3)
    single = '<testsuite name="pytest" errors="0" failures="0" skipped="0" tests="4"/>'
    assert str(results.junit_counts(single)) == "4 passed, 0 failed, 0 skipped"


@pytest.mark.parametrize("qemu_rc,run_rc,code", [
    (None, "0\n", results.TIMEOUT),       # killed at the host deadline, whatever the guest said
    (0, None, results.NO_RESULTS),         # no results tar
    (1, None, results.NO_RESULTS),
    (0, "garbage", results.NO_RESULTS),
    (0, "0\n", 0),
    (0, "1\n", 1),
    (0, "5\n", 5),                         # nothing collected is a failure for run-tests
    (0, "3\n", results.NOT_CGROUP2),
    (0, "124\n", results.TIMEOUT),
])
def test_verdict(qemu_rc, run_rc, code):
    assert results.verdict(qemu_rc, run_rc).code == code
