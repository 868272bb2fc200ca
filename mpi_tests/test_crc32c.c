// ranks: 1 2 4
// timeout: 120
/*
 * test_crc32c.c - CRC-32C (crc32c.c): the published vectors; ISA-L's
 * results against a bitwise reference written here from the definition;
 * continuing a checksum across any split; combining and shifting, against
 * the reference for moderate lengths and against algebraic identities and
 * streamed zeros beyond 4 GiB; one buffer above ISA-L's int length; a
 * tensor split into interleaved runs, its CRC from the XOR of per-rank
 * parts, simulated in one process and over real ranks (MPI_BXOR); and
 * the throughput, printed.
 *
 * The cases that only compute run on every rank with the rank in their
 * random seeds; the ones reading gigabytes, and the timings, on rank 0
 * alone.
 */
#include <inttypes.h>

#include "harness.h"

#define GIB ((uint64_t)1 << 30)

/* ---- a bitwise reference, from the definition ---------------------- */

/* The register after n bytes of p from `reg`, one bit at a time:
 * reflected, polynomial 0x82F63B78, no init, no final xor. */
static uint32_t ref_update(uint32_t reg, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        reg ^= p ? p[i] : 0;
        for (int k = 0; k < 8; k++)
            reg = reg & 1 ? (reg >> 1) ^ 0x82F63B78u : reg >> 1;
    }
    return reg;
}

/* CRC-32C: init and final xor 0xFFFFFFFF. */
static uint32_t ref_crc32c(const uint8_t *p, size_t n)
{
    return ~ref_update(0xFFFFFFFFu, p, n);
}

static void fill_random(uint8_t *p, size_t n, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)hfdcp_test_rand(rng);
}

static uint64_t seed_of(MPI_Comm comm, uint64_t salt)
{
    return salt * 1000003u + (uint64_t)hfdcp_test_comm_rank(comm);
}

/* crc continued over n zero bytes fed for real, a MiB at a time. */
static uint32_t crc_of_zeros(uint32_t crc, uint64_t n)
{
    static const uint8_t zeros[1 << 20];
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        crc = hfdcp__crc32c(crc, zeros, k);
        n -= k;
    }
    return crc;
}

/* ---- vectors and ISA-L against the reference ----------------------- */

static int crc32c_should_give_published_vectors(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    uint8_t b[48];

    T_CHECK(hfdcp__crc32c(0, "123456789", 9) == 0xE3069283u);
    T_CHECK(hfdcp__crc32c(0, NULL, 0) == 0);
    T_CHECK(hfdcp__crc32c(0x12345678u, NULL, 0) == 0x12345678u);
    T_CHECK(hfdcp__crc32c(0, "a", 1) == 0xC1D04330u);
    /* RFC 3720 (iSCSI), B.4. */
    memset(b, 0, 32);
    T_CHECK(hfdcp__crc32c(0, b, 32) == 0x8A9136AAu);
    memset(b, 0xFF, 32);
    T_CHECK(hfdcp__crc32c(0, b, 32) == 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)i;
    T_CHECK(hfdcp__crc32c(0, b, 32) == 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)(31 - i);
    T_CHECK(hfdcp__crc32c(0, b, 32) == 0x113FDB5Cu);
    /* An iSCSI Read (10) command PDU. */
    static const uint8_t pdu[48] = {
        0x01, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x14, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, 0, 0x14, 0, 0, 0, 0x18,
        0x28, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0};
    T_CHECK(hfdcp__crc32c(0, pdu, sizeof pdu) == 0xD9963A56u);
    /* The reference agrees on them. */
    T_CHECK(ref_crc32c((const uint8_t *)"123456789", 9) == 0xE3069283u);
    T_CHECK(ref_crc32c(pdu, sizeof pdu) == 0xD9963A56u);
    return T_OK;
}

/* ISA-L picks code by length and alignment: every length to 1100 at
 * every start modulo 16, then longer ones. */
