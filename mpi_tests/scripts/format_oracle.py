#!/usr/bin/python3
"""format_oracle.py - an independent reading of safetensors headers and of
model.safetensors.index.json files, for mpi_tests/test_format.c.
Standard library only (json, struct); shares no code with hfdcp.

  format_oracle.py header FILE...
      For each file, its header in the canonical text the test prints from
      hfdcp__header_parse():
        file <path>
        header_len <N>
        data_size <bytes of the data buffer>
        meta null                        (when __metadata__ is null)
        meta <key> <value>               (pairs in file order, without
                                          DCP_SHARDING_INFO)
        sharded no | sharded yes <canonical|NOT-CANONICAL>
            canonical: the DCP_SHARDING_INFO text is exactly what
            json.dumps gives for the object it holds
        tensor <name> <dtype> <shape> <begin> <end> <offsets>
            sorted by (begin, end, name bytes); shape and offsets are
            comma-separated ("" for a scalar, "-" for no offsets)
      Strings are printed as x:<hex of their UTF-8 bytes>.

  format_oracle.py index FILE
        total_size <N>
        w <name> <file>                  (weight_map, file order)
        redump same | redump differs
            same: the file is byte for byte json.dumps(json.load(f),
            indent=2), i.e. what Python's tooling writes
"""
import json
import struct
import sys


def hx(s):
    return "x:" + s.encode("utf-8").hex()


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


def header(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicates)
    out = ["file " + path, "header_len %d" % n]
    meta = hdr.pop("__metadata__", {})
    offsets = {}
    sharded = "sharded no"
    if meta is None:
        out.append("meta null")
        meta = {}
    if "DCP_SHARDING_INFO" in meta:
        text = meta["DCP_SHARDING_INFO"]
        info = json.loads(text)
        offsets = {k: v["saved_offsets"] for k, v in info.items()}
        sharded = "sharded yes " + ("canonical" if json.dumps(info) == text else "NOT-CANONICAL")
    for k, v in meta.items():
        if k != "DCP_SHARDING_INFO":
            out.append("meta %s %s" % (hx(k), hx(v)))
    out.append(sharded)
    items = sorted(hdr.items(), key=lambda kv: (kv[1]["data_offsets"][0],
                                                kv[1]["data_offsets"][1],
                                                kv[0].encode("utf-8")))
    data_size = max([v["data_offsets"][1] for _, v in items], default=0)
    out.insert(2, "data_size %d" % data_size)
    for name, t in items:
        offs = "-"
        if name in offsets:
            offs = ",".join(str(x) for x in offsets[name])
        out.append("tensor %s %s %s %d %d %s" % (
            hx(name), t["dtype"], ",".join(str(x) for x in t["shape"]),
            t["data_offsets"][0], t["data_offsets"][1], offs))
    return out


def index(path):
    with open(path, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")
    ix = json.loads(text, object_pairs_hook=no_duplicates)
    out = ["total_size %d" % ix["metadata"]["total_size"]]
    for k, v in ix["weight_map"].items():
        out.append("w %s %s" % (hx(k), hx(v)))
    out.append("redump " + ("same" if json.dumps(ix, indent=2) == text else "differs"))
    return out


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "header":
        lines = []
        for p in sys.argv[2:]:
            lines += header(p)
    elif len(sys.argv) == 3 and sys.argv[1] == "index":
        lines = index(sys.argv[2])
    else:
        sys.stderr.write(__doc__)
        return 2
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
