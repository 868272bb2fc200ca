/*
 * convert.c - conversion among the floating-point dtypes F64, F32, F16 and
 * BF16, bit-exact and independent of the FPU's rounding mode.
 *
 * Every conversion decodes the source into an F64 bit pattern (exact: F64
 * holds every F32, F16 and BF16 value) and encodes that into the target
 * with one rounding, to nearest with ties to even.  One rounding, so F32 ->
 * F16 through F64 is correctly rounded (no double rounding).  NaN stays NaN
 * with its sign and the top bits of its payload, and is made quiet; a
 * finite value too large for the target becomes infinity; subnormals are
 * produced and consumed; zeros keep their sign.  F32 -> BF16, the most
 * common cast, takes a shortcut on the bit pattern with the same results
 * (checked on all 2^32 inputs).
 *
 * Data are little-endian, as in the file; so is every host we build on.
 */
#include <string.h>

#include "hfdcp_internal.h"

/* An IEEE binary format: exponent and fraction bits. */
typedef struct {
    int ebits, mbits;
} fmt;

static const fmt F64_FMT = {11, 52};
static const fmt F32_FMT = {8, 23};
static const fmt F16_FMT = {5, 10};
static const fmt BF16_FMT = {8, 7};

static bool is_float(hfdcp_dtype d)
{
    return d == HFDCP_F64 || d == HFDCP_F32 || d == HFDCP_F16 ||
           d == HFDCP_BF16;
}

bool hfdcp__can_convert(hfdcp_dtype from, hfdcp_dtype to)
{
    if (hfdcp_dtype_bits(from) == 0 || hfdcp_dtype_bits(to) == 0)
        return false;
    return from == to || (is_float(from) && is_float(to));
}

static fmt format_of(hfdcp_dtype d)
{
    switch (d) {
    case HFDCP_F32: return F32_FMT;
    case HFDCP_F16: return F16_FMT;
    case HFDCP_BF16: return BF16_FMT;
    default: return F64_FMT;
    }
}

/* The F64 bit pattern of the value with bits `x` in format `f` (exact). */
static uint64_t widen(uint64_t x, fmt f)
{
    uint64_t sign = (x >> (f.ebits + f.mbits)) & 1;
    uint64_t emax = ((uint64_t)1 << f.ebits) - 1;
    uint64_t e = (x >> f.mbits) & emax;
    uint64_t m = x & (((uint64_t)1 << f.mbits) - 1);
    int bias = (1 << (f.ebits - 1)) - 1;
    int shift = 52 - f.mbits;
    uint64_t out;

    if (e == emax) {
        /* Infinity, or NaN made quiet with its payload's top bits. */
        out = ((uint64_t)0x7ff << 52) | (m << shift);
        if (m != 0)
            out |= (uint64_t)1 << 51;
    } else if (e == 0) {
        if (m == 0) {
            out = 0;
        } else {
            /* Subnormal: m * 2^(1 - bias - mbits); normal in F64. */
            int top = 63 - __builtin_clzll(m); /* 0 .. mbits-1 */
            int64_t exp2 = (int64_t)(1 - bias - f.mbits) + top;
            out = ((uint64_t)(exp2 + 1023) << 52) |
                  ((m << (52 - top)) & (((uint64_t)1 << 52) - 1));
        }
    } else {
        out = ((e - (uint64_t)bias + 1023) << 52) | (m << shift);
    }
    return out | (sign << 63);
}

/* The bits, in format `f`, of the F64 value with bits `x`, rounded to
 * nearest even. */
