// ranks: 1 2 3 4
// timeout: 300
// romio: 1 2 3 4
// nosieve: 2 3 4
/*
 * test_mpiio.c - the MPI-IO layer: pieces (a box of a row-major array in a
 * file <-> a box of a row-major array in memory) written and read back with
 * collective calls, checked against file contents computed independently.
 *
 * The array in the file sits at an odd offset after a few header bytes;
 * its bytes are a pseudo-random pattern of their position.  The expected
 * contents are computed element by element and bit by bit (so sub-byte
 * dtypes are checked without the layer's byte folding); memory arrays have
 * halos that must come back untouched.
 *
 * Under ROMIO: run the same binary with OMPI_MCA_io=romio321 in the
 * environment (it must be set before MPI_Init).
 */
#include <errno.h>
#include <sys/stat.h>

#include "harness.h"

#define MAXD 4
#define MAXBOX 64
#define HALO_BYTE 0xA5

typedef struct {
    int bits, ndim;
    int64_t shape[MAXD];
    uint64_t header;     /* file offset of the array */
    int64_t halo[MAXD];  /* memory halo on each side, in elements */
    uint64_t seed;
} tarray;

typedef struct {
    int64_t start[MAXD], count[MAXD];
} tbox;

/* The boxes a rank writes or reads. */
typedef int (*boxes_fn)(const tarray *a, int rank, int size, tbox *out);

/* ---- the pattern and bit-level expected contents ---- */

static unsigned char pat(uint64_t seed, uint64_t k)
{
    uint64_t s = seed * 0x100000001b3ull ^ (k * 0x9e3779b97f4a7c15ull);
    return (unsigned char)(hfdcp_test_rand(&s) >> 56);
}

static void set_bit(unsigned char *buf, uint64_t i, int v)
{
    if (v)
        buf[i >> 3] = (unsigned char)(buf[i >> 3] | (1u << (i & 7)));
    else
        buf[i >> 3] = (unsigned char)(buf[i >> 3] & ~(1u << (i & 7)));
}

static int64_t numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

static uint64_t linear(int ndim, const int64_t *shape, const int64_t *start,
                       const int64_t *idx)
{
    uint64_t lin = 0;
    for (int d = 0; d < ndim; d++)
        lin = lin * (uint64_t)shape[d] + (uint64_t)(start[d] + idx[d]);
    return lin;
}

/* Copies, bit by bit, the box `b` of the pattern array `a` into `dst`, an
 * array of shape `mshape`, at `mstart`. */
static void fill_box(const tarray *a, const tbox *b, unsigned char *dst,
                     const int64_t *mshape, const int64_t *mstart)
{
    int64_t idx[MAXD] = {0};
    int nd = a->ndim;

    if (numel(nd, b->count) == 0)
        return;
    for (;;) {
        uint64_t lf = linear(nd, a->shape, b->start, idx);
        uint64_t lm = linear(nd, mshape, mstart, idx);
        for (int k = 0; k < a->bits; k++) {
            uint64_t fb = lf * (uint64_t)a->bits + (uint64_t)k;
            int v = (pat(a->seed, fb >> 3) >> (fb & 7)) & 1;
            set_bit(dst, lm * (uint64_t)a->bits + (uint64_t)k, v);
        }
        int d = nd - 1;
        while (d >= 0 && ++idx[d] == b->count[d])
            idx[d--] = 0;
        if (d < 0)
            return;
    }
}

static uint64_t array_bytes(const tarray *a, int ndim, const int64_t *shape)
{
    return (uint64_t)numel(ndim, shape) * (uint64_t)a->bits / 8;
}

/* The memory array of a box: the box plus the halo on every side. */
static void mem_shape(const tarray *a, const tbox *b, int64_t *mshape,
                      int64_t *mstart)
{
    for (int d = 0; d < a->ndim; d++) {
        mshape[d] = b->count[d] + 2 * a->halo[d];
        mstart[d] = a->halo[d];
    }
}

/* ---- decompositions ---- */

/* Boundary i of n parts of `len`, on multiples of `align` (the last one is
 * len). */
static int64_t cut(int64_t len, int i, int n, int64_t align)
{
    if (i >= n)
        return len;
    return (len * i / n) / align * align;
}

/* The box of grid cell `cell` in a grid of `grid[d]` parts per dimension;
 * innermost boundaries on multiples of `align`. */
static tbox grid_box(const tarray *a, const int *grid, int cell,
                     int64_t align)
{
    tbox b;
    for (int d = a->ndim - 1; d >= 0; d--) {
        int c = cell % grid[d];
        int64_t al = d == a->ndim - 1 ? align : 1;
        cell /= grid[d];
        b.start[d] = cut(a->shape[d], c, grid[d], al);
        b.count[d] = cut(a->shape[d], c + 1, grid[d], al) - b.start[d];
    }
    return b;
}

static int64_t byte_align(const tarray *a)
{
    return a->bits == 4 ? 2 : a->bits == 6 ? 4 : 1;
}

static void factor2(int size, int *p, int *q)
{
    *p = size;
    *q = 1;
    for (int f = 2; f * f <= size; f++)
        if (size % f == 0) {
            *p = size / f;
            *q = f;
        }
}

static int rows(const tarray *a, int rank, int size, tbox *out)
{
    int grid[MAXD] = {size, 1, 1, 1};
    out[0] = grid_box(a, grid, rank, byte_align(a));
    return 1;
}

static int cols(const tarray *a, int rank, int size, tbox *out)
{
    int grid[MAXD] = {1, 1, 1, 1};
    grid[a->ndim - 1] = size;
    out[0] = grid_box(a, grid, rank, byte_align(a));
    return 1;
}

/* 2-D blocks of the first and last dimensions. */
static int blocks(const tarray *a, int rank, int size, tbox *out)
{
    int grid[MAXD] = {1, 1, 1, 1};
    factor2(size, &grid[0], &grid[a->ndim - 1]);
    out[0] = grid_box(a, grid, rank, byte_align(a));
    return 1;
}

/* Blocks of the middle dimensions. */
static int mid_blocks(const tarray *a, int rank, int size, tbox *out)
{
    int grid[MAXD] = {1, 1, 1, 1};
    factor2(size, &grid[1], &grid[a->ndim > 2 ? 2 : 1]);
    out[0] = grid_box(a, grid, rank, byte_align(a));
    return 1;
}

/* 4 * size row blocks; rank r holds blocks r, r + size, ...: its pieces
 * interleave in the file, each one long run. */
static int rows_round_robin(const tarray *a, int rank, int size, tbox *out)
{
    int grid[MAXD] = {4 * size, 1, 1, 1};
    for (int i = 0; i < 4; i++)
        out[i] = grid_box(a, grid, rank + i * size, byte_align(a));
    return 4;
}

/* 3 * size column blocks; rank r holds blocks r, r + size, r + 2 * size:
 * its pieces interleave in the file. */
static int cols_round_robin(const tarray *a, int rank, int size, tbox *out)
{
    int grid[MAXD] = {1, 1, 1, 1};
    grid[a->ndim - 1] = 3 * size;
    for (int i = 0; i < 3; i++)
        out[i] = grid_box(a, grid, rank + i * size, byte_align(a));
    return 3;
}

/* Two row blocks per rank, in reverse file order: disjoint in the file. */
static int rows_two_each(const tarray *a, int rank, int size, tbox *out)
{
    int grid[MAXD] = {2 * size, 1, 1, 1};
    out[0] = grid_box(a, grid, 2 * rank + 1, byte_align(a));
    out[1] = grid_box(a, grid, 2 * rank, byte_align(a));
    return 2;
}

/* The whole array twice and an inner box: overlapping reads. */
static int whole_twice_and_inner(const tarray *a, int rank, int size,
                                 tbox *out)
{
    (void)rank;
    (void)size;
    for (int d = 0; d < a->ndim; d++) {
        int64_t al = d == a->ndim - 1 ? byte_align(a) : 1;
        int64_t lo = a->shape[d] / 3 / al * al;
        int64_t hi = (a->shape[d] - a->shape[d] / 4) / al * al;
        out[0].start[d] = out[1].start[d] = 0;
        out[0].count[d] = out[1].count[d] = a->shape[d];
        out[2].start[d] = lo;
        out[2].count[d] = hi - lo;
    }
    return 3;
}

static int whole(const tarray *a, int rank, int size, tbox *out)
{
    (void)rank;
    (void)size;
    for (int d = 0; d < a->ndim; d++) {
        out[0].start[d] = 0;
        out[0].count[d] = a->shape[d];
    }
    return 1;
}

/* Pairs of whole rows: with 3 F4 elements a row, rows are 1.5 bytes but a
 * pair of rows starts and ends on whole bytes. */
