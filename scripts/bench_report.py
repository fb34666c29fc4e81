#!/usr/bin/env python3
"""Summarises `make bench` results: medians and spreads per scenario as
Markdown (stdout and target/bench/summary.md), and plots in docs/.

Usage: scripts/bench_report.py target/bench/results.jsonl
matplotlib is installed under target/plot-env when it is not importable.
"""
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    runs = defaultdict(list)
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                runs[r["label"]].append(r)
    return runs


def stat(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt(s, scale=1.0, digits=0, unit=""):
    if s is None:
        return "–"
    med, lo, hi = (x * scale for x in s)
    f = f"{{:,.{digits}f}}"
    return f"{f.format(med)}{unit} ({f.format(lo)}–{f.format(hi)})"


def matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        env = os.path.join(ROOT, "target", "plot-env")
        if not os.path.isdir(os.path.join(env, "matplotlib")):
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", env, "matplotlib"], check=True)
        sys.path.insert(0, env)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def main(path):
    runs = load(path)
    out = []
    p = out.append
    p("| scenario | runs | deliveries/s | latency p50 | latency p99 | server CPU µs/delivery | lost |")
    p("|---|---|---|---|---|---|---|")
    order = ["fanout-100x10", "fanout-100x10-batched", "light-1000", "one-to-10", "one-to-10-batched", "big-16MiB"] + [f"scale-{n}" for n in (10, 100, 1000, 5000)]
    for label in order:
        rs = runs.get(label)
        if not rs:
            continue
        p(
            f"| {label} | {len(rs)} | {fmt(stat([r['deliveries_per_s'] for r in rs]))} "
            f"| {fmt(stat([r['latency_us']['p50'] for r in rs]), 1e-3, 2, ' ms')} "
            f"| {fmt(stat([r['latency_us']['p99'] for r in rs]), 1e-3, 2, ' ms')} "
            f"| {fmt(stat([r['server_cpu_us_per_delivery'] for r in rs]), 1, 3)} "
            f"| {sum(r['lost'] for r in rs)} |"
        )
    big = runs.get("big-16MiB")
    if big:
        p("")
        p(f"16 MiB relay, aggregate MB/s: {fmt(stat([r['deliveries_per_s'] * r['size'] / 1e6 for r in big]))}")
    echo = runs.get("echo")
    if echo:
        p("")
        p(
            f"echo: {fmt(stat([r['round_trips_per_s'] for r in echo]))} round trips/s; "
            f"RTT p50 {fmt(stat([r['rtt_us']['p50'] for r in echo]), 1, 1, ' µs')}, "
            f"p99 {fmt(stat([r['rtt_us']['p99'] for r in echo]), 1, 1, ' µs')}"
        )
    churn = runs.get("churn")
    if churn:
        p("")
        p(f"churn: {fmt(stat([r['sessions_per_s'] for r in churn]))} sessions/s")
    p("")
    p("| idle clients | runs | RSS KiB/connection | threads/connection | kernel stacks KiB/connection | page tables KiB/connection |")
    p("|---|---|---|---|---|---|")
    for label in ["idle-1000", "idle-5000", "idle-10000", "idle-10000-rb1k"]:
        rs = runs.get(label)
        if not rs:
            continue
        p(
            f"| {label} | {len(rs)} | {fmt(stat([r['rss_kib_per_connection'] for r in rs]), 1, 1)} "
            f"| {fmt(stat([r['threads_per_connection'] for r in rs]), 1, 2)} "
            f"| {fmt(stat([r['kernel_stack_kib_per_connection'] for r in rs]), 1, 1)} "
            f"| {fmt(stat([r['page_tables_kib_per_connection'] for r in rs]), 1, 2)} |"
        )
    text = "\n".join(out)
    print(text)
    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target", "bench", "summary.md"), "w") as f:
        f.write(text + "\n")

    plt = matplotlib()
    ns = [n for n in (10, 100, 1000, 5000) if runs.get(f"scale-{n}")]
    if ns:
        fig, ax1 = plt.subplots(figsize=(7, 4))
        rate = [stat([r["deliveries_per_s"] for r in runs[f"scale-{n}"]])[0] / 1e6 for n in ns]
        p99 = [stat([r["latency_us"]["p99"] for r in runs[f"scale-{n}"]])[0] / 1e3 for n in ns]
        ax1.plot(ns, rate, "o-", color="tab:blue", label="deliveries/s (M)")
        ax1.set_xscale("log")
        ax1.set_xlabel("clients in the room (10 senders, window 16, 64 B)")
        ax1.set_ylabel("million deliveries/s", color="tab:blue")
        ax2 = ax1.twinx()
        ax2.plot(ns, p99, "s--", color="tab:red", label="p99 latency (ms)")
        ax2.set_ylabel("p99 one-way latency, ms", color="tab:red")
        ax1.set_title("wshub fan-out: cost as the room grows (medians)")
        fig.tight_layout()
        fig.savefig(os.path.join(ROOT, "docs", "bench-scaling.png"), dpi=110)
    idle = [(n, runs.get(f"idle-{n}")) for n in (1000, 5000, 10000)]
    idle = [(n, rs) for n, rs in idle if rs]
    if idle:
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = [n for n, _ in idle]
        rss = [stat([r["rss_kib_per_connection"] for r in rs])[0] for _, rs in idle]
        kst = [stat([r["kernel_stack_kib_per_connection"] for r in rs])[0] for _, rs in idle]
        ax.bar([str(x) for x in xs], rss, label="process RSS")
        ax.bar([str(x) for x in xs], kst, bottom=rss, label="kernel thread stacks")
        ax.axhline(18.1, color="gray", linestyle=":", label="gorilla RSS (18.1 KiB)")
        ax.set_xlabel("idle clients")
        ax.set_ylabel("KiB per connection")
        ax.set_title("wshub idle memory per connection (medians)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(ROOT, "docs", "bench-idle.png"), dpi=110)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "bench", "results.jsonl"))
