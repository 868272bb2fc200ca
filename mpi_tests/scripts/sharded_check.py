#!/usr/bin/python3
"""sharded_check.py SHARD_DIR SPEC_JSON [crc|nocrc]

An independent check of the per-rank shard files written by
hfdcp_writer_commit() with save_sharded = 1 (mpi_tests/test_sharded.c),
with no hfdcp code: Python's json and struct modules only.

SPEC_JSON lists the tensors saved: {"name": {"dtype": "F32", "shape":
[..]}, ...}.  Every tensor's bytes come from its global byte index b and a
seed derived from its name (see mpi_tests/scripts/writer_np_check.py):
    seed = FNV-1a 64 of the UTF-8 name
    byte = ((((b * 0x9E3779B97F4A7C15) ^ seed) * 0xBF58476D1CE4E5B9) >> 56)

Checked, as PyTorch DCP's HuggingFace storage writer writes shard files:
the directory holds shard-{rank:05d}-model-{idx:05d}-of-{max:05d}.safetensors
files only (no index), one max for all; each file: N % 8 == 0, the header
starts with '{' and is compact JSON (re-serializing it with separators
(",", ":") gives the same text before the space padding); __metadata__ has
exactly the keys format, DCP_SHARDING_INFO and DCP_VERSION, with "pt",
"1.0" and DCP_SHARDING_INFO equal to json.dumps() (default separators,
ensure_ascii) of {name: {"saved_offsets": [...]}} naming the file's tensors
in header order, and hfdcp's own key hfdcp_global_shapes (which PyTorch
ignores): the compact JSON of {name: [global shape]} of the same tensors
in the same order, the shapes of SPEC_JSON; hfdcp's key hfdcp_crc32c
(required with `crc`, refused with `nocrc`, else optional): the compact
JSON of {name: "8 lowercase hex digits"} of the same tensors in the same
order, each the CRC-32C (Castagnoli, computed here bit by bit) of the
chunk's bytes in the file; data offsets contiguous from 0, sizes matching dtype x
shape, 8 + N + last end == the file size; every chunk inside its tensor
and every byte of it right; the chunks of a tensor add up to the tensor
exactly (a replicated chunk written twice would not).  Prints "ok N
tensors in M files" and exits 0, or the problem and exits 1.
"""
import json
import os
import re
import struct
import sys

BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64,
    "U64": 64,
}
MASK = (1 << 64) - 1
NAME = re.compile(r"^shard-(\d{5})-model-(\d{5})-of-(\d{5})\.safetensors$")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def seed_of(name):
    h = 1469598103934665603
    for c in name.encode("utf-8"):
        h ^= c
        h = (h * 1099511628211) & MASK
    return h