static int row_pairs(const tarray *a, int rank, int size, tbox *out)
{
    (void)size;
    for (int d = 0; d < a->ndim; d++) {
        out[0].start[d] = 0;
        out[0].count[d] = a->shape[d];
    }
    out[0].start[0] = 2 * (rank % (a->shape[0] / 2));
    out[0].count[0] = 2;
    return 1;
}

static int whole_on_rank0(const tarray *a, int rank, int size, tbox *out)
{
    return rank == 0 ? whole(a, rank, size, out) : 0;
}

static int rows_on_last_rank(const tarray *a, int rank, int size, tbox *out)
{
    int grid[MAXD] = {2, 1, 1, 1};
    if (rank != size - 1)
        return 0;
    out[0] = grid_box(a, grid, 1, 1);
    out[1] = grid_box(a, grid, 0, 1);
    return 2;
}

/* ---- one write + read round trip ---- */

typedef struct {
    MPI_Info info;
    int write_rounds; /* expected rounds, or -1 to skip the check */
    int read_rounds;
    int write_calls;  /* WRITE_INDEPENDENT or WRITE_COLLECTIVE expected;
                       * 0: not checked */
    int read_sieved;  /* READ_SIEVED or READ_NOT_SIEVED expected; 0: not
                       * checked */
    int exchange;     /* EXCH_SHARED or EXCH_ALLTOALLW expected of both
                       * transfers (aggregated); 0: not checked */
} topts;

enum { READ_SIEVED = 1, READ_NOT_SIEVED = 2 };

enum { WRITE_INDEPENDENT = 1, WRITE_COLLECTIVE = 2 };
enum { EXCH_SHARED = 1, EXCH_ALLTOALLW = 2 };

static char *array_path(const char *dir)
{
    return hfdcp__path_join(dir, "array.bin");
}

/* Rank 0 writes the header bytes with POSIX I/O. */
static int write_header(MPI_Comm comm, const char *path, uint64_t header)
{
    int rank, ok = 1;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        unsigned char *h = malloc(header + 1);
        memset(h, 'H', header + 1);
        ok = hfdcp_test_write_file(path, h, header) == 0;
        free(h);
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
    return ok ? 0 : hfdcp_test_fail(__FILE__, __LINE__, "writing %s", path);
}

/* Allocates memory arrays for `n` boxes, filled with HALO_BYTE, and pieces
 * pointing at them; with `fill`, the boxes hold the pattern. */
static int make_pieces(const tarray *a, const tbox *b, int n, bool fill,
                       unsigned char **mem, int64_t (*mshape)[MAXD],
                       int64_t (*mstart)[MAXD], hfdcp__piece *pieces)
{
    for (int i = 0; i < n; i++) {
        mem_shape(a, &b[i], mshape[i], mstart[i]);
        uint64_t bytes = array_bytes(a, a->ndim, mshape[i]);
        mem[i] = malloc(bytes + 1);
        if (mem[i] == NULL)
            return hfdcp_test_fail(__FILE__, __LINE__, "malloc");
        memset(mem[i], HALO_BYTE, bytes + 1);
        if (fill)
            fill_box(a, &b[i], mem[i], mshape[i], mstart[i]);
        pieces[i] = (hfdcp__piece){
            .file_offset = a->header, .mem = mem[i], .ndim = a->ndim,
            .bits = a->bits, .fshape = a->shape, .fstart = b[i].start,
            .mshape = mshape[i], .mstart = mstart[i], .count = b[i].count};
    }
    return 0;
}

/* Checks memory array i: the box holds the pattern, the halo is intact. */
static int check_mem(const tarray *a, const tbox *b, const unsigned char *mem,
                     const int64_t *mshape, const int64_t *mstart, int i)
{
    uint64_t bytes = array_bytes(a, a->ndim, mshape);
    unsigned char *want = malloc(bytes + 1);
    int bad = 0;

    memset(want, HALO_BYTE, bytes + 1);
    fill_box(a, b, want, mshape, mstart);
    for (uint64_t k = 0; k < bytes + 1; k++) {
        if (want[k] != mem[k]) {
            char box[128];
            hfdcp__format_box(box, sizeof box, a->ndim, b->start, b->count);
            bad = hfdcp_test_fail(__FILE__, __LINE__,
                                  "box %d %s: memory byte %llu is 0x%02x, "
                                  "expected 0x%02x", i, box,
                                  (unsigned long long)k, mem[k], want[k]);
            break;
        }
    }
    free(want);
    return bad;
}

/* Rank 0 compares the file with the header and every rank's written
 * boxes; bytes no box covers must read as zero. */
static int check_file(MPI_Comm comm, const char *path, const tarray *a,
                      boxes_fn wfn)
{
    int rank, size, bad = 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (rank == 0) {
        uint64_t bytes = array_bytes(a, a->ndim, a->shape);
        unsigned char *want = calloc(a->header + bytes + 1, 1);
        size_t len = 0;
        unsigned char *got = hfdcp_test_read_file(path, &len);
        tbox b[MAXBOX];

        memset(want, 'H', a->header);
        for (int r = 0; r < size; r++) {
            int n = wfn(a, r, size, b);
            for (int i = 0; i < n; i++)
                fill_box(a, &b[i], want + a->header, a->shape, b[i].start);
        }
        if (got == NULL) {
            bad = hfdcp_test_fail(__FILE__, __LINE__, "cannot read %s", path);
        } else if (len > a->header + bytes) {
            bad = hfdcp_test_fail(__FILE__, __LINE__,
                                  "%s has %zu bytes, expected at most %llu",
                                  path, len,
                                  (unsigned long long)(a->header + bytes));
        } else {
            for (uint64_t k = 0; k < a->header + bytes; k++) {
                unsigned char g = k < len ? got[k] : 0;
                if (g != want[k]) {
                    bad = hfdcp_test_fail(__FILE__, __LINE__,
                                          "%s: byte %llu is 0x%02x, expected "
                                          "0x%02x", path,
                                          (unsigned long long)k, g, want[k]);
                    break;
                }
            }
        }
        free(got);
        free(want);
    }
    MPI_Bcast(&bad, 1, MPI_INT, 0, comm);
    return bad;
}

static int transfer(MPI_Comm comm, const char *path, const tarray *a,
                    boxes_fn fn, bool write, MPI_Info info, int want_rounds,
                    int want_calls, int want_sieved, int want_exchange)
{
    int rank, size, n, rounds, bad = 0;
    bool indep, sieved, shared;
    tbox b[MAXBOX];
    unsigned char *mem[MAXBOX] = {0};
    int64_t mshape[MAXBOX][MAXD], mstart[MAXBOX][MAXD];
    hfdcp__piece pieces[MAXBOX];
    hfdcp__mfile *f = NULL;

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    n = fn(a, rank, size, b);
    if (make_pieces(a, b, n, write, mem, mshape, mstart, pieces))
        return 1;
    T_OKCALL(hfdcp__mfile_open(comm, path, write, info, &f));
    T_OKCALL(hfdcp__mfile_transfer(f, write, pieces, (size_t)n));
    rounds = hfdcp__mfile_last_rounds(f);
    indep = hfdcp__mfile_last_independent(f);
    sieved = hfdcp__mfile_last_sieved(f);
    shared = hfdcp__mfile_last_shared(f);
    if (write)
        T_OKCALL(hfdcp__mfile_sync(f));
    T_OKCALL(hfdcp__mfile_close(f));
    if (want_rounds >= 0)
        T_CHECKF(rounds == want_rounds, "%d rounds, expected %d", rounds,
                 want_rounds);
    if (want_calls != 0)
        T_CHECKF(indep == (want_calls == WRITE_INDEPENDENT),
                 "%s written with %s calls", write ? "long runs" : "a read",
                 indep ? "independent" : "collective");
    if (want_sieved != 0)
        T_CHECKF(sieved == (want_sieved == READ_SIEVED), "%s %s",
                 write ? "a write" : "a read",
                 sieved ? "sieved" : "not sieved");
    if (want_exchange != 0)
        T_CHECKF(shared == (want_exchange == EXCH_SHARED),
                 "%s exchanged %s", write ? "a write" : "a read",
                 shared ? "through shared windows" : "with MPI_Alltoallw");
    for (int i = 0; i < n; i++) {
        if (!write && !bad)
            bad = check_mem(a, &b[i], mem[i], mshape[i], mstart[i], i);
        free(mem[i]);
    }
    return bad;
}

/* Every rank's verdict: failed if any rank failed. */
static int agreed(MPI_Comm comm, int bad)
{
    int any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, comm);
    return any;
}

/* Writes the array with `wfn`'s boxes, checks the file, reads it back with
 * `rfn`'s boxes and checks the memory.  The verdict is agreed, so callers
 * may loop on it without leaving a rank behind. */
