"""Boot the test VM with qemu: the accelerator choice, the command line, and one supervised run.

Rules:
- KVM only when /dev/kvm is writable *and* the CPU flags show real VMX/SVM.  On this machine /dev/kvm is PVM
  (no vmx/svm in /proc/cpuinfo): stock kernels die there with "KVM internal error" and qemu then sits paused
  forever, and ``-accel kvm:tcg`` does not fall back because opening KVM succeeds.  So: TCG otherwise.
- qemu always runs under a deadline (``run``): past it qemu is killed (SIGKILL; it has nothing to clean up,
  the root disk is snapshot=on) and the run reports the timeout.  The exchange disk is the only output.
- The serial console goes to a file that ``run`` follows and hands line by line to a callback, so the
  caller can show the guest's progress while it runs.
"""
from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class Machine:
    kernel: Path
    initrd: Path
    rootfs: Path
    exchange: Path
    serial: Path
    accel: str = "tcg"  # "tcg" or "kvm"
    cpus: int = 2
    memory_mb: int = 2048
    init: str = "/sbin/vminit"
    append: str = ""


def choose_accel(wanted: str, cpuinfo: str, kvm_writable: bool) -> str:
    """``auto`` -> kvm only with a writable /dev/kvm and vmx/svm among the CPU flags, else tcg."""
    if wanted in ("tcg", "kvm"):
        return wanted
    if wanted != "auto":
        raise ValueError(f"accelerator must be auto, tcg or kvm, not {wanted!r}")
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return "kvm" if kvm_writable and flags & {"vmx", "svm"} else "tcg"


def kernel_cmdline(m: Machine) -> str:
    # loglevel=3: only critical kernel messages interleave with the test output (dmesg.txt has the rest)
    parts = ["root=/dev/vda", "rw", "console=ttyS0", "quiet", "loglevel=3", "panic=-1", f"vminit={m.init}"]
    return " ".join(parts + ([m.append] if m.append else []))


def argv(m: Machine) -> list[str]:
    accel = ["-accel", "kvm", "-cpu", "host"] if m.accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    return [QEMU, *accel, "-m", str(m.memory_mb), "-smp", str(m.cpus),
            "-nodefaults", "-nographic", "-no-reboot", "-monitor", "none",
            "-serial", f"file:{m.serial}",
            "-kernel", str(m.kernel), "-initrd", str(m.initrd), "-append", kernel_cmdline(m),
            "-drive", f"file={m.rootfs},format=raw,if=virtio,cache=unsafe,snapshot=on",
            "-drive", f"file={m.exchange},format=raw,if=virtio,cache=unsafe",
            "-device", "virtio-rng-pci"]


@dataclass(frozen=True)
class Run:
    returncode: int | None  # None: killed at the deadline
    seconds: float
    stderr: str


_VMTEST = re.compile(r"VMTEST (.*)$")  # anywhere in the line: the console may prefix escape sequences
_PAIR = re.compile(r"(?:^|\s)(\w+)=(\S*)")


def markers(serial_text: str) -> dict[str, str]:
    """``VMTEST key=value ...`` lines of the serial log as a dict (later lines win)."""
    found: dict[str, str] = {}
    for line in serial_text.splitlines():
        m = _VMTEST.search(line.strip())
        if m:
            found.update(_PAIR.findall(m.group(1)))
    return found


def run(m: Machine, timeout: float, on_line: Callable[[str], None] = lambda line: None) -> Run:
    """Boot ``m`` and wait for it to power off, at most ``timeout`` seconds; serial lines go to ``on_line``."""
    m.serial.write_bytes(b"")
    start = time.monotonic()
    errlog = m.serial.with_name(m.serial.name + ".stderr")
    with open(errlog, "wb") as err:
        proc = subprocess.Popen(argv(m), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    offset, partial, killed = 0, b"", False
    try:
        while True:
            done = proc.poll() is not None
            with open(m.serial, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            *lines, partial = (partial + chunk).split(b"\n")
            for line in lines:
                on_line(line.rstrip(b"\r").decode(errors="replace"))
            if done:
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                killed = True
                proc.wait()
                break
            time.sleep(0.25)
        if partial:
            on_line(partial.decode(errors="replace"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Run(None if killed else proc.returncode, time.monotonic() - start, errlog.read_text(errors="replace"))
