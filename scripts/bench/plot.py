#!/usr/bin/env python3
"""Plots bench.json: usage plot.py bench.json OUTDIR (writes bench-throughput.png, bench-latency.png)."""
import json
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    res = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    t = res.get("throughput")
    if t:
        names = list(t["runs"])
        fig, ax = plt.subplots(figsize=(8, 4))
        meds = [t["median"][n] for n in names]
        bars = ax.barh(names, meds, color=["#999", "#6a9fd4", "#d4a26a", "#3a7d44", "#8fc98f"][:len(names)])
        for i, n in enumerate(names):  # every run as a dot, so spread is visible
            ax.plot(t["runs"][n], [i] * len(t["runs"][n]), "k.", ms=4)
        for b, m in zip(bars, meds):
            ax.text(0.3, b.get_y() + b.get_height() / 2, f"{m:.1f}", va="center", color="white", weight="bold")
        ax.invert_yaxis()
        ax.set_xlabel("Gbit/s (median of %d iperf3 runs, %d s each)" % (t["rounds"], t["seconds"]))
        ax.set_title("Loopback throughput, one TCP stream")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "bench-throughput.png"), dpi=110)
    lat = res.get("latency")
    if lat:
        names = [n for n in lat["samples"] if lat["samples"][n]]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        # Matplotlib 3.10 replaced `vert` with `orientation`; support both.
        horizontal = {"orientation": "horizontal"} if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10) else {"vert": False}
        ax.boxplot([lat["samples"][n] for n in names], showfliers=True, **horizontal)
        ax.set_yticks(range(1, len(names) + 1), names)
        ax.set_xscale("log")
        ax.set_xlabel("ms, connect to first echoed byte (log scale)")
        ax.set_title("Setup latency, fresh connections")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "bench-latency.png"), dpi=110)


if __name__ == "__main__":
    main()
