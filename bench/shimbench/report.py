"""The shim benchmark's table: one row per measure, pyshim and runc.v2 side by side, their ratio and the target.

Rules: times are medians in ms unless the row says otherwise (p90, wall seconds); memory is MiB summed over
the shim processes; a ratio is pyshim / runc.v2 (for calls/s a higher ratio is better, for everything else
lower); a row whose case did not run is left out.
"""
from __future__ import annotations

from .measure import median, percentile


def _row(name: str, py: float | None, go: float | None, target: str = "", fmt: str = "{:.1f}") -> str:
    p = fmt.format(py) if py is not None else "-"
    g = fmt.format(go) if go is not None else "-"
    ratio = f"{py / go:.2f}" if py is not None and go else ""
    return f"{name:<46} {p:>10} {g:>10} {ratio:>7}  {target}"


def table(res: dict, info: dict, started: str, args) -> str:
    lines = [f"{started}  {info['cores']} cores {info['cpu']}, {info['os']}, kernel {info['kernel']}, "
             f"python {info['python']}, containerd {info['containerd']}, load {info['load_1m']:.2f}",
             f"{args.runs} A/B rounds for a/b/g, {args.exec_runs} execs, {args.calls} State calls per row",
             f"{'measure':<46} {'pyshim':>10} {'runc.v2':>10} {'ratio':>7}  target (ratio)"]
    ms = lambda xs: median(xs) * 1e3 if xs else None  # noqa: E731
    if "a_run_rm" in res:
        a = res["a_run_rm"]
        lines.append(_row("(a) ctr run --rm /bin/true, median ms", ms(a["pyshim"]), ms(a["go"]), "<= 1.00"))
        if a["pyshim"] and a["go"]:
            lines.append(_row("(a)   p90 ms", percentile(a["pyshim"], 0.9) * 1e3, percentile(a["go"], 0.9) * 1e3))
    if "b_direct" in res:
        b = res["b_direct"]

        def col(key: str, field: str) -> float | None:
            return ms([r[field] for r in b[key]])
        lines.append(_row("(b) start exec -> socket answers, ms", col("pyshim", "start_answer"),
                          col("go", "start_answer"), "<= 1.1"))
        lines.append(_row("(b)   without the fork server (fresh daemon)", col("pyshim_fresh", "start_answer"),
                          col("go", "start_answer")))
        lines.append(_row("(b)   start command exits, ms", col("pyshim", "start_exit"), col("go", "start_exit")))
        lines.append(_row("(b)   start command CPU, ms", col("pyshim", "start_cpu"), col("go", "start_cpu")))
        lines.append(_row("(b) delete command (no runtime state), ms", col("pyshim", "delete"), col("go", "delete"),
                          "<= 1.0"))
        lines.append(_row("(b)   delete command CPU, ms", col("pyshim", "delete_cpu"), col("go", "delete_cpu")))
        lines.append(_row("(b) Shutdown answered, ms", col("pyshim", "shutdown_answer"), col("go", "shutdown_answer")))
        lines.append(_row("(b)   Shutdown -> daemon gone, ms", col("pyshim", "shutdown"), col("go", "shutdown")))
    if "c_memory" in res:
        m = res["c_memory"]
        mib = lambda kib: kib / 1024  # noqa: E731
        for field in ("rss", "pss", "uss"):
            py, go = m.get("pyshim_daemon_1", {}), m.get("go_daemon_1", {})
            lines.append(_row(f"(c) 1 container: the daemon's {field.upper()}, MiB", mib(py.get(field, 0)),
                              mib(go.get(field, 0))))
        for key in m.get("pyshim", {}):
            py, go = m["pyshim"][key], m["go"][key]
            target = "<= 1.0" if key in ("tasks_100", "groups_10x10") else ""
            lines.append(_row(f"(c) total PSS, {key.replace('_', ' ')} ({py['processes']}/{go['processes']} procs)",
                              mib(py["pss"]), mib(go["pss"]), target))
        fork = sum(v.get("pss", 0) for v in m.get("forkserver_alone", {}).values())
        lines.append(_row("(c)   of which fork server + zygotes (no tasks), PSS", mib(fork), None))
    if "d_concurrent" in res:
        d = res["d_concurrent"]
        for key in d["pyshim"]:
            target = "<= 0.8" if key == "separate_50" else ""
            lines.append(_row(f"(d) {key.replace('_', ' ')} concurrent ctr run -d, wall s", d["pyshim"][key],
                              d["go"][key], target, "{:.2f}"))
    if "e_exec" in res:
        e = res["e_exec"]
        lines.append(_row("(e) ctr task exec /bin/true, median ms", ms(e["pyshim"]), ms(e["go"]), "<= 1.0"))
    if "f_state" in res:
        f = res["f_state"]
        for n in (1, 8):
            lines.append(_row(f"(f) State calls/s, {n} caller(s)", f["pyshim"][f"state_rps_{n}"],
                              f["go"][f"state_rps_{n}"], ">= 0.5", "{:.0f}"))
            lines.append(_row(f"(f)   p99 ms, {n} caller(s)", f["pyshim"][f"state_p99_ms_{n}"],
                              f["go"][f"state_p99_ms_{n}"], "< 2 ms at 8" if n == 8 else "", "{:.3f}"))
    if "g_cpu" in res:
        g = res["g_cpu"]
        lines.append(_row("(g) shim+runtime CPU per run --rm lifecycle, ms", ms(g["pyshim"]), ms(g["go"]), "<= 1.0"))
    return "\n".join(lines)
