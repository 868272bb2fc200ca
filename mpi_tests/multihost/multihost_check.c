/*
 * multihost_check.c - the MPI program of the multi-host test (run by
 * multihost.sh across two network namespaces; see there).
 *
 *   multihost_check save DIR   every rank saves its share of three tensors
 *                              (rows, 2-D blocks, replicated) into DIR,
 *                              split over several files
 *   multihost_check shard DIR OUT REF
 *                              the same tensors as per-rank shard files in
 *                              DIR, then consolidated into OUT with the file
 *                              layout of the checkpoint REF (so OUT's files
 *                              must equal REF's byte for byte)
 *   multihost_check load DIR   every rank loads another decomposition
 *                              (columns, whole tensors, single
 *                              elements) and checks every byte
 *
 * Either way rank 0 prints, for every rank, the network namespace it ran
 * in ("rank R netns net:[INODE]"), so that the script can check that the
 * ranks really ran on both simulated hosts, then "save ok ...", "shard ok
 * ..." or "load ok ...".  Exit status: 0 success, 1 a byte differed, 2 bad
 * command line, 3 an hfdcp call failed (message on stderr).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hfdcp.h"
#include "hfdcp_testing.h"

/* Tensor shapes: odd sizes, so that no split is even. */
#define ROWS_A 301 /* "layers.0.weight": I32 [ROWS_A, COLS_A] */
#define COLS_A 67
#define ROWS_B 96 /* "layers.1.weight": U16 [ROWS_B, COLS_B] */
#define COLS_B 50
#define LEN_N 33 /* "norm.weight": F32 [LEN_N], replicated */

/* The value of every element, from its tensor and position. */
static uint32_t value_of(uint32_t tensor, int64_t i, int64_t j)
{
    uint64_t x = (uint64_t)tensor * 0x9E3779B97F4A7C15ull ^
                 (uint64_t)i * 0xBF58476D1CE4E5B9ull ^ (uint64_t)j * 0x94D049BB133111EBull;
    x ^= x >> 31;
    x *= 0xD6E9F8CDA0C1D1E5ull;
    x ^= x >> 29;
    return (uint32_t)x;
}

static float norm_value(int64_t i)
{
    return 0.25f * (float)i - 3.0f;
}

/* [lo, hi) of `n` items split over `parts` as evenly as possible. */
static void split(int64_t n, int parts, int part, int64_t *lo, int64_t *hi)
{
    *lo = n * part / parts;
    *hi = n * (part + 1) / parts;
}

static int report(const char *what, int status, int rank)
{
    if (rank == 0)
        fprintf(stderr, "multihost_check: %s: %s: %s\n", what,
                hfdcp_status_name(status), hfdcp_last_error());
    return 3;
}

/* Rank 0 prints every rank's network namespace. */
static void print_namespaces(int rank, int size)
{
    char ns[64] = "?";
    ssize_t n = readlink("/proc/self/ns/net", ns, sizeof ns - 1);
    if (n > 0)
        ns[n] = '\0';
    char *all = rank == 0 ? calloc((size_t)size, sizeof ns) : NULL;
    MPI_Gather(ns, (int)sizeof ns, MPI_CHAR, all, (int)sizeof ns, MPI_CHAR, 0,
               MPI_COMM_WORLD);
    if (rank == 0 && all) {
        for (int r = 0; r < size; r++)
            printf("rank %d netns %s\n", r, all + (size_t)r * sizeof ns);
        fflush(stdout);
    }
    free(all);
}

/* Direct save into `dir`; or, with `out`, a sharded save into `dir`
 * consolidated into `out` with the file layout of `ref`. */
