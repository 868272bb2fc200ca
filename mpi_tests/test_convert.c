// ranks: 1
// timeout: 300
/*
 * test_convert.c - conversion among F64, F32, F16 and BF16.
 *
 * Oracles: numpy's float16 casts (through /usr/bin/python3 and
 * mpi_tests/scripts/reader_convert_oracle.py), the C compiler's double ->
 * float cast for F64 -> F32, an exact nearest-value search in Python for
 * F64 -> BF16, and the well-known integer trick for F32 -> BF16 (add
 * 0x7fff plus the lowest kept bit, drop 16 bits), written here on its own.
 * NaN: the result must be a NaN of the same sign (ours are quiet, numpy
 * keeps signalling NaNs signalling).
 */
#include <math.h>

#include "harness.h"

/* ---- helpers ---- */

static bool nan_bits(uint64_t x, int ebits, int mbits)
{
    uint64_t emax = ((uint64_t)1 << ebits) - 1;
    return ((x >> mbits) & emax) == emax && (x & (((uint64_t)1 << mbits) - 1));
}

/* Runs the oracle `mode` on `n` elements of `in_size` bytes; *out gets
 * n elements of out_size bytes (malloc'd). */
static int oracle(const char *dir, const char *mode, const void *in,
                  size_t n, size_t in_size, void **out, size_t out_size)
{
    char *src = hfdcp__path_join(dir, "in.bin");
    char *dst = hfdcp__path_join(dir, "out.bin");
    char *cmd = hfdcp__asprintf("%s %s/reader_convert_oracle.py %s %s %s",
                                hfdcp_test_python(), hfdcp_test_scripts(),
                                mode, src, dst);
    size_t len = 0;
    int st;

    *out = NULL;
    if (hfdcp_test_write_file(src, in, n * in_size) != 0)
        return hfdcp_test_fail(__FILE__, __LINE__, "writing %s", src);
    st = hfdcp_test_run(cmd, NULL);
    if (st != 0)
        return hfdcp_test_fail(__FILE__, __LINE__, "%s: exit %d", cmd, st);
    *out = hfdcp_test_read_file(dst, &len);
    if (*out == NULL || len != n * out_size)
        return hfdcp_test_fail(__FILE__, __LINE__, "%s: %zu bytes out", cmd,
                               len);
    free(src);
    free(dst);
    free(cmd);
    return 0;
}

/* Compares n results in format `to`: equal, or both NaN of the same sign,
 * ours quiet. */
static int compare(const char *what, const void *in, int in_bits,
                   const void *got, const void *want, size_t n,
                   hfdcp_dtype to)
{
    int bits = hfdcp_dtype_bits(to);
    int ebits = to == HFDCP_F64 ? 11 : to == HFDCP_F16 ? 5 : 8;
    int mbits = bits - 1 - ebits;
    size_t bad = 0;

    for (size_t i = 0; i < n; i++) {
        uint64_t g = 0, w = 0, x = 0;
        memcpy(&g, (const char *)got + i * (size_t)bits / 8, (size_t)bits / 8);
        memcpy(&w, (const char *)want + i * (size_t)bits / 8, (size_t)bits / 8);
        memcpy(&x, (const char *)in + i * (size_t)in_bits / 8,
               (size_t)in_bits / 8);
        bool ok = g == w;
        if (!ok && nan_bits(w, ebits, mbits))
            ok = nan_bits(g, ebits, mbits) && (g >> (bits - 1)) == (w >> (bits - 1)) &&
                 ((g >> (mbits - 1)) & 1);
        if (!ok && bad++ < 5)
            hfdcp_test_fail(__FILE__, __LINE__,
                            "%s: input 0x%llx gives 0x%llx, expected 0x%llx",
                            what, (unsigned long long)x,
                            (unsigned long long)g, (unsigned long long)w);
    }
    return bad != 0;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double bits_f64(uint64_t u)
{
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* F32 test values: every value of the 16-bit format given by
 * (ebits, shift: F32 bits = v << shift for BF16; computed for F16 by the
 * caller), the midpoints between neighbours, and one F32 ulp either side,
 * plus random patterns and specials. */
typedef struct {
    uint32_t *v;
    size_t n, cap;
} u32list;

static void push32(u32list *l, uint32_t x)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = x;
}

/* Adds `vals` (ascending non-negative finite F32 values of a narrower
 * format), their midpoints and neighbours, both signs. */
static void add_midpoints(u32list *l, const float *vals, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        float mid = (vals[i] + vals[i + 1]) / 2; /* exact in F32 */
        uint32_t m = f32_bits(mid);
        uint32_t c[5] = {f32_bits(vals[i]), m, m - 1, m + 1,
                         f32_bits(vals[i + 1])};
        for (int k = 0; k < 5; k++) {
            push32(l, c[k]);
            push32(l, c[k] | 0x80000000u);
        }
    }
}

