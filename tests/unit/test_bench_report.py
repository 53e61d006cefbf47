"""The shim benchmark's table (bench/shimbench/report.py): columns, ratios and rows left out.

The benchmark itself is never a test (it measures, it judges nothing); these check only that its table says
what the JSON holds: a wrong ratio or a Rust column that silently disappears would mislead the README.
"""
from __future__ import annotations

from types import SimpleNamespace

from bench.shimbench import report

ARGS = SimpleNamespace(runs=3, exec_runs=3, calls=10)


def info(rust: str | None, shared: bool = False) -> dict:
    return {"cores": 2, "cpu": "cpu", "os": "os", "kernel": "k", "python": "3.11", "containerd": "1.6.20",
            "load_1m": 0.5, "rust_shim": rust, "shared": shared}


def row(text: str, name: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(name))
    return line[len(name):].split()


def test_two_columns_without_the_rust_shim():
    res = {"a_run_rm": {"pyshim": [0.2, 0.3, 0.1], "go": [0.1, 0.1, 0.1]}}
    text = report.table(res, info(None), "today", ARGS)
    assert "rust" not in text.splitlines()[2]
    assert row(text, "(a) ctr run --rm /bin/true, median ms") == ["200.0", "100.0", "2.00", "<=", "1.00"]
    assert "(b)" not in text and "(g)" not in text  # cases that did not run have no rows


def test_rust_column_and_its_ratio():
    res = {"a_run_rm": {"pyshim": [0.12], "go": [0.1], "rust": [0.08]},
           "f_state": {k: {"state_rps_1": v, "state_p99_ms_1": 1.0, "state_rps_8": v, "state_p99_ms_8": 2.0}
                       for k, v in (("pyshim", 500.0), ("go", 1000.0), ("rust", 250.0))}}
    text = report.table(res, info("/x/containerd-shim-runc-v2-rs"), "today", ARGS)
    assert text.splitlines()[0].endswith("rust: /x/containerd-shim-runc-v2-rs")
    assert row(text, "(a) ctr run --rm /bin/true, median ms") == ["120.0", "100.0", "80.0", "1.20", "1.50", "<=",
                                                                    "1.00"]
    assert row(text, "(f) State calls/s, 8 caller(s)") == ["500", "1000", "250", "0.50", "2.00", ">=", "0.5"]


def test_memory_rows_count_processes_of_every_shim_and_the_fork_server_only_for_pyshim():
    kib = 1024
    res = {"c_memory": {
        "pyshim_daemon_1": {"rss": 30 * kib, "pss": 15 * kib, "uss": 10 * kib},
        "go_daemon_1": {"rss": 13 * kib, "pss": 12 * kib, "uss": 12 * kib},
        "pyshim": {"tasks_100": {"processes": 103, "pss": 900 * kib}},
        "go": {"tasks_100": {"processes": 100, "pss": 300 * kib}},
        "forkserver_alone": {"1": {"pss": 40 * kib}, "2": {"pss": 5 * kib}}}}
    text = report.table(res, info(None), "today", ARGS)
    assert row(text, "(c) total PSS, tasks 100 (103/100 procs)") == ["900.0", "300.0", "3.00", "<=", "1.0"]
    assert row(text, "(c) 1 container: the daemon's USS, MiB") == ["10.0", "12.0", "0.83"]
    assert row(text, "(c)   of which fork server + zygotes (no tasks), PSS") == ["45.0", "-"]


def test_shared_column_its_ratios_and_targets():
    kib = 1024
    res = {"a_run_rm": {"pyshim": [0.12], "shared": [0.09], "go": [0.1], "rust": [0.08]},
           "b_direct": {k: [{"start_answer": v, "start_exit": v, "start_cpu": v, "delete": v, "delete_cpu": v,
                             "shutdown": None if k == "shared" else v, "shutdown_answer": None if k == "shared" else v}]
                        for k, v in (("pyshim", 0.016), ("pyshim_fresh", 0.2), ("shared", 0.008), ("go", 0.008),
                                     ("rust", 0.004))},
           "c_memory": {"pyshim": {"tasks_100": {"processes": 103, "pss": 900 * kib}},
                        "shared": {"tasks_100": {"processes": 2, "pss": 60 * kib}},
                        "go": {"tasks_100": {"processes": 100, "pss": 300 * kib}},
                        "rust": {"tasks_100": {"processes": 100, "pss": 100 * kib}}}}
    text = report.table(res, info("/x/rs", shared=True), "today", ARGS)
    assert text.splitlines()[2].split()[1:9] == ["pyshim", "shared", "runc.v2", "rust", "py/go", "sh/go", "py/rust",
                                                  "sh/rust"]
    assert row(text, "(a) ctr run --rm /bin/true, median ms") == [
        "120.0", "90.0", "100.0", "80.0", "1.20", "0.90", "1.50", "1.12", "<=", "1.00;", "sh", "<=", "1.0", "(0.9)"]
    assert row(text, "(c) total PSS, tasks 100 (103/2/100/100 procs)")[:8] == [
        "900.0", "60.0", "300.0", "100.0", "3.00", "0.20", "9.00", "0.60"]
    assert row(text, "(b)   without the fork server (fresh daemon)")[:4] == ["200.0", "-", "8.0", "4.0"]
    assert row(text, "(b) Shutdown answered, ms")[:4] == ["16.0", "-", "8.0", "4.0"]  # a shared daemon has none


def test_churn_line_shows_footprint_slopes_and_leaks():
    res = {"i_churn": {"mode": "shared", "lifecycles": 2000, "seconds": 600.0, "per_second": 3.33, "watched_pid": 9,
                       "before": {"n": 0, "seconds": 0.0, "fds": 22, "threads": 1, "rss": 32 * 1024},
                       "after": {"n": 2000, "seconds": 600.0, "fds": 22, "threads": 1, "rss": 33 * 1024},
                       "slopes_per_1000": {"fds": 0.0, "threads": 0.0, "rss": 410.4}, "leaks": ["mount /x"]}}
    line = next(ln for ln in report.table(res, info(None), "today", ARGS).splitlines() if ln.startswith("(i)"))
    assert "2000 lifecycles in 600 s" in line and "fds 22 -> 22" in line and "RSS 32.0 -> 33.0 MiB" in line
    assert "RSS +410 KiB" in line and line.endswith("left behind: mount /x")