static int save(const char *dir, const char *out, const char *ref, int rank,
                int size)
{
    int64_t lo, hi, clo, chi;
    int st;

    /* A: rows.  B: a grid of 2 x (size/2) blocks (rows only on 1 rank).
     * N: every rank holds all of it. */
    split(ROWS_A, size, rank, &lo, &hi);
    int64_t na = (hi - lo) * COLS_A;
    int32_t *a = malloc((size_t)(na > 0 ? na : 1) * sizeof *a);
    for (int64_t i = lo; a && i < hi; i++)
        for (int64_t j = 0; j < COLS_A; j++)
            a[(i - lo) * COLS_A + j] = (int32_t)value_of(1, i, j);

    int grid_r = size >= 2 ? 2 : 1, grid_c = size / grid_r;
    int64_t blo = 0, bhi = 0;
    clo = chi = 0;
    if (rank < grid_r * grid_c) {
        split(ROWS_B, grid_r, rank / grid_c, &blo, &bhi);
        split(COLS_B, grid_c, rank % grid_c, &clo, &chi);
    }
    int64_t nb = (bhi - blo) * (chi - clo);
    uint16_t *b = malloc((size_t)(nb > 0 ? nb : 1) * sizeof *b);
    for (int64_t i = blo; b && i < bhi; i++)
        for (int64_t j = clo; j < chi; j++)
            b[(i - blo) * (chi - clo) + (j - clo)] = (uint16_t)value_of(2, i, j);

    float norm[LEN_N];
    for (int64_t i = 0; i < LEN_N; i++)
        norm[i] = norm_value(i);

    if (a == NULL || b == NULL) {
        fprintf(stderr, "multihost_check: out of memory on rank %d\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }

    hfdcp_save_options o;
    hfdcp_save_options_init(&o);
    hfdcp_file_map *map = NULL;
    if (out == NULL) {
        o.max_shard_bytes = 30000; /* several files */
    } else {
        /* Local; every rank reads the same index, so the maps match. */
        st = hfdcp_file_map_from_reference(ref, NULL, &map);
        if (st != HFDCP_OK) {
            fprintf(stderr, "multihost_check: rank %d: hfdcp_file_map_from_reference: %s: %s\n",
                    rank, hfdcp_status_name(st), hfdcp_last_error());
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
        o.file_map = map;
        o.save_sharded = 1;
        o.consolidated_output_path = out;
    }
    hfdcp_writer *w = NULL;
    st = hfdcp_writer_open(MPI_COMM_WORLD, dir, &o, &w);
    if (st != HFDCP_OK) {
        free(a);
        free(b);
        hfdcp_file_map_free(map);
        return report("hfdcp_writer_open", st, rank);
    }
    const int64_t shape_a[2] = {ROWS_A, COLS_A}, off_a[2] = {lo, 0},
                  size_a[2] = {hi - lo, COLS_A};
    const int64_t shape_b[2] = {ROWS_B, COLS_B}, off_b[2] = {blo, clo},
                  size_b[2] = {bhi - blo, chi - clo};
    const int64_t shape_n[1] = {LEN_N}, off_n[1] = {0};
    /* Errors of add are also reported by commit on every rank. */
    if (hi > lo)
        hfdcp_writer_add(w, "layers.0.weight", HFDCP_I32, 2, shape_a, off_a, size_a, a);
    if (nb > 0)
        hfdcp_writer_add(w, "layers.1.weight", HFDCP_U16, 2, shape_b, off_b, size_b, b);
    hfdcp_writer_add(w, "norm.weight", HFDCP_F32, 1, shape_n, off_n, shape_n, norm);
    st = hfdcp_writer_commit(w);
    hfdcp_writer_free(w);
    hfdcp_file_map_free(map);
    free(a);
    free(b);
    if (st != HFDCP_OK)
        return report("hfdcp_writer_commit", st, rank);
    if (rank == 0 && out == NULL)
        printf("save ok: 3 tensors from %d ranks into %s\n", size, dir);
    if (rank == 0 && out != NULL)
        printf("shard ok: 3 tensors from %d ranks into %s, consolidated into %s\n",
               size, dir, out);
    return 0;
}

static int load(const char *dir, int rank, int size)
{
    int64_t lo, hi;
    int st;

    /* A: columns this time.  B: the whole tensor on every rank.  N: one
     * element per rank at most, from the end. */
    split(COLS_A, size, rank, &lo, &hi);
    int64_t na = ROWS_A * (hi - lo);
    int32_t *a = malloc((size_t)(na > 0 ? na : 1) * sizeof *a);
    uint16_t *b = malloc((size_t)ROWS_B * COLS_B * sizeof *b);
    float n1 = 0.0f;
    if (a == NULL || b == NULL) {
        fprintf(stderr, "multihost_check: out of memory on rank %d\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }

    hfdcp_reader *r = NULL;
    st = hfdcp_reader_open(MPI_COMM_WORLD, dir, NULL, &r);
    if (st != HFDCP_OK) {
        free(a);
        free(b);
        return report("hfdcp_reader_open", st, rank);
    }
    const int64_t off_a[2] = {0, lo}, size_a[2] = {ROWS_A, hi - lo};
    const int64_t off_b[2] = {0, 0}, size_b[2] = {ROWS_B, COLS_B};
    const int64_t off_n[1] = {LEN_N - 1 - rank % LEN_N}, size_n[1] = {1};
    if (hi > lo)
        hfdcp_reader_add(r, "layers.0.weight", HFDCP_I32, 2, off_a, size_a, a);
    hfdcp_reader_add(r, "layers.1.weight", HFDCP_U16, 2, off_b, size_b, b);
    hfdcp_reader_add(r, "norm.weight", HFDCP_F32, 1, off_n, size_n, &n1);
    st = hfdcp_reader_load(r);
    hfdcp_reader_free(r);
    if (st != HFDCP_OK) {
        free(a);
        free(b);
        return report("hfdcp_reader_load", st, rank);
    }

    long long bad = 0, checked = 0;
    for (int64_t i = 0; i < ROWS_A; i++)
        for (int64_t j = lo; j < hi; j++, checked++)
            bad += a[i * (hi - lo) + (j - lo)] != (int32_t)value_of(1, i, j);
    for (int64_t i = 0; i < ROWS_B; i++)
        for (int64_t j = 0; j < COLS_B; j++, checked++)
            bad += b[i * COLS_B + j] != (uint16_t)value_of(2, i, j);
    bad += n1 != norm_value(off_n[0]);
    checked++;
    free(a);
    free(b);

    long long mine[3] = {bad, checked, (long long)hfdcp__mpiio_sieved}, all[3];
    MPI_Allreduce(mine, all, 3, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (all[0] != 0) {
        if (rank == 0)
            fprintf(stderr, "multihost_check: %lld of %lld elements differ\n", all[0], all[1]);
        return 1;
    }
    /* The transfers read by sieving, summed over the ranks (the script
     * checks where it expects them: ranks on several nodes). */
    if (rank == 0)
        printf("load ok: %lld elements checked on %d ranks, %lld sieved transfers\n", all[1],
               size, all[2]);
    return 0;
}

int main(int argc, char **argv)
{
    int rank, size, rc;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int is_save = argc == 3 && strcmp(argv[1], "save") == 0;
    int is_shard = argc == 5 && strcmp(argv[1], "shard") == 0;
    int is_load = argc == 3 && strcmp(argv[1], "load") == 0;
    if (!is_save && !is_shard && !is_load) {
        if (rank == 0)
            fprintf(stderr, "usage: multihost_check save DIR | shard DIR OUT REF | load DIR\n");
        MPI_Finalize();
        return 2;
    }
    print_namespaces(rank, size);
    if (is_load)
        rc = load(argv[2], rank, size);
    else
        rc = save(argv[2], is_shard ? argv[3] : NULL, is_shard ? argv[4] : NULL, rank, size);
    MPI_Finalize();
    return rc;
}