static int crc32c_should_match_the_reference_at_any_length_and_alignment(
    MPI_Comm comm, const char *dir)
{
    (void)dir;
    enum { N = 1 << 17 };
    uint64_t rng = seed_of(comm, 1);
    uint8_t *buf = malloc(N + 16);
    T_CHECK(buf != NULL);
    fill_random(buf, N + 16, &rng);
    int rc = T_OK;
    for (size_t len = 0; len <= 1100 && rc == T_OK; len++)
        for (size_t a = 0; a < 16; a++) {
            uint32_t got = hfdcp__crc32c(0, buf + a, len);
            uint32_t want = ref_crc32c(buf + a, len);
            if (got != want) {
                rc = hfdcp_test_fail(__FILE__, __LINE__,
                                     "len %zu at +%zu: %08" PRIx32 " != %08" PRIx32,
                                     len, a, got, want);
                break;
            }
        }
    for (size_t len = 1101; len <= N && rc == T_OK; len = len * 3 + 7) {
        size_t a = (size_t)(hfdcp_test_rand(&rng) % 16);
        if (hfdcp__crc32c(0, buf + a, len) != ref_crc32c(buf + a, len))
            rc = hfdcp_test_fail(__FILE__, __LINE__, "len %zu at +%zu", len, a);
    }
    free(buf);
    return rc;
}

static int crc32c_should_continue_across_random_splits(MPI_Comm comm,
                                                       const char *dir)
{
    (void)dir;
    enum { N = 1 << 20 };
    uint64_t rng = seed_of(comm, 2);
    uint8_t *buf = malloc(N);
    T_CHECK(buf != NULL);
    fill_random(buf, N, &rng);
    const uint32_t whole = hfdcp__crc32c(0, buf, N);
    int rc = T_OK;
    if (whole != ref_crc32c(buf, N))
        rc = hfdcp_test_fail(__FILE__, __LINE__, "1 MiB differs from the reference");
    for (int trial = 0; trial < 200 && rc == T_OK; trial++) {
        /* Up to 20 pieces, some empty, some a byte, the rest random. */
        size_t pos = 0;
        uint32_t crc = 0;
        int pieces = 1 + (int)(hfdcp_test_rand(&rng) % 20);
        for (int i = 0; i < pieces && pos < N; i++) {
            uint64_t kind = hfdcp_test_rand(&rng) % 4;
            size_t n = kind == 0 ? 0 : kind == 1 ? 1
                                   : (size_t)(hfdcp_test_rand(&rng) % (N - pos + 1));
            crc = hfdcp__crc32c(crc, buf + pos, n);
            pos += n;
        }
        crc = hfdcp__crc32c(crc, buf + pos, N - pos);
        if (crc != whole)
            rc = hfdcp_test_fail(__FILE__, __LINE__, "trial %d: %08" PRIx32
                                 " != %08" PRIx32, trial, crc, whole);
    }
    free(buf);
    return rc;
}

/* ---- combine and shift ---------------------------------------------- */

static int crc32c_should_combine_like_the_direct_crc(MPI_Comm comm,
                                                     const char *dir)
{
    (void)dir;
    enum { N = 1 << 16 };
    uint64_t rng = seed_of(comm, 3);
    uint8_t *buf = malloc(N);
    T_CHECK(buf != NULL);
    fill_random(buf, N, &rng);
    int rc = T_OK;
    for (int trial = 0; trial < 2000 && rc == T_OK; trial++) {
        size_t la = (size_t)(hfdcp_test_rand(&rng) % (N + 1));
        size_t lb = (size_t)(hfdcp_test_rand(&rng) % (N - la + 1));
        if (trial < 4) { /* the empty sides */
            la = trial & 1 ? 0 : la;
            lb = trial & 2 ? 0 : lb;
        }
        uint32_t a = hfdcp__crc32c(0, buf, la);
        uint32_t b = hfdcp__crc32c(0, buf + la, lb);
        uint32_t want = hfdcp__crc32c(0, buf, la + lb);
        if (hfdcp__crc32c_combine(a, b, lb) != want)
            rc = hfdcp_test_fail(__FILE__, __LINE__, "trial %d: %zu + %zu bytes",
                                 trial, la, lb);
    }
    free(buf);
    T_CHECK(rc == T_OK);
    T_CHECK(hfdcp__crc32c_combine(0, 0, 0) == 0);
    T_CHECK(hfdcp__crc32c_combine(0xE3069283u, 0, 0) == 0xE3069283u);
    return T_OK;
}