static int round_trip(MPI_Comm comm, const char *dir, const tarray *a,
                      boxes_fn wfn, boxes_fn rfn, const topts *o)
{
    char *path = array_path(dir);
    MPI_Info info = o ? o->info : MPI_INFO_NULL;
    int bad = write_header(comm, path, a->header);

    if (!bad)
        bad = agreed(comm, transfer(comm, path, a, wfn, true, info,
                                    o ? o->write_rounds : -1,
                                    o ? o->write_calls : 0,
                                    o ? READ_NOT_SIEVED : 0,
                                    o ? o->exchange : 0));
    if (!bad)
        bad = check_file(comm, path, a, wfn);
    if (!bad)
        bad = agreed(comm, transfer(comm, path, a, rfn, false, info,
                                    o ? o->read_rounds : -1,
                                    o ? WRITE_COLLECTIVE : 0,
                                    o ? o->read_sieved : 0,
                                    o ? o->exchange : 0));
    free(path);
    return bad;
}

/* ---- cases ---- */

static int mpiio_should_write_rows_and_read_columns(MPI_Comm comm,
                                                    const char *dir)
{
    tarray a = {.bits = 32, .ndim = 2, .shape = {12, 10}, .header = 13,
                .seed = 1};
    T_CHECK(round_trip(comm, dir, &a, rows, cols, NULL) == 0);
    a.halo[0] = 1;
    a.halo[1] = 2;
    a.seed = 2;
    T_CHECK(round_trip(comm, dir, &a, rows, cols, NULL) == 0);
    return T_OK;
}

static int mpiio_should_write_columns_and_read_blocks(MPI_Comm comm,
                                                      const char *dir)
{
    tarray a = {.bits = 64, .ndim = 2, .shape = {9, 14}, .header = 5,
                .halo = {2, 1}, .seed = 3};
    T_CHECK(round_trip(comm, dir, &a, cols, blocks, NULL) == 0);
    a.bits = 8;
    a.seed = 4;
    T_CHECK(round_trip(comm, dir, &a, blocks, rows, NULL) == 0);
    return T_OK;
}

static int mpiio_should_move_3d_boxes_with_halos(MPI_Comm comm,
                                                 const char *dir)
{
    tarray a = {.bits = 16, .ndim = 3, .shape = {6, 5, 7}, .header = 7,
                .halo = {1, 1, 1}, .seed = 5};
    T_CHECK(round_trip(comm, dir, &a, blocks, mid_blocks, NULL) == 0);
    a.halo[0] = 0;
    a.halo[2] = 3;
    a.seed = 6;
    T_CHECK(round_trip(comm, dir, &a, mid_blocks, cols, NULL) == 0);
    tarray b = {.bits = 32, .ndim = 4, .shape = {3, 4, 2, 5}, .header = 1,
                .halo = {0, 1, 0, 1}, .seed = 7};
    T_CHECK(round_trip(comm, dir, &b, mid_blocks, blocks, NULL) == 0);
    return T_OK;
}

static int mpiio_should_move_sub_byte_boxes_on_whole_bytes(MPI_Comm comm,
                                                           const char *dir)
{
    /* F4: 2 elements a byte; F6: 4 elements in 3 bytes. */
    tarray f4 = {.bits = 4, .ndim = 2, .shape = {4, 16}, .header = 9,
                 .halo = {1, 2}, .seed = 8};
    T_CHECK(round_trip(comm, dir, &f4, cols, rows, NULL) == 0);
    T_CHECK(round_trip(comm, dir, &f4, blocks, cols, NULL) == 0);
    tarray f6 = {.bits = 6, .ndim = 2, .shape = {3, 16}, .header = 3,
                 .halo = {1, 4}, .seed = 9};
    T_CHECK(round_trip(comm, dir, &f6, cols, blocks, NULL) == 0);
    tarray f4d3 = {.bits = 4, .ndim = 3, .shape = {2, 3, 8}, .header = 11,
                   .halo = {0, 1, 2}, .seed = 10};
    T_CHECK(round_trip(comm, dir, &f4d3, mid_blocks, cols, NULL) == 0);
    /* Rows of 1.5 bytes: whole arrays and pairs of rows still move. */
    tarray odd = {.bits = 4, .ndim = 2, .shape = {6, 3}, .header = 5,
                  .seed = 17};
    T_CHECK(round_trip(comm, dir, &odd, whole_on_rank0, row_pairs, NULL) ==
            0);
    tarray odd6 = {.bits = 6, .ndim = 3, .shape = {4, 2, 3}, .header = 1,
                   .seed = 18};
    T_CHECK(round_trip(comm, dir, &odd6, whole_on_rank0, row_pairs, NULL) ==
            0);
    return T_OK;
}

static int mpiio_should_refuse_sub_byte_boxes_off_byte(MPI_Comm comm,
                                                       const char *dir)
{
    int rank, size;
    char *path = array_path(dir);
    unsigned char mem[16] = {0};
    int64_t shape[2] = {4, 16}, start[2] = {0, 0}, count[2] = {2, 16};
    hfdcp__piece p = {.file_offset = 0, .mem = mem, .ndim = 2, .bits = 4,
                      .fshape = shape, .fstart = start, .mshape = count,
                      .mstart = start, .count = count};
    hfdcp__mfile *f = NULL;

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (write_header(comm, path, 64))
        return 1;
    /* The last rank asks for 3 F4 elements (12 bits) per row; the others
     * for whole rows. */
    int64_t bad_count[2] = {2, 3};
    if (rank == size - 1) {
        p.count = bad_count;
        p.mshape = bad_count;
    }
    T_OKCALL(hfdcp__mfile_open(comm, path, false, MPI_INFO_NULL, &f));
    T_STATUS(hfdcp__mfile_transfer(f, false, &p, 1), HFDCP_ERR_UNSUPPORTED,
             "whole bytes");
    char want[64];
    snprintf(want, sizeof want, "rank %d: ", size - 1);
    T_CHECKF(strncmp(hfdcp_last_error(), want, strlen(want)) == 0, "%s",
             hfdcp_last_error());
    T_CHECK(strstr(hfdcp_last_error(), "array.bin") != NULL);
    /* F6 starting at element 2 (bit 12) of a row: refused too; F6 from
     * element 4 (byte 3): fine. */
    int64_t s6[2] = {0, 2}, c6[2] = {1, 4}, s6ok[2] = {0, 4};
    p.bits = 6;
    p.fstart = s6;
    p.count = c6;
    p.mshape = c6;
    T_STATUS(hfdcp__mfile_transfer(f, false, &p, 1), HFDCP_ERR_UNSUPPORTED,
             "6-bit");
    p.fstart = s6ok;
    T_OKCALL(hfdcp__mfile_transfer(f, false, &p, 1));
    T_CHECK(memcmp(mem, "HHH", 3) == 0);
    T_OKCALL(hfdcp__mfile_close(f));
    free(path);
    return T_OK;
}

static int mpiio_should_split_interleaving_pieces_into_rounds(MPI_Comm comm,
                                                              const char *dir)
{
    int size, saved = hfdcp__mpiio_aggregate_default, bad = 0;
    MPI_Comm_size(comm, &size);
    /* The rounds of the MPI-IO component's own collective path. */
    hfdcp__mpiio_aggregate_default = 2;
    tarray a = {.bits = 32, .ndim = 2, .shape = {8, 6 * size}, .header = 17,
                .halo = {1, 1}, .seed = 11};
    /* Three interleaving column blocks each: three rounds; reading the
     * whole array twice plus an inner box: three rounds too. */
    topts o = {MPI_INFO_NULL, 3, 3, 0, 0, 0};
    bad |= round_trip(comm, dir, &a, cols_round_robin, whole_twice_and_inner,
                      &o);
    /* Disjoint row blocks given in reverse order: one round. */
    topts one = {MPI_INFO_NULL, 1, 3, 0, 0, 0};
    a.seed = 12;
    bad |= round_trip(comm, dir, &a, rows_two_each, cols_round_robin, &one);
    /* Sub-byte interleaving columns. */
    tarray f4 = {.bits = 4, .ndim = 2, .shape = {5, 12 * size},
                 .header = 2, .halo = {0, 2}, .seed = 13};
    bad |= round_trip(comm, dir, &f4, cols_round_robin,
                      whole_twice_and_inner, &o);
    hfdcp__mpiio_aggregate_default = saved;
    T_CHECK(bad == 0);
    return T_OK;
}

