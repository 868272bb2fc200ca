#!/usr/bin/python3
"""Oracle for test_convert.c: converts a raw little-endian array.

usage: reader_convert_oracle.py MODE IN OUT

  f16_to_f32, f32_to_f16, f64_to_f16, bf16_to_f16   numpy's own casts
  f64_to_bf16   an exact search: the nearest of all 65536 BF16 values
                (ties to the even bit pattern, overflow past the largest
                finite value plus half an ulp to infinity), independent of
                any bit trick
"""
import sys
import warnings

import numpy as np

warnings.simplefilter("ignore")  # overflow to inf is expected


def bf16_exact(x):
    bits = np.arange(0x8000, dtype=np.uint32)  # non-negative patterns
    vals = (bits << 16).view(np.float32).astype(np.float64)
    finite = np.isfinite(vals)
    cand = vals[finite]
    cand_bits = bits[finite].astype(np.uint16)
    order = np.argsort(cand, kind="stable")
    cand, cand_bits = cand[order], cand_bits[order]
    # one more candidate past the largest finite value: 2^128 stands for
    # infinity (its midpoint with the maximum is the overflow threshold)
    cand = np.append(cand, 2.0 ** 128)
    cand_bits = np.append(cand_bits, np.uint16(0x7F80))

    a = np.abs(x)
    out = np.zeros(x.shape, dtype=np.uint16)
    nan = np.isnan(x)
    inf = np.isinf(x)
    fin = ~nan & ~inf
    af = np.minimum(a[fin], 2.0 ** 128)
    hi = np.searchsorted(cand, af, side="left")
    hi = np.minimum(hi, len(cand) - 1)
    lo = np.maximum(hi - 1, 0)
    vh, vl = cand[hi], cand[lo]
    mid = (vl + vh) / 2  # exact: one more bit than BF16 has
    pick_hi = (af == vh) | (af > mid) | ((af == mid) & (cand_bits[hi] % 2 == 0))
    res = np.where(pick_hi, cand_bits[hi], cand_bits[lo])
    out[fin] = res
    out[inf] = 0x7F80
    out[nan] = 0x7FC0
    sign = (np.signbit(x)).astype(np.uint16) << 15
    return out | sign


def main():
    mode, src, dst = sys.argv[1:4]
    raw = open(src, "rb").read()
    if mode == "f16_to_f32":
        out = np.frombuffer(raw, "<f2").astype("<f4")
    elif mode == "f32_to_f16":
        out = np.frombuffer(raw, "<f4").astype("<f2")
    elif mode == "f64_to_f16":
        out = np.frombuffer(raw, "<f8").astype("<f2")
    elif mode == "bf16_to_f16":
        b = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        out = b.view("<f4").astype("<f2")
    elif mode == "f64_to_bf16":
        out = bf16_exact(np.frombuffer(raw, "<f8"))
    else:
        sys.exit("unknown mode " + mode)
    open(dst, "wb").write(np.ascontiguousarray(out).tobytes())


main()
