#!/usr/bin/env python3
"""Plots docs/soak.csv (RSS, threads, fds over time) into docs/soak.png and
fails if a series grew: the mean of the last third must not exceed the
mean of the middle third by more than 10% (the first third is warm-up)."""
import csv
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
from bench_report import matplotlib  # noqa: E402


def main(src, dst):
    rows = list(csv.DictReader(open(src)))
    t = [int(r["seconds"]) / 60 for r in rows]
    series = {k: [int(r[k]) for r in rows] for k in ("rss_kib", "threads", "fds")}
    plt = matplotlib()
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    labels = {"rss_kib": "RSS (MiB)", "threads": "threads", "fds": "open fds"}
    for ax, (k, v) in zip(axes, series.items()):
        ys = [x / 1024 for x in v] if k == "rss_kib" else v
        ax.plot(t, ys)
        ax.set_ylabel(labels[k])
        ax.set_ylim(bottom=0, top=max(ys) * 1.3 + 1)
    axes[-1].set_xlabel("minutes")
    axes[0].set_title("wshub soak: steady chat with joins and leaves, sampled every 10 s")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    third = max(1, len(rows) // 3)
    grew = []
    for k, v in series.items():
        middle = sum(v[third : 2 * third]) / max(1, len(v[third : 2 * third]))
        last = sum(v[2 * third :]) / max(1, len(v[2 * third :]))
        print(f"soak: {k}: middle third {middle:.0f}, last third {last:.0f}")
        if last > middle * 1.10 + 2:
            grew.append(k)
    if grew:
        sys.exit("soak: grew over time: " + ", ".join(grew))
    print("soak: flat")


if __name__ == "__main__":
    main(*sys.argv[1:3])