static int mpiio_should_let_ranks_with_nothing_join(MPI_Comm comm,
                                                    const char *dir)
{
    tarray a = {.bits = 16, .ndim = 2, .shape = {10, 7}, .header = 3,
                .halo = {1, 0}, .seed = 14};
    MPI_Info info;
    /* Not sieved: the read, too, is a collective round where ranks with
     * nothing take part. */
    MPI_Info_create(&info);
    MPI_Info_set(info, "hfdcp_sieve_reads", "disable");
    topts o = {info, 1, 1, 0, 0, 0};
    int bad = round_trip(comm, dir, &a, whole_on_rank0, rows_on_last_rank,
                         &o);
    MPI_Info_free(&info);
    T_CHECK(bad == 0);
    /* Nobody has anything: no round at all, still a clean transfer. */
    char *path = array_path(dir);
    hfdcp__mfile *f = NULL;
    T_OKCALL(hfdcp__mfile_open(comm, path, false, MPI_INFO_NULL, &f));
    T_OKCALL(hfdcp__mfile_transfer(f, false, NULL, 0));
    T_CHECK(hfdcp__mfile_last_rounds(f) == 0);
    T_OKCALL(hfdcp__mfile_close(f));
    free(path);
    return T_OK;
}

static int mpiio_should_take_many_rounds_with_tiny_cb_buffer(MPI_Comm comm,
                                                             const char *dir)
{
    MPI_Info info;
    tarray a = {.bits = 8, .ndim = 2, .shape = {40, 300}, .header = 21,
                .halo = {1, 3}, .seed = 15};
    topts o = {MPI_INFO_NULL, -1, -1, 0, 0, 0};
    char *path = array_path(dir);
    hfdcp__mfile *f = NULL;
    char value[64];
    bool found;

    MPI_Info_create(&info);
    MPI_Info_set(info, "cb_buffer_size", "500");
    o.info = info;
    T_CHECK(round_trip(comm, dir, &a, blocks, cols, &o) == 0);
    a.bits = 32;
    a.seed = 16;
    T_CHECK(round_trip(comm, dir, &a, cols_round_robin, blocks, &o) == 0);

    /* The caller's hints are set over hfdcp's defaults. */
    T_OKCALL(hfdcp__mfile_open(comm, path, false, info, &f));
    T_OKCALL(hfdcp__mfile_get_hint(f, "cb_buffer_size", value, sizeof value,
                                   &found));
    T_CHECKF(found && strcmp(value, "500") == 0, "cb_buffer_size=%s",
             found ? value : "(unset)");
    T_OKCALL(hfdcp__mfile_get_hint(f, "romio_cb_write", value, sizeof value,
                                   &found));
    T_CHECKF(found && strcmp(value, "enable") == 0, "romio_cb_write=%s",
             found ? value : "(unset)");
    T_OKCALL(hfdcp__mfile_close(f));
    MPI_Info_set(info, "romio_cb_write", "disable");
    T_OKCALL(hfdcp__mfile_open(comm, path, false, info, &f));
    T_OKCALL(hfdcp__mfile_get_hint(f, "romio_cb_write", value, sizeof value,
                                   &found));
    T_CHECKF(found && strcmp(value, "disable") == 0, "romio_cb_write=%s",
             found ? value : "(unset)");
    T_OKCALL(hfdcp__mfile_close(f));
    MPI_Info_free(&info);
    free(path);
    return T_OK;
}

/* Random boxes of a 3-D array in `n` memory arrays of random sizes (at
 * least the box) at random positions; some overlap. */
static int random_boxes(const tarray *a, int rank, int size, tbox *out)
{
    uint64_t st = a->seed * 1000 + (uint64_t)rank;
    int n = 1 + (int)(hfdcp_test_rand(&st) % 20);
    (void)size;
    for (int i = 0; i < n; i++) {
        for (int d = 0; d < a->ndim; d++) {
            int64_t s = (int64_t)(hfdcp_test_rand(&st) % (uint64_t)a->shape[d]);
            int64_t c = 1 + (int64_t)(hfdcp_test_rand(&st) %
                                      (uint64_t)(a->shape[d] - s));
            out[i].start[d] = s;
            out[i].count[d] = c;
        }
    }
    return n;
}

static int mpiio_should_read_random_overlapping_boxes(MPI_Comm comm,
                                                      const char *dir)
{
    for (uint64_t seed = 20; seed < 30; seed++) {
        tarray a = {.bits = seed % 2 ? 32 : 8, .ndim = 3,
                    .shape = {7, 6, 5}, .header = seed,
                    .halo = {(int64_t)seed % 2, 2, (int64_t)seed % 3},
                    .seed = seed};
        T_CHECKF(round_trip(comm, dir, &a, rows, random_boxes, NULL) == 0,
                 "seed %llu", (unsigned long long)seed);
    }
    return T_OK;
}

static int mpiio_should_split_large_counts_into_blocks(MPI_Comm comm,
                                                       const char *dir)
{
    static const uint64_t blocks_to_try[] = {2, 3, 7, 64};
    uint64_t saved = hfdcp__mpiio_block;
    int bad = 0;

    for (size_t i = 0; i < 4 && !bad; i++) {
        hfdcp__mpiio_block = blocks_to_try[i];
        /* Contiguous runs longer than a block (whole rows, merged). */
        tarray flat = {.bits = 8, .ndim = 1, .shape = {1000}, .header = 3,
                       .seed = 40 + i};
        bad |= round_trip(comm, dir, &flat, rows, whole, NULL);
        /* Vectors of more elements than a block, runs longer than one. */
        tarray m = {.bits = 16, .ndim = 2, .shape = {50, 40}, .header = 1,
                    .halo = {3, 1}, .seed = 50 + i};
        bad |= round_trip(comm, dir, &m, cols, blocks, NULL);
        bad |= round_trip(comm, dir, &m, cols_round_robin,
                          whole_twice_and_inner, NULL);
        tarray c = {.bits = 64, .ndim = 3, .shape = {9, 8, 7}, .header = 5,
                    .halo = {1, 2, 1}, .seed = 60 + i};
        bad |= round_trip(comm, dir, &c, mid_blocks, random_boxes, NULL);
        tarray f6 = {.bits = 6, .ndim = 2, .shape = {11, 32}, .header = 7,
                     .halo = {2, 4}, .seed = 70 + i};
        bad |= round_trip(comm, dir, &f6, cols, rows, NULL);
        if (bad)
            hfdcp_test_fail(__FILE__, __LINE__, "with block size %llu",
                            (unsigned long long)blocks_to_try[i]);
    }
    hfdcp__mpiio_block = saved;
    T_CHECK(bad == 0);
    return T_OK;
}

/* Rank r's block of the first dimension (2-D or 3-D arrays) as a single
 * element (a byte for sub-byte dtypes), the rest of its first row, the
 * rest of its first slice (3-D) and its other slices: small pieces next to
 * a large one. */
static int small_and_large(const tarray *a, int rank, int size, tbox *out)
{
    int grid[MAXD] = {size, 1, 1, 1}, n = a->ndim == 3 ? 4 : 3;
    tbox b = grid_box(a, grid, rank, 1);
    int last = a->ndim - 1;
    int64_t el = byte_align(a);

    for (int i = 0; i < n; i++)
        out[i] = b;
    for (int d = 0; d < last; d++)
        out[0].count[d] = out[1].count[d] = 1;
    out[0].count[last] = el;
    out[1].start[last] = el;
    out[1].count[last] = a->shape[last] - el;
    if (n == 4) {
        out[2].count[0] = 1;
        out[2].start[1] = 1;
        out[2].count[1] = a->shape[1] - 1;
    }
    out[n - 1].start[0] = b.start[0] + 1;
    out[n - 1].count[0] = b.count[0] - 1;
    return n;
}

static int mpiio_should_cap_the_bytes_a_rank_moves_in_one_round(
    MPI_Comm comm, const char *dir)
{
    static const uint64_t limits[] = {1, 5, 64, 301, 4096};
    uint64_t saved = hfdcp__mpiio_round_max;
    int size, bad = 0, saved_agg = hfdcp__mpiio_aggregate_default;

    MPI_Comm_size(comm, &size);
    hfdcp__mpiio_aggregate_default = 2; /* the component's own rounds */
    for (size_t i = 0; i < sizeof limits / sizeof limits[0] && !bad; i++) {
        uint64_t lim = limits[i];
        hfdcp__mpiio_round_max = lim;
        /* Every rank reads the whole array into a memory array with a
         * halo: rows of `row` bytes, grouped by floor(lim / row) into a
         * round, or each split into ceil(row / lim) runs. */
        tarray a = {.bits = 32, .ndim = 2,
                    .shape = {lim == 1 ? size + 1 : 4 * size + 1,
                              lim == 1 ? 5 : 37},
                    .header = 19, .halo = {1, 2}, .seed = 80 + i};
        uint64_t row = (uint64_t)a.shape[1] * 4, rows = (uint64_t)a.shape[0];
        uint64_t want = lim >= row ? (rows + lim / row - 1) / (lim / row)
                                   : rows * ((row + lim - 1) / lim);
        topts o = {MPI_INFO_NULL, -1, (int)want, 0, 0, 0};
        bad |= round_trip(comm, dir, &a, small_and_large, whole, &o);
        if (lim > 1) {
            /* Interleaving and overlapping pieces, several arrays. */
            bad |= round_trip(comm, dir, &a, cols_round_robin,
                              small_and_large, NULL);
            bad |= round_trip(comm, dir, &a, small_and_large,
                              whole_twice_and_inner, NULL);
            tarray c = {.bits = 16, .ndim = 3, .shape = {2 * size + 1, 6, 7},
                        .header = 3, .halo = {1, 0, 2}, .seed = 90 + i};
            bad |= round_trip(comm, dir, &c, small_and_large, random_boxes,
                              NULL);
            bad |= round_trip(comm, dir, &c, mid_blocks, small_and_large,
                              NULL);
            tarray f4 = {.bits = 4, .ndim = 2, .shape = {3 * size, 20},
                         .header = 2, .halo = {0, 2}, .seed = 100 + i};
            bad |= round_trip(comm, dir, &f4, small_and_large,
                              cols_round_robin, NULL);
        }
        if (bad)
            hfdcp_test_fail(__FILE__, __LINE__, "with a round limit of %llu "
                            "bytes", (unsigned long long)lim);
    }
    hfdcp__mpiio_round_max = saved;
    hfdcp__mpiio_aggregate_default = saved_agg;
    T_CHECK(bad == 0);
    return T_OK;
}