static void add_specials_and_random(u32list *l, uint64_t seed, size_t n)
{
    static const uint32_t sp[] = {
        0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000,
        0xffc00000, 0x7f800001, 0x7fbfffff, 0x00000001, 0x807fffff,
        0x7f7fffff, 0x477fe000 /* 65504 */, 0x477ff000 /* 65520 */,
        0x477fefff, 0x47800000, 0x33000000 /* 2^-25 */, 0x33000001,
        0x33800000 /* 2^-24 */, 0x33c00000, 0x38800000 /* 2^-14 */,
        0x387fc000, 0x387fe000, 0x7f7f8000, 0x7f7fffff, 0x7f7f7fff,
    };
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
        push32(l, sp[i]);
    for (size_t i = 0; i < n; i++)
        push32(l, (uint32_t)hfdcp_test_rand(&seed));
}

/* ---- cases ---- */

static int convert_should_know_what_converts(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    hfdcp_dtype fl[4] = {HFDCP_F64, HFDCP_F32, HFDCP_F16, HFDCP_BF16};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            T_CHECK(hfdcp__can_convert(fl[i], fl[j]));
    for (int d = 0; d < HFDCP_DTYPE_COUNT; d++)
        T_CHECK(hfdcp__can_convert((hfdcp_dtype)d, (hfdcp_dtype)d));
    T_CHECK(!hfdcp__can_convert(HFDCP_I32, HFDCP_F32));
    T_CHECK(!hfdcp__can_convert(HFDCP_F32, HFDCP_I32));
    T_CHECK(!hfdcp__can_convert(HFDCP_F8_E4M3, HFDCP_F16));
    T_CHECK(!hfdcp__can_convert(HFDCP_C64, HFDCP_F64));
    T_CHECK(!hfdcp__can_convert(HFDCP_U16, HFDCP_BF16));
    T_CHECK(!hfdcp__can_convert((hfdcp_dtype)99, (hfdcp_dtype)99));
    /* Same dtype copies bytes, sub-byte included. */
    unsigned char a[3] = {1, 2, 3}, b[3] = {0};
    hfdcp__convert(HFDCP_F6_E2M3, a, HFDCP_F6_E2M3, b, 4);
    T_CHECK(memcmp(a, b, 3) == 0);
    return T_OK;
}

