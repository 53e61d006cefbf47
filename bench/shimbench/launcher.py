"""Runs the shim commands of case (b) from inside containerd's cgroup, as containerd itself forks them.

Started once by direct.Runner (which moves it into the cgroup before it execs), it reads one JSON request per
line on stdin -- ``{"argv": [...], "cwd": "...", "env": {...}}`` -- runs the command with stdin /dev/null and
stdout+stderr captured, and writes one JSON line: ``{"t0", "t1"}`` (time.perf_counter, CLOCK_MONOTONIC, the
same clock as the benchmark's), ``cpu`` (the command's own user+system seconds from wait4), ``rc`` and ``out``
(hex). Joining the cgroup per command instead (a write to cgroup.procs before each exec) put a cgroup v1
migration of 5-10 ms into the timed window of whichever shim it hit. Standard library only.
"""
import json
import os
import subprocess
import sys
import time


def main() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        t0 = time.perf_counter()
        p = subprocess.Popen(req["argv"], cwd=req["cwd"], env=req["env"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        t1 = time.perf_counter()
        p.stdout.close()
        sys.stdout.write(json.dumps({"t0": t0, "t1": t1, "cpu": usage.ru_utime + usage.ru_stime,
                                     "rc": os.waitstatus_to_exitcode(status), "out": out.hex()}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