/* hfdcp's own aggregation (hint hfdcp_aggregate=enable) with windows of a
 * few bytes, so that runs are cut at window and domain edges, ranks own
 * domains of every size (some empty) and transfers take many rounds; the
 * same round trips as above, bytes and halos checked. */
/* Round trips of short runs through hfdcp's own paths: the 12 x 10
 * array `a` with `o` (its write rounds checked on the first trip only),
 * then 3-D and 4-bit arrays (seeds from `seed`) in layouts that
 * interleave, overlap and leave ranks empty.  Agreed verdict. */
static int short_run_round_trips(MPI_Comm comm, const char *dir,
                                 const tarray *a, const topts *o,
                                 uint64_t seed)
{
    topts rest = *o;
    int size, bad;

    MPI_Comm_size(comm, &size);
    bad = round_trip(comm, dir, a, rows, cols, o);
    rest.write_rounds = -1;
    bad |= round_trip(comm, dir, a, cols, blocks, &rest);
    bad |= round_trip(comm, dir, a, cols_round_robin, whole_twice_and_inner,
                      &rest);
    tarray c = {.bits = 16, .ndim = 3, .shape = {6, 5, 7}, .header = 7,
                .halo = {1, 0, 3}, .seed = seed};
    bad |= round_trip(comm, dir, &c, mid_blocks, random_boxes, &rest);
    bad |= round_trip(comm, dir, &c, whole_on_rank0, mid_blocks, &rest);
    bad |= round_trip(comm, dir, &c, rows_on_last_rank, blocks, &rest);
    tarray f4 = {.bits = 4, .ndim = 2, .shape = {5, 12 * size},
                 .header = 2, .halo = {0, 2}, .seed = seed + 10};
    bad |= round_trip(comm, dir, &f4, cols_round_robin,
                      whole_twice_and_inner, &rest);
    return bad;
}

/* The rounds of an aggregated transfer of file bytes [lo, hi) on P ranks
 * with windows of w bytes (mpiio_agg.c's domains: one per rank, aligned to
 * min(w, 1 MiB)). */
static int agg_rounds(uint64_t lo, uint64_t hi, uint64_t w, uint64_t P)
{
    uint64_t align = w < 1048576 ? w : 1048576;
    uint64_t base = lo - lo % align;
    uint64_t dom = ((hi - base + P - 1) / P + align - 1) / align * align;
    return (int)((dom + w - 1) / w);
}

/* Aggregated transfers, bytes checked, with windows of a few bytes to
 * 32 MiB, exchanged through node-shared windows (every rank of the tests
 * is on one node; each window a P-th of the buffer) and with
 * MPI_Alltoallw. */
static int mpiio_should_aggregate_runs_itself(MPI_Comm comm, const char *dir)
{
    static const char *buffers[] = {"5", "64", "33554432"};
    static const char *exchanges[] = {"auto", "alltoallw"};
    int size, bad = 0;
    MPI_Info info;

    MPI_Comm_size(comm, &size);
    MPI_Info_create(&info);
    MPI_Info_set(info, "hfdcp_aggregate", "enable");
    MPI_Info_set(info, "hfdcp_sieve_reads", "disable"); /* below */
    size_t nb = sizeof buffers / sizeof buffers[0];
    for (size_t j = 0; j < 2 * nb && !bad; j++) {
        size_t k = j / nb, i = j % nb; /* exchange, buffer */
        uint64_t b = strtoull(buffers[i], NULL, 10), P = (uint64_t)size;
        if (k == 0)
            b = (b + P - 1) / P; /* a rank's share of the buffer */
        MPI_Info_set(info, "hfdcp_exchange", exchanges[k]);
        MPI_Info_set(info, "hfdcp_aggregate_buffer_size", buffers[i]);
        tarray a = {.bits = 32, .ndim = 2, .shape = {12, 10}, .header = 13,
                    .halo = {1, 2}, .seed = 200 + i + 20 * k};
        /* Every rank writes whole rows: the whole array moves; the
         * rounds are those of one domain. */
        topts o = {info, agg_rounds(a.header, a.header + 12 * 10 * 4, b, P),
                   -1, 0, 0, k == 0 ? EXCH_SHARED : EXCH_ALLTOALLW};
        bad |= short_run_round_trips(comm, dir, &a, &o, 210 + i + 20 * k);
        if (bad)
            hfdcp_test_fail(__FILE__, __LINE__, "with a buffer of %s bytes, "
                            "hfdcp_exchange=%s", buffers[i], exchanges[k]);
    }
    MPI_Info_free(&info);
    T_CHECK(bad == 0);
    return T_OK;
}

/* Opening a file with hint `key` = `bad` on rank 0 (`good` on the others)
 * must fail with HFDCP_ERR_ARG on every rank, naming "key=bad". */
static int refuses_bad_hint(MPI_Comm comm, const char *path, bool write,
                            MPI_Info info, const char *key, const char *bad,
                            const char *good)
{
    char want[128];
    int rank;
    hfdcp__mfile *f = NULL;

    MPI_Comm_rank(comm, &rank);
    snprintf(want, sizeof want, "%s=%s", key, bad);
    MPI_Info_set(info, key, rank == 0 ? bad : good);
    T_STATUS(hfdcp__mfile_open(comm, path, write, info, &f), HFDCP_ERR_ARG,
             want);
    return T_OK;
}

/* Reads of short runs by sieving: every rank reads the spans of its runs
 * and copies them out, whatever the layouts, buffer sizes and overlaps;
 * "auto" sieves where each rank's spans are at most twice its bytes and
 * aggregates elsewhere; "disable" never sieves; a bad value is refused on
 * every rank. */
