#!/usr/bin/env python3
"""bench_table.py - markdown tables of `hfdcp bench --csv` files.

    bench_table.py FILE.csv [FILE.csv ...]

For each (layout, size, tensors, dtype, ranks) of the files: one table of
every measurement's median seconds, GB/s, ratio to the better plain write
(writes) or plain cold read (loads; warm loads to the plain warm read), and
the largest extra memory per rank and on rank 0, as `hfdcp bench` prints
them (a `*_snapshot` row: no time, the bytes each rank copied in the memory
columns); then, with the hfdcp-async peer, its ratios as the bench prints
them under "targets".  Standard library only.
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


def async_summary(med):
    """The hfdcp-async peer's ratios of medians, one line; "" without it."""
    def sec(name):
        return med[name][0] if name in med else 0.0

    sync, commit = sec("hfdcp_save"), sec("hfdcp_async_commit")
    if not commit:
        return ""
    parts = []
    if sec("memcpy_share"):
        parts.append(f"commit_async / memcpy_share {commit / sec('memcpy_share'):.2f}x "
                     f"(target <= 2x)")
    for name, label in (("hfdcp_async_commit", "commit_async"),
                        ("hfdcp_async_save", "waited for at once, to durable"),
                        ("hfdcp_async_step_blocked", "blocked with a step"),
                        ("hfdcp_async_bounded_commit", "bounded commit_async"),
                        ("hfdcp_async_bounded_blocked", "bounded, blocked with a step")):
        if sync and sec(name):
            parts.append(f"{label} / hfdcp_save {sec(name) / sync:.2f}x")
    for name, label in (("hfdcp_async_snapshot", "snapshot"),
                        ("hfdcp_async_bounded_snapshot", "bounded snapshot")):
        if name in med:
            parts.append(f"{label} {med[name][2] / 1048576:.1f} MiB per rank (largest)")
    return "async: " + "; ".join(parts)


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
            timed = not peer.endswith("_snapshot")
            gb = f"{g:.3f}" if g and timed else "-"
            ratio = f"{g / ref:.2f}x" if g and ref and timed else "-"
            secs = f"{s:.4f}" if timed else "-"
            print(f"| `{peer}` | {secs} | {gb} | {ratio} | {m / 1048576:.1f} / {m0 / 1048576:.1f} |")
        print()
        summary = async_summary(med)
        if summary:
            print(summary + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