static int convert_should_widen_every_f16_like_numpy(MPI_Comm comm,
                                                     const char *dir)
{
    uint16_t in[65536], back[65536];
    uint32_t got[65536];
    uint64_t wide[65536];
    void *want;
    (void)comm;

    for (uint32_t i = 0; i < 65536; i++)
        in[i] = (uint16_t)i;
    hfdcp__convert(HFDCP_F16, in, HFDCP_F32, got, 65536);
    T_CHECK(oracle(dir, "f16_to_f32", in, 65536, 2, &want, 4) == 0);
    T_CHECK(compare("F16->F32", in, 16, got, want, 65536, HFDCP_F32) == 0);
    free(want);
    /* And back, exactly; through F64 too. */
    hfdcp__convert(HFDCP_F32, got, HFDCP_F16, back, 65536);
    hfdcp__convert(HFDCP_F16, in, HFDCP_F64, wide, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        bool nan = nan_bits(i, 5, 10);
        T_CHECKF(nan ? nan_bits(back[i], 5, 10) && (back[i] & 0x8200) ==
                           (i & 0x8000) + 0x200
                     : back[i] == i,
                 "F16 0x%04x -> F32 0x%08x -> F16 0x%04x", i, got[i],
                 back[i]);
        T_CHECKF(nan ? isnan(bits_f64(wide[i]))
                     : bits_f64(wide[i]) == (double)bits_f32(got[i]),
                 "F16 0x%04x -> F64", i);
    }
    hfdcp__convert(HFDCP_F64, wide, HFDCP_F16, back, 65536);
    for (uint32_t i = 0; i < 65536; i++)
        T_CHECKF(nan_bits(i, 5, 10) ? nan_bits(back[i], 5, 10) : back[i] == i,
                 "F16 0x%04x -> F64 -> F16 0x%04x", i, back[i]);
    return T_OK;
}

static int convert_should_widen_every_bf16_exactly(MPI_Comm comm,
                                                   const char *dir)
{
    uint16_t in[65536], back[65536], f16[65536];
    uint32_t got[65536];
    void *want;
    (void)comm;

    for (uint32_t i = 0; i < 65536; i++)
        in[i] = (uint16_t)i;
    hfdcp__convert(HFDCP_BF16, in, HFDCP_F32, got, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        /* BF16 is the top half of F32; NaNs come back quiet. */
        uint32_t w = i << 16;
        if (nan_bits(i, 8, 7))
            T_CHECKF(isnan(bits_f32(got[i])) && (got[i] & 0x80400000u) ==
                                                    ((w & 0x80000000u) | 0x400000u),
                     "BF16 0x%04x -> 0x%08x", i, got[i]);
        else
            T_CHECKF(got[i] == w, "BF16 0x%04x -> 0x%08x", i, got[i]);
    }
    hfdcp__convert(HFDCP_F32, got, HFDCP_BF16, back, 65536);
    for (uint32_t i = 0; i < 65536; i++)
        T_CHECKF(nan_bits(i, 8, 7) ? nan_bits(back[i], 8, 7) : back[i] == i,
                 "BF16 0x%04x round trip gives 0x%04x", i, back[i]);
    /* BF16 -> F16 directly (one rounding), against numpy through F32
     * (exact, then one rounding). */
    hfdcp__convert(HFDCP_BF16, in, HFDCP_F16, f16, 65536);
    T_CHECK(oracle(dir, "bf16_to_f16", in, 65536, 2, &want, 2) == 0);
    T_CHECK(compare("BF16->F16", in, 16, f16, want, 65536, HFDCP_F16) == 0);
    free(want);
    return T_OK;
}