static int mpiio_should_sieve_reads_as_the_hint_says(MPI_Comm comm,
                                                    const char *dir)
{
    static const char *buffers[] = {"5", "64", "33554432"};
    char *path = array_path(dir);
    int size, rank, bad = 0;
    MPI_Info info;

    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(comm, &rank);
    MPI_Info_create(&info);
    /* "enable" (with aggregation forced, so that one rank sieves too):
     * every read is sieved, whatever its density. */
    MPI_Info_set(info, "hfdcp_aggregate", "enable");
    MPI_Info_set(info, "hfdcp_sieve_reads", "enable");
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0] && !bad; i++) {
        MPI_Info_set(info, "hfdcp_aggregate_buffer_size", buffers[i]);
        topts o = {info, -1, 0, 0, READ_SIEVED, 0};
        tarray a = {.bits = 32, .ndim = 2, .shape = {12, 10}, .header = 13,
                    .halo = {1, 2}, .seed = 250 + i};
        bad |= short_run_round_trips(comm, dir, &a, &o, 260 + i);
        if (bad)
            hfdcp_test_fail(__FILE__, __LINE__, "with a buffer of %s bytes",
                            buffers[i]);
    }
    T_CHECK(bad == 0);

    /* "auto" (this test runs on a local file system, CMake's build tree),
     * with the windows not shared (hfdcp_exchange=alltoallw: as for ranks
     * on several nodes): columns of 2 bytes read by columns are sieved on
     * two ranks (spans twice the bytes), aggregated from three; blocks
     * are sieved (a 2 x 2 grid on four ranks, row blocks on two and
     * three); one rank never aggregates, so never sieves. */
    MPI_Info_set(info, "hfdcp_aggregate", "auto");
    MPI_Info_set(info, "hfdcp_sieve_reads", "auto");
    MPI_Info_set(info, "hfdcp_aggregate_buffer_size", "4096");
    MPI_Info_set(info, "hfdcp_exchange", "alltoallw");
    tarray d = {.bits = 16, .ndim = 2, .shape = {64, 2 * size}, .header = 3,
                .halo = {1, 1}, .seed = 280};
    topts oa = {info, -1, -1, 0, size == 2 ? READ_SIEVED : READ_NOT_SIEVED,
                0};
    T_CHECK(round_trip(comm, dir, &d, rows, cols, &oa) == 0);
    tarray e = {.bits = 16, .ndim = 2, .shape = {64, 4}, .header = 3,
                .halo = {0, 1}, .seed = 281};
    oa.read_sieved = size > 1 ? READ_SIEVED : READ_NOT_SIEVED;
    T_CHECK(round_trip(comm, dir, &e, rows, blocks, &oa) == 0);
    /* With the windows shared (every rank here is on one node), "auto"
     * aggregates the same reads through them instead. */
    MPI_Info_set(info, "hfdcp_exchange", "auto");
    oa.read_sieved = READ_NOT_SIEVED;
    T_CHECK(round_trip(comm, dir, &d, rows, cols, &oa) == 0);
    T_CHECK(round_trip(comm, dir, &e, rows, blocks, &oa) == 0);
    /* "disable": aggregated (one round: 260 bytes in 4 KiB windows). */
    MPI_Info_set(info, "hfdcp_sieve_reads", "disable");
    topts od = {info, -1, size > 1 ? 1 : -1, 0, READ_NOT_SIEVED, 0};
    T_CHECK(round_trip(comm, dir, &d, rows, cols, &od) == 0);
    /* a disagreement: "disable" wins */
    MPI_Info_set(info, "hfdcp_sieve_reads", rank == 0 ? "disable" : "enable");
    T_CHECK(round_trip(comm, dir, &d, rows, cols, &od) == 0);

    T_CHECK(refuses_bad_hint(comm, path, false, info, "hfdcp_sieve_reads",
                             "maybe", "auto") == 0);
    MPI_Info_free(&info);
    free(path);
    return T_OK;
}

/* The kept buffer and its figures on this rank, checked against what is
 * expected. */
static int check_kept(uint64_t want_bytes, uint64_t want_taken, int line)
{
    uint64_t taken = 0, bytes = hfdcp__mpiio_kept_bytes(&taken);
    if (bytes != want_bytes || taken != want_taken)
        return hfdcp_test_fail(__FILE__, line,
                               "kept %llu bytes, taken %llu times; expected "
                               "%llu bytes, %llu times",
                               (unsigned long long)bytes,
                               (unsigned long long)taken,
                               (unsigned long long)want_bytes,
                               (unsigned long long)want_taken);
    return 0;
}

/* The window of an aggregated or sieved transfer is kept for the next one
 * (one per process, the largest), unless hfdcp_keep_buffer=disable;
 * hfdcp_release_buffers() frees it.  (MPI_Finalize freeing it is checked
 * by the harness after every test program.) */
static int mpiio_should_keep_the_window_between_transfers(MPI_Comm comm,
                                                          const char *dir)
{
    char *path = array_path(dir);
    uint64_t t0 = 0;
    MPI_Info info;

    hfdcp_release_buffers();
    (void)hfdcp__mpiio_kept_bytes(&t0);
    T_CHECK(check_kept(0, t0, __LINE__) == 0);
    /* Aggregated on one rank too; one column of 2 bytes or more per rank,
     * so that every rank has runs to read. */
    MPI_Info_create(&info);
    MPI_Info_set(info, "hfdcp_aggregate", "enable");
    MPI_Info_set(info, "hfdcp_aggregate_buffer_size", "4096");
    /* the windows of MPI_Alltoallw (shared windows: the test below) */
    MPI_Info_set(info, "hfdcp_exchange", "alltoallw");
    tarray a = {.bits = 16, .ndim = 2, .shape = {64, 4}, .header = 3,
                .halo = {1, 1}, .seed = 300};
    topts o = {info, -1, -1, 0, 0, 0};
    /* the write allocates its window and keeps it; the read takes it */
    T_CHECK(round_trip(comm, dir, &a, cols, cols, &o) == 0);
    T_CHECK(check_kept(4096, t0 + 1, __LINE__) == 0);
    /* "disable": neither taken nor replaced */
    MPI_Info_set(info, "hfdcp_keep_buffer", "disable");
    T_CHECK(round_trip(comm, dir, &a, cols, cols, &o) == 0);
    T_CHECK(check_kept(4096, t0 + 1, __LINE__) == 0);
    /* a larger window: the write's new one replaces the kept one */
    MPI_Info_set(info, "hfdcp_keep_buffer", "enable");
    MPI_Info_set(info, "hfdcp_aggregate_buffer_size", "8192");
    a.seed = 301;
    T_CHECK(round_trip(comm, dir, &a, cols, rows, &o) == 0);
    T_CHECK(check_kept(8192, t0 + 2, __LINE__) == 0);
    /* a smaller one takes the larger kept window, which stays whole */
    MPI_Info_set(info, "hfdcp_aggregate_buffer_size", "1024");
    a.seed = 302;
    T_CHECK(round_trip(comm, dir, &a, cols, cols, &o) == 0);
    T_CHECK(check_kept(8192, t0 + 4, __LINE__) == 0);
    hfdcp_release_buffers();
    T_CHECK(check_kept(0, t0 + 4, __LINE__) == 0);

    T_CHECK(refuses_bad_hint(comm, path, false, info, "hfdcp_keep_buffer",
                             "maybe", "enable") == 0);
    MPI_Info_free(&info);
    free(path);
    return T_OK;
}

/* Node-shared windows (hint hfdcp_exchange): "auto" shares them (every
 * rank of the tests is on one node), on one rank too; the segment is kept
 * for the next transfer (unless hfdcp_keep_buffer=disable), replaced by a
 * larger one, reused by a smaller one, freed by hfdcp_release_buffers();
 * "alltoallw", ranks that disagree and a rank that cannot map the segment
 * exchange with MPI_Alltoallw; bytes checked each time; a bad value is
 * refused on every rank. */
static int mpiio_should_share_windows_on_one_node(MPI_Comm comm,
                                                   const char *dir)
{
    char *path = array_path(dir);
    int size, rank;
    MPI_Info info;

    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(comm, &rank);
    uint64_t P = (uint64_t)size;
    hfdcp_release_buffers();
    T_CHECK(hfdcp__mpiio_kept_shared_bytes(NULL) == 0);
    MPI_Info_create(&info);
    MPI_Info_set(info, "hfdcp_aggregate", "enable");
    MPI_Info_set(info, "hfdcp_sieve_reads", "disable");
    MPI_Info_set(info, "hfdcp_aggregate_buffer_size", "4096");
    tarray a = {.bits = 16, .ndim = 2, .shape = {64, 4 * size}, .header = 3,
                .halo = {1, 1}, .seed = 420};
    topts o = {info, -1, -1, 0, 0, EXCH_SHARED};
    /* kept: P windows of a P-th of 4096 bytes each */
    T_CHECK(round_trip(comm, dir, &a, cols_round_robin, rows, &o) == 0);
    T_CHECK(hfdcp__mpiio_kept_shared_bytes(NULL) == P * ((4096 + P - 1) / P));
    /* a larger buffer: a new segment replaces the kept one */
    MPI_Info_set(info, "hfdcp_aggregate_buffer_size", "65536");
    a.seed = 421;
    T_CHECK(round_trip(comm, dir, &a, cols, blocks, &o) == 0);
    T_CHECK(hfdcp__mpiio_kept_shared_bytes(NULL) == P * ((65536 + P - 1) / P));
    /* a smaller one reuses it, whole (the write and the read) */
    uint64_t t0 = 0, t1 = 0;
    (void)hfdcp__mpiio_kept_shared_bytes(&t0);
    MPI_Info_set(info, "hfdcp_aggregate_buffer_size", "1000");
    a.seed = 422;
    T_CHECK(round_trip(comm, dir, &a, cols_round_robin, cols, &o) == 0);
    T_CHECK(hfdcp__mpiio_kept_shared_bytes(&t1) == P * ((65536 + P - 1) / P));
    T_CHECKF(t1 == t0 + 2, "taken %llu times, expected %llu",
             (unsigned long long)t1, (unsigned long long)t0 + 2);
    /* keep disabled: shared, nothing kept */
    hfdcp_release_buffers();
    MPI_Info_set(info, "hfdcp_keep_buffer", "disable");
    a.seed = 423;
    T_CHECK(round_trip(comm, dir, &a, cols, rows, &o) == 0);
    T_CHECK(hfdcp__mpiio_kept_shared_bytes(NULL) == 0);
    MPI_Info_set(info, "hfdcp_keep_buffer", "enable");

    /* alltoallw, ranks that disagree, a rank that cannot map */
    MPI_Info_set(info, "hfdcp_exchange", "alltoallw");
    o.exchange = EXCH_ALLTOALLW;
    a.seed = 424;
    T_CHECK(round_trip(comm, dir, &a, cols_round_robin, rows, &o) == 0);
    if (size > 1) {
        MPI_Info_set(info, "hfdcp_exchange", rank == 1 ? "alltoallw" : "auto");
        a.seed = 425;
        T_CHECK(round_trip(comm, dir, &a, cols_round_robin, rows, &o) == 0);
    }
    /* the fallback's windows are the whole buffer (64 bytes), shared
     * ones a P-th of it: the rounds tell */
    uint64_t end = a.header + 64 * 4 * P * 2;
    MPI_Info_set(info, "hfdcp_exchange", "auto");
    MPI_Info_set(info, "hfdcp_aggregate_buffer_size", "64");
    hfdcp__mpiio_shared_fault = size - 1;
    a.seed = 426;
    o.write_rounds = o.read_rounds = agg_rounds(a.header, end, 64, P);
    int bad = round_trip(comm, dir, &a, cols_round_robin, cols, &o);
    hfdcp__mpiio_shared_fault = -1;
    T_CHECK(bad == 0);
    /* and the next transfer shares again */
    o.exchange = EXCH_SHARED;
    o.write_rounds = o.read_rounds =
        agg_rounds(a.header, end, (64 + P - 1) / P, P);
    a.seed = 427;
    T_CHECK(round_trip(comm, dir, &a, cols_round_robin, cols, &o) == 0);

    T_CHECK(refuses_bad_hint(comm, path, true, info, "hfdcp_exchange", "shm",
                             "auto") == 0);
    MPI_Info_free(&info);
    hfdcp_release_buffers();
    T_CHECK(hfdcp__mpiio_kept_shared_bytes(NULL) == 0);
    free(path);
    return T_OK;
}