/* Shifting against the reference fed zeros, at moderate lengths. */
static int crc32c_should_shift_like_zeros_fed_bit_by_bit(MPI_Comm comm,
                                                         const char *dir)
{
    (void)dir;
    uint64_t rng = seed_of(comm, 4);
    for (uint64_t n = 0; n <= 1100; n++) {
        uint32_t reg = (uint32_t)hfdcp_test_rand(&rng);
        T_CHECKF(hfdcp__crc32c_shift(reg, n) == ref_update(reg, NULL, n),
                 "%" PRIu64 " bytes", n);
    }
    for (int i = 0; i < 30; i++) {
        uint64_t n = (uint64_t)1 << (i % 18);
        n += hfdcp_test_rand(&rng) % n;
        uint32_t reg = (uint32_t)hfdcp_test_rand(&rng);
        T_CHECKF(hfdcp__crc32c_shift(reg, n) == ref_update(reg, NULL, n),
                 "%" PRIu64 " bytes", n);
    }
    return T_OK;
}

/* Beyond what can be fed: every power of two is the square of the one
 * below (which checks crc32c.c's table entry by entry, the first against
 * the reference above), shifts add, and shifting is linear. */
static int crc32c_should_shift_by_huge_lengths_consistently(MPI_Comm comm,
                                                            const char *dir)
{
    (void)dir;
    uint64_t rng = seed_of(comm, 5);
    for (int k = 1; k < 64; k++) {
        uint32_t reg = (uint32_t)hfdcp_test_rand(&rng);
        uint64_t half = (uint64_t)1 << (k - 1);
        T_CHECKF(hfdcp__crc32c_shift(reg, half * 2) ==
                     hfdcp__crc32c_shift(hfdcp__crc32c_shift(reg, half), half),
                 "2^%d bytes", k);
    }
    T_CHECK(hfdcp__crc32c_shift(0x89ABCDEFu, UINT64_MAX) ==
            hfdcp__crc32c_shift(hfdcp__crc32c_shift(0x89ABCDEFu, (uint64_t)1 << 63),
                                ((uint64_t)1 << 63) - 1));
    for (int i = 0; i < 1000; i++) {
        uint64_t a = hfdcp_test_rand(&rng) >> (2 + i % 60);
        uint64_t b = hfdcp_test_rand(&rng) >> 2;
        uint32_t r1 = (uint32_t)hfdcp_test_rand(&rng);
        uint32_t r2 = (uint32_t)hfdcp_test_rand(&rng);
        T_CHECKF(hfdcp__crc32c_shift(hfdcp__crc32c_shift(r1, a), b) ==
                     hfdcp__crc32c_shift(r1, a + b),
                 "%" PRIu64 " + %" PRIu64, a, b);
        T_CHECK(hfdcp__crc32c_shift(r1 ^ r2, b) ==
                (hfdcp__crc32c_shift(r1, b) ^ hfdcp__crc32c_shift(r2, b)));
        /* Combining is associative, whatever the lengths. */
        uint32_t c = (uint32_t)hfdcp_test_rand(&rng);
        uint32_t left = hfdcp__crc32c_combine(hfdcp__crc32c_combine(r1, r2, a), c, b);
        uint32_t right = hfdcp__crc32c_combine(
            r1, hfdcp__crc32c_combine(r2, c, b), a + b);
        T_CHECKF(left == right, "%" PRIu64 " + %" PRIu64, a, b);
    }
    return T_OK;
}