static uint64_t narrow(uint64_t x, fmt f)
{
    uint64_t sign = x >> 63;
    uint64_t e = (x >> 52) & 0x7ff;
    uint64_t m = x & (((uint64_t)1 << 52) - 1);
    uint64_t emax = ((uint64_t)1 << f.ebits) - 1;
    uint64_t inf = emax << f.mbits;
    int bias = (1 << (f.ebits - 1)) - 1;
    uint64_t sig, out, rs;
    int64_t exp2, unb;
    int shift;

    if (e == 0x7ff) {
        out = inf;
        if (m != 0)
            out |= ((uint64_t)1 << (f.mbits - 1)) | (m >> (52 - f.mbits));
        return out | (sign << (f.ebits + f.mbits));
    }
    if (e == 0 && m == 0)
        return sign << (f.ebits + f.mbits);

    /* value = sig * 2^exp2 with sig's top bit at position 52. */
    if (e == 0) {
        int top = 63 - __builtin_clzll(m);
        sig = m << (52 - top);
        exp2 = -1074 - (52 - top);
    } else {
        sig = m | ((uint64_t)1 << 52);
        exp2 = (int64_t)e - 1075;
    }
    unb = exp2 + 52; /* the unbiased exponent */

    if (unb > (int64_t)bias)
        return inf | (sign << (f.ebits + f.mbits));
    if (unb >= 1 - bias) {
        shift = 52 - f.mbits; /* normal: keep mbits + 1 bits */
    } else {
        /* Subnormal: the quantum is 2^(1 - bias - mbits). */
        int64_t s = (int64_t)(1 - bias - f.mbits) - exp2;
        shift = s > 63 ? 64 : (int)s;
    }
    if (shift >= 64) {
        rs = 0; /* below half of the smallest subnormal */
    } else {
        uint64_t rem = sig & (((uint64_t)1 << shift) - 1);
        uint64_t half = (uint64_t)1 << (shift - 1);
        rs = sig >> shift;
        if (rem > half || (rem == half && (rs & 1)))
            rs++;
    }
    if (unb >= 1 - bias)
        /* rs holds the implicit bit: adding it to (biased - 1) carries a
         * rounding overflow into the exponent, up to infinity. */
        out = ((uint64_t)(unb + bias - 1) << f.mbits) + rs;
    else
        out = rs; /* may round up to the smallest normal: still right */
    if (out > inf)
        out = inf;
    return out | (sign << (f.ebits + f.mbits));
}

static uint64_t load(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    memcpy(&v, p, (size_t)bytes); /* little-endian host */
    return v;
}

static void store(unsigned char *p, uint64_t v, int bytes)
{
    memcpy(p, &v, (size_t)bytes);
}

void hfdcp__convert(hfdcp_dtype from, const void *src, hfdcp_dtype to,
                    void *dst, size_t n)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    int sb = hfdcp_dtype_bits(from) / 8, db = hfdcp_dtype_bits(to) / 8;
    fmt sf = format_of(from), df = format_of(to);

    if (from == to) {
        uint64_t bits;
        if (hfdcp__mul_u64(n, (uint64_t)hfdcp_dtype_bits(from), &bits))
            memcpy(dst, src, (size_t)(bits / 8));
        return;
    }
    if (from == HFDCP_F32 && to == HFDCP_BF16) {
        /* The most common cast (F32 training weights saved as BF16), an
         * add and a shift per element on the bit pattern instead of the
         * general path's widening to F64 and narrowing (the loop below),
         * with the same bits as widen + narrow: rounding
         * to nearest even on the bit pattern (exact for subnormals, and a
         * carry into the exponent rounds up to infinity); a NaN keeps its
         * sign and payload's top bits and is made quiet. */
        for (size_t i = 0; i < n; i++) {
            uint32_t x;
            uint16_t y;
            memcpy(&x, s + 4 * i, 4);
            if ((x & 0x7fffffffu) > 0x7f800000u)
                y = (uint16_t)((x >> 16) | 0x0040u);
            else
                y = (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
            memcpy(d + 2 * i, &y, 2);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t x = load(s + i * (size_t)sb, sb);
        uint64_t w = from == HFDCP_F64 ? x : widen(x, sf);
        store(d + i * (size_t)db, to == HFDCP_F64 ? w : narrow(w, df), db);
    }
}