/* The default ("auto") aggregates short runs on two ranks or more and
 * leaves long runs to the MPI-IO component; "disable" never aggregates;
 * a bad value is refused on every rank. */
static int mpiio_should_choose_aggregation_by_run_length(MPI_Comm comm,
                                                         const char *dir)
{
    int size;
    char *path = array_path(dir);
    MPI_Info info;

    MPI_Comm_size(comm, &size);
    /* Three interleaving column blocks of 2 bytes per rank: three rounds
     * through the component, one when aggregated (a 32 MiB window). */
    tarray a = {.bits = 8, .ndim = 2, .shape = {64, 6 * size}, .header = 3,
                .seed = 230};
    topts o = {MPI_INFO_NULL, size > 1 ? 1 : 3, -1, 0, 0, 0};
    T_CHECK(round_trip(comm, dir, &a, cols_round_robin, rows, &o) == 0);
    MPI_Info_create(&info);
    MPI_Info_set(info, "hfdcp_aggregate", "disable");
    o.info = info;
    o.write_rounds = 3;
    T_CHECK(round_trip(comm, dir, &a, cols_round_robin, rows, &o) == 0);
    /* Long runs (rows of 256 KiB) are left to the component even with
     * 4 KiB windows, which would take 128 rounds or more. */
    MPI_Info_set(info, "hfdcp_aggregate", "auto");
    MPI_Info_set(info, "hfdcp_aggregate_buffer_size", "4096");
    tarray big = {.bits = 8, .ndim = 2, .shape = {2 * size, 262144},
                  .header = 3, .seed = 231};
    topts ob = {info, 1, 1, 0, 0, 0};
    T_CHECK(round_trip(comm, dir, &big, rows, rows, &ob) == 0);

    T_CHECK(refuses_bad_hint(comm, path, false, info, "hfdcp_aggregate",
                             "sometimes", "auto") == 0);
    MPI_Info_set(info, "hfdcp_aggregate", "auto");
    T_CHECK(refuses_bad_hint(comm, path, false, info,
                             "hfdcp_aggregate_buffer_size", "0", "0") == 0);
    MPI_Info_free(&info);
    free(path);
    return T_OK;
}

static int mpiio_should_move_a_scalar(MPI_Comm comm, const char *dir)
{
    int rank;
    char *path = array_path(dir);
    uint64_t out = 0x1122334455667788ull, in = 0;
    hfdcp__piece p = {.file_offset = 3, .mem = &out, .ndim = 0, .bits = 64};
    hfdcp__mfile *f = NULL;
    size_t len = 0;

    MPI_Comm_rank(comm, &rank);
    if (write_header(comm, path, 3))
        return 1;
    T_OKCALL(hfdcp__mfile_open(comm, path, true, MPI_INFO_NULL, &f));
    T_OKCALL(hfdcp__mfile_transfer(f, true, &p, rank == 0 ? 1 : 0));
    T_OKCALL(hfdcp__mfile_close(f));
    unsigned char *got = NULL;
    if (rank == 0) {
        got = hfdcp_test_read_file(path, &len);
        T_CHECK(got != NULL && len == 11);
        T_CHECK(memcmp(got, "HHH", 3) == 0 && memcmp(got + 3, &out, 8) == 0);
        free(got);
    }
    MPI_Barrier(comm);
    p.mem = &in;
    T_OKCALL(hfdcp__mfile_open(comm, path, false, MPI_INFO_NULL, &f));
    T_OKCALL(hfdcp__mfile_transfer(f, false, &p, 1));
    T_OKCALL(hfdcp__mfile_close(f));
    T_CHECK(in == out);
    free(path);
    return T_OK;
}

static int mpiio_should_report_a_missing_file_on_every_rank(MPI_Comm comm,
                                                            const char *dir)
{
    char *path = hfdcp__path_join(dir, "no-such-file.bin");
    hfdcp__mfile *f = NULL;
    T_STATUS(hfdcp__mfile_open(comm, path, false, MPI_INFO_NULL, &f),
             HFDCP_ERR_IO, "no-such-file.bin");
    T_CHECK(f == NULL);
    T_CHECK(strstr(hfdcp_last_error(), "MPI_File_open") != NULL);
    free(path);
    return T_OK;
}

static int mpiio_should_report_a_short_read_on_every_rank(MPI_Comm comm,
                                                          const char *dir)
{
    int rank, size;
    char *path = array_path(dir);
    unsigned char mem[32];
    int64_t shape[1] = {32}, start[1] = {0}, count[1] = {32};
    hfdcp__piece p = {.file_offset = 0, .mem = mem, .ndim = 1, .bits = 8,
                      .fshape = shape, .fstart = start, .mshape = count,
                      .mstart = start, .count = count};
    hfdcp__mfile *f = NULL;

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (write_header(comm, path, 20)) /* a 20-byte file */
        return 1;
    /* Only the last rank reads past the end. */
    T_OKCALL(hfdcp__mfile_open(comm, path, false, MPI_INFO_NULL, &f));
    if (rank != size - 1)
        count[0] = 16;
    T_STATUS(hfdcp__mfile_transfer(f, false, &p, 1), HFDCP_ERR_IO,
             "short read");
    T_CHECK(strstr(hfdcp_last_error(), "array.bin") != NULL);
    T_OKCALL(hfdcp__mfile_close(f));
    free(path);
    return T_OK;
}

static int mpiio_should_refuse_a_bad_piece_on_one_rank(MPI_Comm comm,
                                                       const char *dir)
{
    int rank, size;
    char *path = array_path(dir);
    unsigned char mem[64] = {0};
    int64_t shape[2] = {4, 8}, start[2] = {0, 0}, count[2] = {4, 8};
    int64_t bad_start[2] = {1, 0};
    hfdcp__piece p = {.file_offset = 0, .mem = mem, .ndim = 2, .bits = 8,
                      .fshape = shape, .fstart = start, .mshape = count,
                      .mstart = start, .count = count};
    hfdcp__mfile *f = NULL;

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (write_header(comm, path, 32))
        return 1;
    if (rank == size - 1)
        p.fstart = bad_start; /* rows 1..4 of a 4-row array */
    T_OKCALL(hfdcp__mfile_open(comm, path, false, MPI_INFO_NULL, &f));
    T_STATUS(hfdcp__mfile_transfer(f, false, &p, 1), HFDCP_ERR_ARG,
             "outside its array");
    /* The file is still usable: a correct transfer follows. */
    p.fstart = start;
    T_OKCALL(hfdcp__mfile_transfer(f, false, &p, 1));
    T_CHECK(mem[31] == 'H');
    /* Writing on a file opened for reading is refused. */
    T_STATUS(hfdcp__mfile_transfer(f, true, &p, 1), HFDCP_ERR_ARG,
             "opened for reading");
    T_OKCALL(hfdcp__mfile_close(f));
    free(path);
    return T_OK;
}