/* ---- beyond int and 4 GiB, fed for real (rank 0) -------------------- */

/* One buffer of 2 GiB + 4099 bytes (calloc'd: untouched pages cost no
 * memory), a few bytes set near ISA-L's pieces' edges: whole == in 3 MiB
 * + 5 pieces.  T_SKIP when the buffer cannot be had. */
static int check_over_int_max(void)
{
    const size_t n = ((size_t)1 << 31) + 4099;
    uint8_t *buf = calloc(n, 1);
    if (buf == NULL) {
        printf("  no 2 GiB of address space: the one-buffer check cannot run\n");
        return T_SKIP;
    }
    const size_t at[] = {0, GIB - 1, GIB, GIB + 1, n / 2, ((size_t)1 << 31) - 1,
                         (size_t)1 << 31, n - 1};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
        buf[at[i]] = (uint8_t)(0x5A + i);
    uint32_t whole = hfdcp__crc32c(0, buf, n), pieces = 0;
    for (size_t pos = 0; pos < n;) {
        size_t k = n - pos < (3u << 20) + 5 ? n - pos : (3u << 20) + 5;
        pieces = hfdcp__crc32c(pieces, buf + pos, k);
        pos += k;
    }
    free(buf);
    T_CHECKF(whole == pieces, "%08" PRIx32 " != %08" PRIx32, whole, pieces);
    return T_OK;
}

/* A || 4.5 GiB + 7 zero bytes || B, fed for real, against combine with
 * the zeros' CRC from hfdcp__crc32c_finish(0, n) (a run of zeros has crc0
 * 0). */
static int check_beyond_4_gib(void)
{
    const uint64_t n = 4 * GIB + GIB / 2 + 7;
    uint32_t fed = hfdcp__crc32c(0, "123456789", 9);
    fed = crc_of_zeros(fed, n);
    fed = hfdcp__crc32c(fed, "abc", 3);
    uint32_t zeros = hfdcp__crc32c_finish(0, n);
    T_CHECK(zeros == crc_of_zeros(0, n));
    uint32_t algebra = hfdcp__crc32c_combine(
        hfdcp__crc32c_combine(0xE3069283u, zeros, n), hfdcp__crc32c(0, "abc", 3), 3);
    T_CHECKF(fed == algebra, "%08" PRIx32 " != %08" PRIx32, fed, algebra);
    return T_OK;
}

static int check_runs_beyond_4_gib(void);

static int crc32c_should_handle_lengths_beyond_int_and_4_gib(MPI_Comm comm,
                                                             const char *dir)
{
    (void)dir;
    if (hfdcp_test_comm_rank(comm) != 0)
        return T_OK;
    double t0 = MPI_Wtime();
    int one_buffer = check_over_int_max();
    T_CHECK(one_buffer != 1);
    T_CHECK(check_beyond_4_gib() == T_OK);
    T_CHECK(check_runs_beyond_4_gib() == T_OK);
    printf("  fed for real in %.2f s\n", MPI_Wtime() - t0);
    return one_buffer;
}

/* ---- a tensor's runs over ranks -------------------------------------- */

typedef struct {
    uint64_t off, len;
    int rank;
} run;

/* The CRC of the tensor t[0..L) from its runs over P simulated ranks
 * (each rank adds its own runs in the order given), by XOR of the parts. */
static uint32_t crc_by_parts(const uint8_t *t, uint64_t L, const run *runs,
                             size_t n, int P)
{
    uint32_t x = 0;
    for (int r = 0; r < P; r++) {
        hfdcp__crc32c_runs acc = {0};
        for (size_t i = 0; i < n; i++)
            if (runs[i].rank == r)
                hfdcp__crc32c_runs_add(&acc, runs[i].off, t + runs[i].off,
                                       (size_t)runs[i].len);
        x ^= hfdcp__crc32c_runs_part(&acc, L);
    }
    return hfdcp__crc32c_finish(x, L);
}

