#!/usr/bin/env python3
"""bench_table.py - markdown tables of `hfdcp bench --csv` files.

    bench_table.py FILE.csv [FILE.csv ...]

For each (layout, size, tensors, dtype, ranks) of the files: one table of
every measurement's median seconds, GB/s, ratio to the better plain write
(writes) or plain cold read (loads; warm loads to the plain warm read), and
the largest extra memory per rank and on rank 0, as `hfdcp bench` prints
them.  Standard library only.
"""
import csv
import statistics
import sys
from collections import OrderedDict, defaultdict


def reference(what, med):
    def gbps(name):
        return med[name][1] if name in med else 0.0

    if "plan" in what:
        return 0.0
    if "warm" in what:
        return gbps("plain_fpp_read_warm")
    if "read" in what or "load" in what:
        return max(gbps("plain_fpp_read_cold"), gbps("plain_shared_read_cold"))
    return max(gbps("plain_fpp_write"), gbps("plain_shared_write"))


def main(paths):
    groups = OrderedDict()
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                key = (row["layout"], int(row["size"]), int(row["tensors"]), row["dtype"],
                       int(row["ranks"]))
                groups.setdefault(key, OrderedDict()).setdefault(row["peer"], []).append(row)
    for (layout, size, tensors, dtype, ranks), peers in groups.items():
        med = {}
        for peer, rows in peers.items():
            s = statistics.median(float(r["seconds"]) for r in rows)
            b = int(rows[0]["bytes"])
            med[peer] = (s, b / s / 1e9 if s > 0 and b else 0.0,
                         max(int(r["extra_mem_max"]) for r in rows),
                         max(int(r["extra_mem_rank0"]) for r in rows), len(rows))
        n = max(v[4] for v in med.values())
        print(f"**{layout}**: {tensors} tensors, {size / 1e9:.3f} GB {dtype}, {ranks} ranks, "
              f"medians of {n} repetitions\n")
        print("| measurement | median s | GB/s | vs plain | extra MiB (max rank / rank 0) |")
        print("|---|---:|---:|---:|---:|")
        for peer, (s, g, m, m0, _) in med.items():
            ref = reference(peer, med)
            gb = f"{g:.3f}" if g else "-"
            ratio = f"{g / ref:.2f}x" if g and ref else "-"
            print(f"| `{peer}` | {s:.4f} | {gb} | {ratio} | {m / 1048576:.1f} / {m0 / 1048576:.1f} |")
        print()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