def byte_at(seed, b):
    t = ((b * 0x9E3779B97F4A7C15) & MASK) ^ seed
    return ((t * 0xBF58476D1CE4E5B9) & MASK) >> 56


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def expected(name, bits, gshape, offs, shape):
    """The bytes of the box [offs, offs + shape) of tensor `name`."""
    seed = seed_of(name)
    if len(shape) == 0:
        return bytes(byte_at(seed, k) for k in range(bits // 8))
    if numel(shape) == 0:
        return b""
    out = bytearray()
    run = shape[-1] * bits // 8
    idx = [0] * (len(shape) - 1)
    while True:
        lin = 0
        for d in range(len(shape) - 1):
            lin = lin * gshape[d] + offs[d] + idx[d]
        lin = lin * gshape[-1] + offs[-1]
        gb = lin * bits // 8
        out += bytes(byte_at(seed, gb + k) for k in range(run))
        d = len(idx) - 1
        while d >= 0:
            idx[d] += 1
            if idx[d] < shape[d]:
                break
            idx[d] = 0
            d -= 1
        if d < 0:
            return bytes(out)


def crc32c(data):
    """CRC-32C of `data`, table-driven, independent of hfdcp's."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


CRC_TABLE = crc_table()


def check_crcs(fn, meta, names, buf, start, hdr, mode):
    """hfdcp_crc32c of one shard file against its chunks' bytes."""
    text = meta.pop("hfdcp_crc32c", None)
    if text is None:
        if mode == "crc":
            fail("%s: no hfdcp_crc32c" % fn)
        return
    if mode == "nocrc":
        fail("%s: hfdcp_crc32c written with no_checksums" % fn)
    crcs = json.loads(text)
    if json.dumps(crcs, separators=(",", ":"), ensure_ascii=False) != text \
            or list(crcs) != names:
        fail("%s: hfdcp_crc32c %r is not compact JSON of the tensors in "
             "header order" % (fn, text))
    for name in names:
        b, end = hdr[name]["data_offsets"]
        want = "%08x" % crc32c(buf[start + b:start + end])
        if crcs[name] != want:
            fail("%s: %s hfdcp_crc32c %r, the bytes give %r"
                 % (fn, name, crcs[name], want))


def main():
    ckpt, spec_path = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "any"
    if crc32c(b"123456789") != 0xE3069283:
        fail("crc32c() of the check string")
    with open(spec_path) as f:
        spec = json.load(f)
    covered = {name: 0 for name in spec}
    seen = set()
    maxes = set()
    files = sorted(os.listdir(ckpt))
    for fn in files:
        m = NAME.match(fn)
        if not m:
            fail("unexpected file %s" % fn)
        maxes.add(m.group(3))
        if not (1 <= int(m.group(2)) <= int(m.group(3))):
            fail("%s: bad file index" % fn)
        with open(os.path.join(ckpt, fn), "rb") as f:
            buf = f.read()
        (n,) = struct.unpack("<Q", buf[:8])
        text = buf[8:8 + n].decode("utf-8")
        if n % 8 or not text.startswith("{"):
            fail("%s: N = %d, header starts %r" % (fn, n, text[:1]))
        body = text.rstrip(" ")
        if len(text) - len(body) > 7:
            fail("%s: more than 7 spaces of padding" % fn)
        hdr = json.loads(body)
        if json.dumps(hdr, separators=(",", ":"), ensure_ascii=False) != body:
            fail("%s: the header is not compact JSON" % fn)
        meta = hdr.pop("__metadata__", None)
        if meta is not None:
            check_crcs(fn, meta, list(hdr), buf, 8 + n, hdr, mode)
        if meta is None or sorted(meta) != ["DCP_SHARDING_INFO",
                                            "DCP_VERSION", "format",
                                            "hfdcp_global_shapes"]:
            fail("%s: __metadata__ keys %r" % (fn, meta))
        if meta["format"] != "pt" or meta["DCP_VERSION"] != "1.0":
            fail("%s: format %r, DCP_VERSION %r" % (fn, meta["format"],
                                                    meta["DCP_VERSION"]))
        info = json.loads(meta["DCP_SHARDING_INFO"])
        if json.dumps(info) != meta["DCP_SHARDING_INFO"]:
            fail("%s: DCP_SHARDING_INFO is not json.dumps text: %r"
                 % (fn, meta["DCP_SHARDING_INFO"]))
        if list(info) != list(hdr):
            fail("%s: DCP_SHARDING_INFO names %r, the header %r"
                 % (fn, list(info), list(hdr)))
        want = json.dumps({k: spec[k]["shape"] for k in info},
                          separators=(",", ":"), ensure_ascii=False)
        if meta["hfdcp_global_shapes"] != want:
            fail("%s: hfdcp_global_shapes %r, expected %r"
                 % (fn, meta["hfdcp_global_shapes"], want))
        at = 0
        for name, e in sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"]):
            if name not in spec:
                fail("%s: unexpected tensor %s" % (fn, name))
            t = spec[name]
            bits = BITS[e["dtype"]]
            shape, offs = e["shape"], info[name]["saved_offsets"]
            gshape = t["shape"]
            if e["dtype"] != t["dtype"] or len(shape) != len(gshape) or \
                    len(offs) != len(gshape):
                fail("%s: %s dtype or ndim" % (fn, name))
            for d in range(len(shape)):
                if offs[d] < 0 or offs[d] + shape[d] > gshape[d]:
                    fail("%s: %s chunk outside the tensor" % (fn, name))
            b, end = e["data_offsets"]
            if b != at or end - b != numel(shape) * bits // 8:
                fail("%s: %s data_offsets %r" % (fn, name, [b, end]))
            at = end
            want = expected(name, bits, gshape, offs, shape)
            if buf[8 + n + b:8 + n + end] != want:
                fail("%s: %s has wrong bytes" % (fn, name))
            covered[name] += numel(shape)
            seen.add(name)
        if 8 + n + at != len(buf):
            fail("%s: %d bytes, expected %d" % (fn, len(buf), 8 + n + at))
    if len(maxes) > 1:
        fail("several file counts: %r" % sorted(maxes))
    for name, t in spec.items():
        if name not in seen:
            fail("%s is in no shard file" % name)
        if numel(t["shape"]) != covered[name]:
            fail("%s: the chunks hold %d elements of %d"
                 % (name, covered[name], numel(t["shape"])))
    print("ok %d tensors in %d files" % (len(spec), len(files)))


main()