static void shuffle(run *runs, size_t n, uint64_t *rng)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(hfdcp_test_rand(rng) % i);
        run tmp = runs[i - 1];
        runs[i - 1] = runs[j];
        runs[j] = tmp;
    }
}

/* The runs of a column split: `rows` rows of `rb` bytes, row i's bytes
 * [cut[r], cut[r+1]) on rank r (empty parts kept out).  Returns the count. */
static size_t column_runs(run *runs, uint64_t rows, uint64_t rb,
                          const uint64_t *cut, int P)
{
    size_t n = 0;
    for (uint64_t i = 0; i < rows; i++)
        for (int r = 0; r < P; r++)
            if (cut[r + 1] > cut[r])
                runs[n++] = (run){i * rb + cut[r], cut[r + 1] - cut[r], r};
    return n;
}

static int crc32c_should_reduce_interleaved_runs_by_xor(MPI_Comm comm,
                                                        const char *dir)
{
    (void)dir;
    enum { ROWS = 64, RB = 300 };
    uint64_t rng = seed_of(comm, 6);
    uint8_t *t = malloc(ROWS * RB);
    run *runs = malloc(ROWS * RB * sizeof *runs);
    T_CHECK(t != NULL && runs != NULL);
    int rc = T_OK;
    for (int trial = 0; trial < 300 && rc == T_OK; trial++) {
        int P = 2 + (int)(hfdcp_test_rand(&rng) % 3);
        uint64_t rows = 1 + hfdcp_test_rand(&rng) % ROWS;
        uint64_t rb = 1 + hfdcp_test_rand(&rng) % RB;
        uint64_t L = rows * rb;
        fill_random(t, (size_t)L, &rng);
        const uint32_t want = hfdcp__crc32c(0, t, (size_t)L);
        size_t n;
        const char *how;
        if (trial % 3 != 2) {
            /* Columns: sorted random cuts, some parts empty (a rank with
             * nothing), rank r's runs in row order or shuffled. */
            uint64_t cut[5] = {0};
            for (int r = 1; r < P; r++)
                cut[r] = hfdcp_test_rand(&rng) % (rb + 1);
            cut[P] = rb;
            for (int r = 1; r < P; r++) /* insertion sort of cut[1..P-1] */
                for (int s = r; s > 1 && cut[s - 1] > cut[s]; s--) {
                    uint64_t tmp = cut[s];
                    cut[s] = cut[s - 1];
                    cut[s - 1] = tmp;
                }
            n = column_runs(runs, rows, rb, cut, P);
            how = "columns";
            if (trial % 3 == 1) {
                shuffle(runs, n, &rng);
                how = "columns, shuffled";
            }
        } else {
            /* Any partition into runs, owners at random, shuffled. */
            n = 0;
            for (uint64_t pos = 0; pos < L;) {
                uint64_t len = 1 + hfdcp_test_rand(&rng) % 97;
                len = len < L - pos ? len : L - pos;
                runs[n++] = (run){pos, len, (int)(hfdcp_test_rand(&rng) % P)};
                pos += len;
            }
            shuffle(runs, n, &rng);
            how = "random runs, shuffled";
        }
        uint32_t got = crc_by_parts(t, L, runs, n, P);
        if (got != want)
            rc = hfdcp_test_fail(__FILE__, __LINE__,
                                 "trial %d (%s, %d ranks, %" PRIu64 " x %" PRIu64
                                 " bytes): %08" PRIx32 " != %08" PRIx32,
                                 trial, how, P, rows, rb, got, want);
    }
    free(t);
    free(runs);
    T_CHECK(rc == T_OK);
    /* The empty tensor, no runs anywhere. */
    hfdcp__crc32c_runs none = {0};
    T_CHECK(hfdcp__crc32c_finish(hfdcp__crc32c_runs_part(&none, 0), 0) == 0);
    /* One rank holding the whole tensor: its part is crc0. */
    hfdcp__crc32c_runs one = {0};
    hfdcp__crc32c_runs_add(&one, 0, "123456789", 9);
    T_CHECK(hfdcp__crc32c_finish(hfdcp__crc32c_runs_part(&one, 9), 9) == 0xE3069283u);
    return T_OK;
}

