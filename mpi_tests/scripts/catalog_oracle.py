#!/usr/bin/python3
"""catalog_oracle.py PATH... - an independent reading of checkpoints, for
test_catalog.c.  Standard library only.

For each PATH (a directory or a .safetensors file) prints "== PATH" and
then either the catalog, canonically:

    kind file|dir
    index yes|no
    sharded yes|no
    file NAME SIZE DATA_START            (files in name order)
    tensor NAME DTYPE [d0,d1] NBYTES     (tensors in name order)
    chunk FILE [o0,o1] [s0,s1] OFFSET    (its chunks by offsets, then file)
    total_size N

or one line "error KIND WORDS..." naming what is wrong:

    error not_found
    error format FILE                    (a file that cannot be read)
    error duplicate TENSOR FILE1 FILE2   (a name in two files, not shards)

It reads the index (model.safetensors.index.json) when there is one and
loads sorted(set(weight_map values)); else every *.safetensors file of the
directory, sorted.  DCP shards (__metadata__ DCP_SHARDING_INFO) are merged:
a tensor's shape is the max over its chunks of offset + size, and a
non-empty box saved by several files (a replicated tensor) is read from the
first of them, in file order, as PyTorch's reader reads one copy.  It
checks only what it needs to read the files; the C library checks the rest.
"""
import json
import os
import struct
import sys

BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64,
    "U64": 64,
}
INDEX = "model.safetensors.index.json"


class Refused(Exception):
    pass


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


def read_header(path, name):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise Refused("format " + name)
        (n,) = struct.unpack("<Q", prefix)
        if n > size - 8:
            raise Refused("format " + name)
        text = f.read(n)
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=no_duplicates)
    except ValueError:
        raise Refused("format " + name)
    meta = header.pop("__metadata__", None) or {}
    sharding = None
    if "DCP_SHARDING_INFO" in meta:
        sharding = json.loads(meta["DCP_SHARDING_INFO"])
    entries = {}
    for tname, e in header.items():
        offsets = sharding[tname]["saved_offsets"] if sharding is not None else None
        entries[tname] = (e["dtype"], list(e["shape"]), e["data_offsets"][0], offsets)
    return size, 8 + n, entries, sharding is not None


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def catalog(path):
    if not os.path.exists(path):
        raise Refused("not_found")
    if os.path.isfile(path):
        kind, d, names, has_index = "file", os.path.dirname(path), [os.path.basename(path)], False
        paths = {names[0]: path}
    else:
        kind, d = "dir", path
        ipath = os.path.join(path, INDEX)
        has_index = os.path.isfile(ipath)
        if has_index:
            with open(ipath, "rb") as f:
                index = json.loads(f.read().decode("utf-8"))
            names = sorted(set(index["weight_map"].values()))
        else:
            names = sorted(n for n in os.listdir(path)
                           if n.endswith(".safetensors")
                           and os.path.isfile(os.path.join(path, n)))
            if not names:
                raise Refused("not_found")
        paths = {n: os.path.join(d, n) for n in names}

    files = []
    tensors = {}  # name -> list of (file index, dtype, shape, offsets, file offset)
    any_sharded = False
    for i, name in enumerate(names):
        size, data_start, entries, sharded = read_header(paths[name], name)
        any_sharded = any_sharded or sharded
        files.append((name, size, data_start, sharded))
        for tname, (dtype, shape, begin, offsets) in entries.items():
            tensors.setdefault(tname, []).append(
                (i, dtype, shape, offsets, data_start + begin, sharded))

    out = ["kind " + kind, "index " + ("yes" if has_index else "no"),
           "sharded " + ("yes" if any_sharded else "no")]
    for name, size, data_start, _ in files:
        out.append("file %s %d %d" % (name, size, data_start))
    total = 0
    for tname in sorted(tensors):
        chunks = tensors[tname]
        if len(chunks) > 1 and not all(c[5] for c in chunks):
            plain = [c[0] for c in chunks if not c[5]][0]
            other = [c[0] for c in chunks if c[0] != plain][0]
            a, b = sorted((plain, other))
            raise Refused("duplicate %s %s %s" % (tname, names[a], names[b]))
        dtype = chunks[0][1]
        ndim = len(chunks[0][2])
        shape = [0] * ndim
        for c in chunks:
            offs = c[3] if c[3] is not None else [0] * ndim
            for k in range(ndim):
                shape[k] = max(shape[k], offs[k] + c[2][k])
        nbytes = numel(shape) * BITS[dtype] // 8
        total += nbytes
        out.append("tensor %s %s [%s] %d" % (tname, dtype, ",".join(map(str, shape)), nbytes))
        rows, boxes = [], set()
        for c in chunks:
            offs = c[3] if c[3] is not None else [0] * ndim
            box = (tuple(offs), tuple(c[2]))
            if numel(c[2]) > 0 and box in boxes:
                continue
            boxes.add(box)
            rows.append((offs, c[0], c[4], c[2]))
        for offs, fi, foff, size in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
            out.append("chunk %s [%s] [%s] %d" % (names[fi], ",".join(map(str, offs)),
                                                  ",".join(map(str, size)), foff))
    out.append("total_size %d" % total)
    return out


def main():
    for path in sys.argv[1:]:
        print("== " + path)
        try:
            lines = catalog(path)
        except Refused as e:
            lines = ["error " + str(e)]
        for line in lines:
            print(line)


if __name__ == "__main__":
    main()