static int mpiio_should_set_size_and_sync(MPI_Comm comm, const char *dir)
{
    int rank;
    char *path = hfdcp__path_join(dir, "sized.bin");
    hfdcp__mfile *f = NULL;
    struct stat st;

    MPI_Comm_rank(comm, &rank);
    T_OKCALL(hfdcp__mfile_open(comm, path, true, MPI_INFO_NULL, &f));
    T_OKCALL(hfdcp__mfile_set_size(f, 12345));
    T_OKCALL(hfdcp__mfile_sync(f));
    MPI_Barrier(comm);
    T_CHECK(stat(path, &st) == 0 && st.st_size == 12345);
    MPI_Barrier(comm);
    T_OKCALL(hfdcp__mfile_set_size(f, 100));
    T_OKCALL(hfdcp__mfile_sync(f));
    MPI_Barrier(comm);
    T_CHECK(stat(path, &st) == 0 && st.st_size == 100);
    MPI_Barrier(comm);
    T_STATUS(hfdcp__mfile_set_size(f, UINT64_MAX), HFDCP_ERR_RANGE,
             "too large");
    T_OKCALL(hfdcp__mfile_close(f));
    free(path);
    return T_OK;
}

/* Writes of long runs: independent or collective as the hint
 * hfdcp_long_runs says, bytes checked each way; "auto" is independent
 * only on OMPIO from three ranks on a local file system; short runs are
 * aggregated whatever the hint; a bad value is refused on every rank. */
static int mpiio_should_write_long_runs_as_the_hint_says(MPI_Comm comm,
                                                        const char *dir)
{
    const char *io = getenv("OMPI_MCA_io");
    char version[MPI_MAX_LIBRARY_VERSION_STRING + 1] = "";
    char *path = array_path(dir);
    int size, len;
    MPI_Info info;

    MPI_Comm_size(comm, &size);
    MPI_Get_library_version(version, &len);
    /* Rows of 64 KiB (long runs), the ranks' rows interleaved. */
    tarray a = {.bits = 8, .ndim = 2, .shape = {4 * size, 65536},
                .header = 5, .halo = {1, 3}, .seed = 240};
    MPI_Info_create(&info);
    MPI_Info_set(info, "hfdcp_long_runs", "independent");
    topts o = {info, -1, -1, WRITE_INDEPENDENT, 0, 0};
    T_CHECK(round_trip(comm, dir, &a, rows_round_robin, cols, &o) == 0);
    T_CHECK(round_trip(comm, dir, &a, whole_on_rank0, blocks, &o) == 0);
    MPI_Info_set(info, "hfdcp_long_runs", "collective");
    o.write_calls = WRITE_COLLECTIVE;
    T_CHECK(round_trip(comm, dir, &a, rows_round_robin, cols, &o) == 0);

    /* auto: this test runs on a local file system (CMake's build tree). */
    MPI_Info_set(info, "hfdcp_long_runs", "auto");
    bool ompio = strncmp(version, "Open MPI", 8) == 0 &&
                 (io == NULL || strstr(io, "ompio") != NULL);
    o.write_calls = ompio && size >= 3 ? WRITE_INDEPENDENT : WRITE_COLLECTIVE;
    T_CHECK(round_trip(comm, dir, &a, rows_round_robin, cols, &o) == 0);
    /* Short runs (columns of 2 bytes) are aggregated, not independent. */
    MPI_Info_set(info, "hfdcp_long_runs", "independent");
    tarray c = {.bits = 8, .ndim = 2, .shape = {64, 6 * size}, .header = 3,
                .seed = 241};
    topts oc = {info, size > 1 ? 1 : 3, -1, WRITE_COLLECTIVE, 0, 0};
    T_CHECK(round_trip(comm, dir, &c, cols_round_robin, rows, &oc) == 0);

    T_CHECK(refuses_bad_hint(comm, path, true, info, "hfdcp_long_runs",
                             "both", "auto") == 0);
    MPI_Info_free(&info);
    free(path);
    return T_OK;
}

/* Under OMPI_MCA_io=romio321 (the ROMIO run of this test), reads must be
 * collective: the OMPIO bug workaround must not kick in. */
static int mpiio_should_read_collectively_unless_ompio_is_buggy(
    MPI_Comm comm, const char *dir)
{
    const char *io = getenv("OMPI_MCA_io");
    char *path = hfdcp__path_join(dir, "c.bin");
    char version[MPI_MAX_LIBRARY_VERSION_STRING + 1] = "";
    hfdcp__mfile *f = NULL;
    int rank, len;

    MPI_Comm_rank(comm, &rank);
    MPI_Get_library_version(version, &len);
    T_OKCALL(hfdcp__mfile_open(comm, path, true, MPI_INFO_NULL, &f));
    T_OKCALL(hfdcp__mfile_close(f));
    T_OKCALL(hfdcp__mfile_open(comm, path, false, MPI_INFO_NULL, &f));
    bool collective = hfdcp__mfile_collective_reads(f);
    T_OKCALL(hfdcp__mfile_close(f));
    if (rank == 0)
        printf("  OMPI_MCA_io=%s; reads: %s; %.*s\n", io ? io : "(unset)",
               collective ? "collective"
                          : "independent (OMPIO read bug workaround)",
               (int)strcspn(version, ",\n"), version);
    if (io != NULL && strstr(io, "romio") != NULL)
        T_CHECKF(collective, "OMPI_MCA_io=%s but reads are independent", io);
    if (strncmp(version, "Open MPI", 8) != 0)
        T_CHECK(collective);
    /* The nosieve variant (see CMakeLists.txt): OMPIO without read data
     * sieving is safe, so its reads must be collective. */
    const char *sieve = getenv("OMPI_MCA_fbtl_posix_read_datasieving");
    if (sieve != NULL && strcmp(sieve, "0") == 0)
        T_CHECKF(collective, "read data sieving is off but reads are independent");
    free(path);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"mpiio_should_read_collectively_unless_ompio_is_buggy", mpiio_should_read_collectively_unless_ompio_is_buggy, 1},
    {"mpiio_should_write_rows_and_read_columns", mpiio_should_write_rows_and_read_columns, 1},
    {"mpiio_should_write_columns_and_read_blocks", mpiio_should_write_columns_and_read_blocks, 1},
    {"mpiio_should_move_3d_boxes_with_halos", mpiio_should_move_3d_boxes_with_halos, 1},
    {"mpiio_should_move_sub_byte_boxes_on_whole_bytes", mpiio_should_move_sub_byte_boxes_on_whole_bytes, 1},
    {"mpiio_should_refuse_sub_byte_boxes_off_byte", mpiio_should_refuse_sub_byte_boxes_off_byte, 1},
    {"mpiio_should_split_interleaving_pieces_into_rounds", mpiio_should_split_interleaving_pieces_into_rounds, 1},
    {"mpiio_should_let_ranks_with_nothing_join", mpiio_should_let_ranks_with_nothing_join, 1},
    {"mpiio_should_take_many_rounds_with_tiny_cb_buffer", mpiio_should_take_many_rounds_with_tiny_cb_buffer, 1},
    {"mpiio_should_read_random_overlapping_boxes", mpiio_should_read_random_overlapping_boxes, 1},
    {"mpiio_should_split_large_counts_into_blocks", mpiio_should_split_large_counts_into_blocks, 1},
    {"mpiio_should_cap_the_bytes_a_rank_moves_in_one_round", mpiio_should_cap_the_bytes_a_rank_moves_in_one_round, 1},
    {"mpiio_should_aggregate_runs_itself", mpiio_should_aggregate_runs_itself, 1},
    {"mpiio_should_sieve_reads_as_the_hint_says", mpiio_should_sieve_reads_as_the_hint_says, 1},
    {"mpiio_should_keep_the_window_between_transfers", mpiio_should_keep_the_window_between_transfers, 1},
    {"mpiio_should_share_windows_on_one_node", mpiio_should_share_windows_on_one_node, 1},
    {"mpiio_should_choose_aggregation_by_run_length", mpiio_should_choose_aggregation_by_run_length, 1},
    {"mpiio_should_write_long_runs_as_the_hint_says", mpiio_should_write_long_runs_as_the_hint_says, 1},
    {"mpiio_should_move_a_scalar", mpiio_should_move_a_scalar, 1},
    {"mpiio_should_report_a_missing_file_on_every_rank", mpiio_should_report_a_missing_file_on_every_rank, 1},
    {"mpiio_should_report_a_short_read_on_every_rank", mpiio_should_report_a_short_read_on_every_rank, 1},
    {"mpiio_should_refuse_a_bad_piece_on_one_rank", mpiio_should_refuse_a_bad_piece_on_one_rank, 1},
    {"mpiio_should_set_size_and_sync", mpiio_should_set_size_and_sync, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
