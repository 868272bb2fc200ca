#!/usr/bin/python3
"""Turns the CSV files of `hfdcp bench --csv` into PNG plots.

usage: bench_plot.py OUTDIR FILE.csv [FILE.csv ...]

Rows are grouped by (peer, layout, size, tensors, dtype, ranks) and the
median of their repetitions is plotted.  Writes, when the data is there:
  OUTDIR/bench_layouts.png   GB/s of each peer per layout (saves, then loads)
  OUTDIR/bench_size.png      GB/s against model size, one panel per layout
  OUTDIR/bench_tensors.png   GB/s against tensor count, one panel per layout
Needs matplotlib (Debian: python3-matplotlib).
"""
import csv
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WRITES = ["plain_fpp_write", "plain_shared_write", "hfdcp_save", "hfdcp_alt_save",
          "hfdcp_async_save", "hdf5_write", "sharded_consolidate_total", "naive_gather_write"]
READS = ["plain_fpp_read_cold", "plain_shared_read_cold", "hfdcp_load_cold",
         "hfdcp_alt_load_cold", "hfdcp_load_resharded_cold", "hfdcp_load_fewer_ranks_cold",
         "hdf5_read_cold"]
LAYOUTS = ["rows", "cols", "blocks", "replicated", "llama", "llama-tp"]


def load(paths):
    groups = defaultdict(list)
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                key = (row["peer"], row["layout"], int(row["size"]), int(row["tensors"]),
                       row["dtype"], int(row["ranks"]))
                groups[key].append(float(row["gbps"]))
    return {k: statistics.median(v) for k, v in groups.items()}


def layouts_plot(med, out):
    """Bars: each peer's GB/s per layout, at the (size, tensor count) of that
    layout that has the most peers measured (the headline run)."""
    layouts = [lay for lay in LAYOUTS if any(k[1] == lay for k in med)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, peers, title in ((axes[0], WRITES, "save (to durable)"),
                             (axes[1], READS, "load (cold)")):
        present = [p for p in peers if any(k[0] == p for k in med)]
        width = 0.8 / max(1, len(present))
        for i, peer in enumerate(present):
            xs, ys = [], []
            for j, lay in enumerate(layouts):
                peers_at = defaultdict(set)
                for k in med:
                    if k[1] == lay:
                        peers_at[(k[2], k[3])].add(k[0])
                if not peers_at:
                    continue
                at = max(peers_at, key=lambda v: (len(peers_at[v]), v))
                vals = [med[k] for k in med
                        if k[0] == peer and k[1] == lay and (k[2], k[3]) == at]
                if not vals:
                    continue
                xs.append(j + i * width)
                ys.append(statistics.median(vals))
            ax.bar(xs, ys, width, label=peer)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layouts))])
        ax.set_xticklabels(layouts)
        ax.set_ylabel("GB/s (median)")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


SWEEP = ["plain_fpp_write", "hfdcp_save", "hdf5_write",
         "plain_fpp_read_cold", "hfdcp_load_cold", "hdf5_read_cold"]


def sweep_plot(med, out, index, xlabel, logx):
    """One panel per layout that has at least two points: GB/s of the main
    peers against size (index 2) or tensor count (index 3), the other
    parameter held at the value with the most points."""
    other = 3 if index == 2 else 2
    panels = []
    for lay in LAYOUTS:
        xs_by = defaultdict(set)
        for k in med:
            if k[1] == lay and k[0] in SWEEP:
                xs_by[k[other]].add(k[index])
        if xs_by:
            fixed = max(xs_by, key=lambda v: len(xs_by[v]))
            if len(xs_by[fixed]) >= 2:
                panels.append((lay, fixed))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (lay, fixed) in zip(axes[0], panels):
        for peer in SWEEP:
            pts = sorted((k[index], v) for k, v in med.items()
                         if k[0] == peer and k[1] == lay and k[other] == fixed)
            if len(pts) < 2:
                continue
            xs = [x / 1e9 if index == 2 else x for x, _ in pts]
            ax.plot(xs, [y for _, y in pts], marker="o", label=peer,
                    linestyle="--" if "read" in peer or "load" in peer else "-")
        if logx:
            ax.set_xscale("log")
        ax.set_title("%s, %s" % (lay, "%d tensors" % fixed if index == 2
                                 else "%.2g GB" % (fixed / 1e9)))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("GB/s (median)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def main():
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    outdir, paths = sys.argv[1], sys.argv[2:]
    med = load(paths)
    layouts_plot(med, outdir + "/bench_layouts.png")
    print("wrote", outdir + "/bench_layouts.png")
    if sweep_plot(med, outdir + "/bench_size.png", 2, "model size (GB)", False):
        print("wrote", outdir + "/bench_size.png")
    if sweep_plot(med, outdir + "/bench_tensors.png", 3, "tensors", True):
        print("wrote", outdir + "/bench_tensors.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
