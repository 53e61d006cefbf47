"""The shim benchmark's table: one row per measure; pyshim per pod, pyshim with shared daemons ("shared"),
runc.v2 (and the Rust runc shim when it ran) side by side; the ratios to runc.v2 and Rust, and the targets.

Rules: times are medians in ms unless the row says otherwise (p90, wall seconds); memory is MiB summed over
the shim processes; a ratio is pyshim's (py) or the shared mode's (sh) value / the other shim's (for calls/s a
higher ratio is better, for everything else lower); the targets are issue 6's for py/go and issue 12's for
sh/go; a row whose case did not run is left out, and so is a column.
"""
from __future__ import annotations

from typing import Callable

from .measure import median, percentile

HEADINGS = {"pyshim": "pyshim", "shared": "shared", "go": "runc.v2", "rust": "rust"}
SHORT = {"pyshim": "py", "shared": "sh", "go": "go", "rust": "rust"}


class Table:
    def __init__(self, ours: list[str], others: list[str]) -> None:
        self.ours = ours      # pyshim, and shared when it ran
        self.others = others  # the shims they are compared with: go, and rust when it ran
        self.pairs = [(o, t) for t in others for o in ours]
        self.lines: list[str] = []

    def heading(self) -> None:
        cells = "".join(f" {HEADINGS[k]:>10}" for k in [*self.ours, *self.others])
        ratios = "".join(f" {SHORT[o] + '/' + SHORT[t]:>7}" for o, t in self.pairs)
        self.lines.append(f"{'measure':<46}{cells}{ratios}  targets (py/go; sh/go)")

    def row(self, name: str, get: Callable[[str], float | None], target: str = "", fmt: str = "{:.1f}",
            shared_target: str = "") -> None:
        def value(key: str) -> float | None:
            try:
                return get(key)
            except KeyError:
                return None
        vals = {k: value(k) for k in [*self.ours, *self.others]}
        cells = "".join(f" {fmt.format(v) if v is not None else '-':>10}" for v in vals.values())
        ratios = "".join(f" {f'{vals[o] / vals[t]:.2f}' if vals[o] is not None and vals[t] else '':>7}"
                         for o, t in self.pairs)
        shared = f"sh {shared_target}" if shared_target and "shared" in self.ours else ""
        targets = "; ".join(x for x in (target, shared) if x)
        self.lines.append(f"{name:<46}{cells}{ratios}  {targets}")


def table(res: dict, info: dict, started: str, args) -> str:
    ours = ["pyshim", "shared"] if info.get("shared") else ["pyshim"]
    t = Table(ours, ["go", "rust"] if info.get("rust_shim") else ["go"])
    t.lines += [f"{started}  {info['cores']} cores {info['cpu']}, {info['os']}, kernel {info['kernel']}, "
                f"python {info['python']}, containerd {info['containerd']}, load {info['load_1m']:.2f}"
                + (f"; rust: {info['rust_shim']}" if info.get("rust_shim") else ""),
                f"{args.runs} rotating rounds for a/b/g, {args.exec_runs} execs, {args.calls} State calls per row"]
    t.heading()
    ms = lambda xs: median(xs) * 1e3 if xs else None  # noqa: E731
    if "a_run_rm" in res:
        a = res["a_run_rm"]
        t.row("(a) ctr run --rm /bin/true, median ms", lambda k: ms(a[k]), "<= 1.00", shared_target="<= 1.0 (0.9)")
        t.row("(a)   p90 ms", lambda k: percentile(a[k], 0.9) * 1e3 if a[k] else None)
    if "b_direct" in res:
        b = res["b_direct"]

        def col(field: str, py_key: str = "pyshim", shared: bool = True) -> Callable[[str], float | None]:
            def get(k: str) -> float | None:
                if k == "shared" and not shared:
                    return None
                return ms([r[field] for r in b[py_key if k == "pyshim" else k] if r[field] is not None])
            return get
        t.row("(b) start exec -> socket answers, ms", col("start_answer"), "<= 1.1")
        t.row("(b)   without the fork server (fresh daemon)", col("start_answer", "pyshim_fresh", shared=False))
        t.row("(b)   start command exits, ms", col("start_exit"))
        t.row("(b)   start command CPU, ms", col("start_cpu"))
        t.row("(b) delete command (no runtime state), ms", col("delete"), "<= 1.0")
        t.row("(b)   delete command CPU, ms", col("delete_cpu"))
        t.row("(b) Shutdown answered, ms", col("shutdown_answer"))
        t.row("(b)   Shutdown -> daemon gone, ms", col("shutdown"))
    if "c_memory" in res:
        m = res["c_memory"]
        for field in ("rss", "pss", "uss"):
            t.row(f"(c) 1 container: the daemon's {field.upper()}, MiB",
                  lambda k: m[f"{k}_daemon_1"][field] / 1024)
        for key in m.get("pyshim", {}):
            procs = "/".join(str(m[k][key]["processes"]) for k in [*t.ours, *t.others] if k in m)
            t.row(f"(c) total PSS, {key.replace('_', ' ')} ({procs} procs)", lambda k: m[k][key]["pss"] / 1024,
                  "<= 1.0" if key in ("tasks_100", "groups_10x10") else "",
                  shared_target="<= 0.5, < rust" if key == "tasks_100" else "")
        fork = sum(v.get("pss", 0) for v in m.get("forkserver_alone", {}).values())
        t.row("(c)   of which fork server + zygotes (no tasks), PSS", lambda k: fork / 1024 if k == "pyshim" else None)
    if "d_concurrent" in res:
        d = res["d_concurrent"]
        for key in d["pyshim"]:
            t.row(f"(d) {key.replace('_', ' ')} concurrent ctr run -d, wall s", lambda k: d[k][key],
                  "<= 0.8" if key == "separate_50" else "", "{:.2f}",
                  shared_target="<= 0.8" if key == "separate_50" else "")
    if "e_exec" in res:
        e = res["e_exec"]
        t.row("(e) ctr task exec /bin/true, median ms", lambda k: ms(e[k]), "<= 1.0")
    if "f_state" in res:
        f = res["f_state"]
        for n in (1, 8):
            t.row(f"(f) State calls/s, {n} caller(s)", lambda k: f[k][f"state_rps_{n}"], ">= 0.5", "{:.0f}")
            t.row(f"(f)   p99 ms, {n} caller(s)", lambda k: f[k][f"state_p99_ms_{n}"],
                  "< 2 ms at 8" if n == 8 else "", "{:.3f}")
    if "g_cpu" in res:
        g = res["g_cpu"]
        t.row("(g) shim+runtime CPU per run --rm lifecycle, ms", lambda k: ms(g[k]), "<= 1.0", shared_target="<= 0.9")
    if "i_churn" in res:
        i = res["i_churn"]
        before, after, slopes = i["before"], i["after"], i["slopes_per_1000"]
        t.lines.append(f"(i) churn through one shared daemon: {i['lifecycles']} lifecycles in {i['seconds']:.0f} s; "
                       f"fds {before['fds']} -> {after['fds']}, threads {before['threads']} -> {after['threads']}, "
                       f"RSS {before['rss'] / 1024:.1f} -> {after['rss'] / 1024:.1f} MiB; per 1,000 lifecycles: "
                       f"fds {slopes['fds']:+.2f}, threads {slopes['threads']:+.2f}, RSS {slopes['rss']:+.0f} KiB; "
                       f"left behind: {', '.join(i['leaks']) or 'nothing'}")
    return "\n".join(t.lines)