/* A tensor of 5 GiB + 3 bytes, zeros but for runs on two ranks around 2^32
 * and at the ends, against the bytes fed for real. */
static int check_runs_beyond_4_gib(void)
{
    static const uint8_t data[100] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    const uint64_t L = 5 * GIB + 3;
    const run runs[] = {{0, 100, 0}, {3 * GIB, 17, 0},
                        {4 * GIB - 50, 100, 1}, {L - 10, 10, 1}};
    const size_t n = sizeof runs / sizeof runs[0];
    uint32_t x = 0, fed = 0;
    uint64_t pos = 0;
    for (int r = 0; r < 2; r++) {
        hfdcp__crc32c_runs acc = {0};
        for (size_t i = 0; i < n; i++)
            if (runs[i].rank == r)
                hfdcp__crc32c_runs_add(&acc, runs[i].off, data, runs[i].len);
        x ^= hfdcp__crc32c_runs_part(&acc, L);
    }
    for (size_t i = 0; i < n; i++) { /* runs[] is in file order */
        fed = crc_of_zeros(fed, runs[i].off - pos);
        fed = hfdcp__crc32c(fed, data, runs[i].len);
        pos = runs[i].off + runs[i].len;
    }
    fed = crc_of_zeros(fed, L - pos);
    T_CHECKF(hfdcp__crc32c_finish(x, L) == fed, "%08" PRIx32 " != %08" PRIx32,
             hfdcp__crc32c_finish(x, L), fed);
    return T_OK;
}

/* Real ranks: a 1000 x 4098-byte tensor, the same on every rank, split in
 * columns (rank r: every row's r-th part); the parts reduced with
 * MPI_BXOR give every rank the CRC-32C of the whole. */
static int crc32c_should_reduce_column_runs_over_ranks(MPI_Comm comm,
                                                       const char *dir)
{
    (void)dir;
    enum { ROWS = 1000, RB = 4098 };
    const int P = hfdcp_test_comm_size(comm), me = hfdcp_test_comm_rank(comm);
    const uint64_t L = (uint64_t)ROWS * RB;
    uint64_t rng = 42; /* the same tensor everywhere */
    uint8_t *t = malloc(L);
    bool ok = t != NULL;
    uint32_t want = 0, part = 0, x = 0;
    if (ok) {
        fill_random(t, L, &rng);
        want = hfdcp__crc32c(0, t, L);
        int64_t lo, len;
        hfdcp_test_part(RB, me, P, &lo, &len);
        hfdcp__crc32c_runs acc = {0};
        for (uint64_t i = 0; i < ROWS; i++)
            hfdcp__crc32c_runs_add(&acc, i * RB + (uint64_t)lo,
                                   t + i * RB + (uint64_t)lo, (size_t)len);
        part = hfdcp__crc32c_runs_part(&acc, L);
    }
    free(t);
    T_CHECK(hfdcp_test_all_ok(comm, ok));
    int mrc = MPI_Allreduce(&part, &x, 1, MPI_UINT32_T, MPI_BXOR, comm);
    T_CHECK(mrc == MPI_SUCCESS);
    uint32_t got = hfdcp__crc32c_finish(x, L);
    T_CHECKF(got == want, "rank %d: %08" PRIx32 " != %08" PRIx32, me, got, want);
    return T_OK;
}

/* ---- throughput (printed, not asserted; rank 0) ---------------------- */

