#!/usr/bin/env python3
"""The side-by-side table from scripts/bench_vs.sh's runs: for every scenario
and metric, each server's median and the median of the per-run ratios A/B,
with the CPU steal the runs saw.

    python3 scripts/bench_vs_report.py target/bench/vs.jsonl NAME_A NAME_B
"""
import json
import statistics
import sys
from collections import defaultdict

# scenario -> [(metric label, how to read it from a run, "higher" or "lower" is better)]
METRICS = {
    "fanout": [
        ("deliveries/s", lambda r: r["deliveries_per_s"], "higher"),
        ("server CPU µs/delivery", lambda r: r.get("server_cpu_us_per_delivery"), "lower"),
        ("latency p50 ms", lambda r: r["latency_us"]["p50"] / 1e3, "lower"),
        ("latency p99 ms", lambda r: r["latency_us"]["p99"] / 1e3, "lower"),
        ("lost", lambda r: r["lost"], "lower"),
    ],
    "rtt": [
        ("round trips/s", lambda r: r["round_trips_per_s"], "higher"),
        ("RTT p50 µs", lambda r: r["rtt_us"]["p50"], "lower"),
        ("RTT p99 µs", lambda r: r["rtt_us"]["p99"], "lower"),
    ],
    "churn": [("sessions/s", lambda r: r["sessions_per_s"], "higher")],
    "idle": [("RSS KiB/connection", lambda r: r.get("rss_kib_per_connection"), "lower")],
}
KIND = {"fanout": "fanout", "light": "fanout", "one-to-10": "fanout", "rtt": "rtt",
        "churn": "churn", "idle": "idle"}


def main():
    path, a, b = sys.argv[1:4]
    runs = defaultdict(dict)  # (scenario, run) -> server -> record
    for line in open(path):
        if line.startswith("{"):
            r = json.loads(line)
            runs[(r["scenario_name"], r["run"])][r["server"]] = r
    scenarios = []
    for (s, _) in runs:
        if s not in scenarios:
            scenarios.append(s)
    print(f"| scenario | metric | {a} | {b} | {a}/{b} (median of per-run ratios) | runs | steal % |")
    print("|---|---|---|---|---|---|---|")
    for s in scenarios:
        pairs = [v for (sc, _), v in sorted(runs.items()) if sc == s and a in v and b in v]
        steal = [v[x]["steal_pct"] for v in pairs for x in (a, b)]
        for label, get, _better in METRICS[KIND[s]]:
            va = [get(v[a]) for v in pairs]
            vb = [get(v[b]) for v in pairs]
            ratios = [x / y for x, y in zip(va, vb) if x is not None and y not in (None, 0)]
            med = lambda xs: statistics.median([x for x in xs if x is not None]) if any(x is not None for x in xs) else None
            fmt = lambda x: "–" if x is None else (f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}")
            ratio = f"{statistics.median(ratios):.2f}×" if ratios else "–"
            print(f"| {s} | {label} | {fmt(med(va))} | {fmt(med(vb))} | {ratio} | {len(pairs)} | "
                  f"{min(steal):.0f}–{max(steal):.0f} |" if steal else "| – |")


if __name__ == "__main__":
    main()