/* The classic integer rounding of F32 bits to BF16, for comparison. */
static uint16_t bf16_trick(uint32_t x)
{
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

static int convert_should_round_f32_to_nearest_even(MPI_Comm comm,
                                                    const char *dir)
{
    u32list l = {0};
    float vals[65536];
    size_t nv = 0;
    uint16_t in[32768];
    void *want;
    (void)comm;

    /* F16 neighbours, from numpy's widening of every positive F16. */
    for (uint32_t i = 0; i < 0x7c00; i++)
        in[i] = (uint16_t)i;
    T_CHECK(oracle(dir, "f16_to_f32", in, 0x7c00, 2, &want, 4) == 0);
    memcpy(vals, want, 0x7c00 * 4);
    nv = 0x7c00;
    free(want);
    vals[nv++] = 65536.0f; /* where infinity would be */
    add_midpoints(&l, vals, nv);
    /* BF16 neighbours. */
    nv = 0;
    for (uint32_t i = 0; i < 0x7f80; i++)
        vals[nv++] = bits_f32(i << 16);
    vals[nv++] = bits_f32(0x7f7fffffu); /* F32 max: past the BF16 max */
    add_midpoints(&l, vals, nv);
    add_specials_and_random(&l, 99, 200000);

    uint16_t *got = malloc(l.n * 2), *want16 = malloc(l.n * 2);
    hfdcp__convert(HFDCP_F32, l.v, HFDCP_F16, got, l.n);
    T_CHECK(oracle(dir, "f32_to_f16", l.v, l.n, 4, &want, 2) == 0);
    T_CHECK(compare("F32->F16", l.v, 32, got, want, l.n, HFDCP_F16) == 0);
    free(want);

    hfdcp__convert(HFDCP_F32, l.v, HFDCP_BF16, got, l.n);
    for (size_t i = 0; i < l.n; i++)
        want16[i] = bf16_trick(l.v[i]);
    T_CHECK(compare("F32->BF16", l.v, 32, got, want16, l.n, HFDCP_BF16) == 0);

    /* Every F32 whose low half is a tie, just below or just above one,
     * for every high half. */
    static const uint32_t lows[] = {0x7fff, 0x8000, 0x8001, 0x0000, 0xffff};
    for (size_t k = 0; k < 5; k++) {
        uint32_t xs[65536];
        uint16_t g[65536], w[65536];
        for (uint32_t hi = 0; hi < 65536; hi++) {
            xs[hi] = (hi << 16) | lows[k];
            w[hi] = bf16_trick(xs[hi]);
        }
        hfdcp__convert(HFDCP_F32, xs, HFDCP_BF16, g, 65536);
        T_CHECK(compare("F32->BF16 ties", xs, 32, g, w, 65536, HFDCP_BF16) == 0);
    }
    free(got);
    free(want16);
    free(l.v);
    return T_OK;
}

static int convert_should_round_f64_once(MPI_Comm comm, const char *dir)
{
    u32list l = {0};
    float vals[65536];
    size_t nv = 0;
    void *want;
    (void)comm;

    /* F64 values: every F32 test value, and the F16 / BF16 midpoints
     * nudged by far less than an F32 ulp, where rounding through F32
     * first would land on the tie and go the wrong way. */
    for (uint32_t i = 0; i < 0x7f80; i++)
        vals[nv++] = bits_f32(i << 16);
    add_midpoints(&l, vals, nv);
    add_specials_and_random(&l, 7, 100000);
    size_t n = l.n * 3 + 100000;
    uint64_t *x = malloc(n * 8), seed = 5;
    size_t m = 0;
    for (size_t i = 0; i < l.n; i++) {
        double d = (double)bits_f32(l.v[i]);
        memcpy(&x[m++], &d, 8);
        double up = d + fabs(d) * 0x1p-40, down = d - fabs(d) * 0x1p-40;
        memcpy(&x[m++], &up, 8);
        memcpy(&x[m++], &down, 8);
    }
    for (size_t i = 0; i < 100000; i++) {
        /* random doubles, many within the F16 / BF16 ranges */
        uint64_t r = hfdcp_test_rand(&seed);
        if (i % 2)
            r = (r & 0x800fffffffffffffull) |
                ((uint64_t)(1023 - 30 + (r >> 52) % 60) << 52);
        x[m++] = r;
    }
    /* F16 midpoints nudged the same way. */
    uint16_t pos[0x7c00];
    for (uint32_t i = 0; i < 0x7c00; i++)
        pos[i] = (uint16_t)i;
    T_CHECK(oracle(dir, "f16_to_f32", pos, 0x7c00, 2, &want, 4) == 0);
    uint64_t *x2 = malloc((m + 4 * 0x7c00) * 8);
    memcpy(x2, x, m * 8);
    free(x);
    x = x2;
    for (uint32_t i = 0; i + 1 < 0x7c00; i++) {
        double a = ((float *)want)[i], b = ((float *)want)[i + 1];
        double mid = (a + b) / 2, e = (b - a) * 0x1p-30;
        double c[4] = {mid + e, mid - e, -(mid + e), -(mid - e)};
        memcpy(&x[m], c, sizeof c);
        m += 4;
    }
    free(want);

    uint16_t *g16 = malloc(m * 2);
    float *g32 = malloc(m * 4), *w32 = malloc(m * 4);
    hfdcp__convert(HFDCP_F64, x, HFDCP_F16, g16, m);
    T_CHECK(oracle(dir, "f64_to_f16", x, m, 8, &want, 2) == 0);
    T_CHECK(compare("F64->F16", x, 64, g16, want, m, HFDCP_F16) == 0);
    free(want);
    hfdcp__convert(HFDCP_F64, x, HFDCP_BF16, g16, m);
    T_CHECK(oracle(dir, "f64_to_bf16", x, m, 8, &want, 2) == 0);
    T_CHECK(compare("F64->BF16", x, 64, g16, want, m, HFDCP_BF16) == 0);
    free(want);
    /* F64 -> F32 against the compiler's cast (round to nearest even). */
    hfdcp__convert(HFDCP_F64, x, HFDCP_F32, g32, m);
    for (size_t i = 0; i < m; i++)
        w32[i] = (float)bits_f64(x[i]);
    T_CHECK(compare("F64->F32", x, 64, g32, w32, m, HFDCP_F32) == 0);
    /* F32 -> F64 is exact. */
    double *g64 = malloc(m * 8);
    hfdcp__convert(HFDCP_F32, w32, HFDCP_F64, g64, m);
    for (size_t i = 0; i < m; i++)
        T_CHECKF(isnan(w32[i]) ? isnan(g64[i]) : g64[i] == (double)w32[i],
                 "F32 %a -> F64 %a", (double)w32[i], g64[i]);
    free(g64);
    free(g16);
    free(g32);
    free(w32);
    free(x);
    free(l.v);
    return T_OK;
}

static int convert_should_keep_signed_zeros_and_specials(MPI_Comm comm,
                                                         const char *dir)
{
    (void)comm;
    (void)dir;
    double in[8] = {-0.0, 0.0, INFINITY, -INFINITY, 1e300, -1e300, 0x1p-1074,
                    -0x1p-1074};
    uint16_t h[8], b[8];
    hfdcp__convert(HFDCP_F64, in, HFDCP_F16, h, 8);
    hfdcp__convert(HFDCP_F64, in, HFDCP_BF16, b, 8);
    uint16_t wh[8] = {0x8000, 0, 0x7c00, 0xfc00, 0x7c00, 0xfc00, 0, 0x8000};
    uint16_t wb[8] = {0x8000, 0, 0x7f80, 0xff80, 0x7f80, 0xff80, 0, 0x8000};
    for (int i = 0; i < 8; i++) {
        T_CHECKF(h[i] == wh[i], "F16 of %a: 0x%04x", in[i], h[i]);
        T_CHECKF(b[i] == wb[i], "BF16 of %a: 0x%04x", in[i], b[i]);
    }
    /* A signalling NaN comes out quiet, sign and top payload kept. */
    uint32_t snan = 0xff800001u, qn;
    uint16_t hn;
    hfdcp__convert(HFDCP_F32, &snan, HFDCP_F16, &hn, 1);
    T_CHECKF(hn == 0xfe00, "0x%04x", hn);
    uint32_t payload = 0x7fa00000u;
    hfdcp__convert(HFDCP_F32, &payload, HFDCP_BF16, &hn, 1);
    T_CHECKF(hn == 0x7fe0, "0x%04x", hn);
    hfdcp__convert(HFDCP_BF16, &hn, HFDCP_F32, &qn, 1);
    T_CHECKF(qn == 0x7fe00000u, "0x%08x", qn);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"convert_should_know_what_converts", convert_should_know_what_converts, 1},
    {"convert_should_widen_every_f16_like_numpy", convert_should_widen_every_f16_like_numpy, 1},
    {"convert_should_widen_every_bf16_exactly", convert_should_widen_every_bf16_exactly, 1},
    {"convert_should_round_f32_to_nearest_even", convert_should_round_f32_to_nearest_even, 1},
    {"convert_should_round_f64_once", convert_should_round_f64_once, 1},
    {"convert_should_keep_signed_zeros_and_specials", convert_should_keep_signed_zeros_and_specials, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