static int crc32c_should_report_its_throughput(MPI_Comm comm, const char *dir)
{
    (void)dir;
    if (hfdcp_test_comm_rank(comm) != 0)
        return T_OK;
    const size_t n = (size_t)256 << 20;
    uint64_t rng = 7;
    uint8_t *buf = malloc(n);
    T_CHECK(buf != NULL);
    for (size_t i = 0; i < n / 8; i++) {
        uint64_t v = hfdcp_test_rand(&rng);
        memcpy(buf + 8 * i, &v, 8);
    }
    uint32_t crc = hfdcp__crc32c(0, buf, n); /* pages touched, code chosen */
    double t0 = MPI_Wtime();
    for (int i = 0; i < 4; i++)
        crc = hfdcp__crc32c(crc, buf, n);
    double one_shot = (MPI_Wtime() - t0) / 4;

    /* Rank 0's runs of a 4-way column split, rows of 8 KiB: 2 KiB runs. */
    const size_t rb = 8192, runlen = 2048;
    hfdcp__crc32c_runs acc = {0};
    t0 = MPI_Wtime();
    for (size_t row = 0; row < n / rb; row++)
        hfdcp__crc32c_runs_add(&acc, row * rb, buf + row * rb, runlen);
    uint32_t part = hfdcp__crc32c_runs_part(&acc, n);
    double runs = MPI_Wtime() - t0;
    /* The same runs' CRCs alone: what ISA-L takes on 2 KiB pieces. */
    uint32_t plain = 0;
    t0 = MPI_Wtime();
    for (size_t row = 0; row < n / rb; row++)
        plain ^= hfdcp__crc32c(0, buf + row * rb, runlen);
    double alone = MPI_Wtime() - t0;

    uint32_t s = part;
    t0 = MPI_Wtime();
    for (int i = 0; i < 10000; i++)
        s = hfdcp__crc32c_shift(s, hfdcp_test_rand(&rng) >> 4);
    double shift = (MPI_Wtime() - t0) / 10000;
    free(buf);

    printf("  crc32c: 256 MiB in %.4f s, %.2f GiB/s (%08" PRIx32 ")\n",
           one_shot, 0.25 / one_shot, crc);
    printf("  runs: %zu runs of 2 KiB in %.4f s, %.2f GiB/s of run bytes"
           " (their CRCs alone: %.2f GiB/s, %08" PRIx32 ")\n",
           n / rb, runs, (double)(n / rb * runlen) / GIB / runs,
           (double)(n / rb * runlen) / GIB / alone, plain);
    printf("  shift by a 60-bit length: %.0f ns (%08" PRIx32 ")\n", shift * 1e9, s);
    fflush(stdout);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"crc32c_should_give_published_vectors", crc32c_should_give_published_vectors, 1},
    {"crc32c_should_match_the_reference_at_any_length_and_alignment",
     crc32c_should_match_the_reference_at_any_length_and_alignment, 1},
    {"crc32c_should_continue_across_random_splits",
     crc32c_should_continue_across_random_splits, 1},
    {"crc32c_should_combine_like_the_direct_crc",
     crc32c_should_combine_like_the_direct_crc, 1},
    {"crc32c_should_shift_like_zeros_fed_bit_by_bit",
     crc32c_should_shift_like_zeros_fed_bit_by_bit, 1},
    {"crc32c_should_shift_by_huge_lengths_consistently",
     crc32c_should_shift_by_huge_lengths_consistently, 1},
    {"crc32c_should_handle_lengths_beyond_int_and_4_gib",
     crc32c_should_handle_lengths_beyond_int_and_4_gib, 1},
    {"crc32c_should_reduce_interleaved_runs_by_xor",
     crc32c_should_reduce_interleaved_runs_by_xor, 1},
    {"crc32c_should_reduce_column_runs_over_ranks",
     crc32c_should_reduce_column_runs_over_ranks, 1},
    {"crc32c_should_report_its_throughput", crc32c_should_report_its_throughput, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
