/*
 * consolidate_checksums.c - what the CRC-32C cost a consolidation (the
 * shard chunks' checked as they are read, the output tensors' computed as
 * they are written), side by side in one process: docs/benchmarks.md.
 *
 * Saves a model of BF16 tensors of 2048 x 2048 (8 MiB each), MIB MiB in
 * all, split by rows or by columns over the ranks, as per-rank shard files
 * REPS times with checksums and without (no_checksums), alternating which
 * goes first, the last save with them; then consolidates it REPS times
 * with checksums and without, alternating likewise.  Prints the time of
 * each (slowest rank), the CPU time of all ranks (getrusage: user +
 * system; on a shared machine a steadier measure of the work than the
 * time), and the medians.  Columns are the
 * costly case for the check: a run per row and rank.
 *
 * Build: mpicc -O2 -Iinclude -o consolidate_checksums \
 *            scripts/consolidate_checksums.c -Lbuild -lhfdcp
 * Use:   mpirun -np 2 consolidate_checksums DIR MIB REPS rows|cols
 * DIR is a scratch directory; DIR/shards and DIR/out are written there.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "hfdcp.h"

#define ROWS 2048
#define COLS 2048

/* Prints the last error on rank 0 and stops every rank. */
static void fail(int rank, const char *what)
{
    if (rank == 0)
        fprintf(stderr, "consolidate_checksums: %s: %s\n", what,
                hfdcp_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* User + system CPU seconds of this process so far. */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* This rank's rows or columns of `n` tensors (pseudo-random bytes). */
static unsigned char **make_model(int n, int cols, int rank, int size,
                                  int64_t *off, int64_t *count)
{
    unsigned char **bufs = calloc((size_t)n, sizeof *bufs);
    uint64_t s = 0x9E3779B97F4A7C15u * (uint64_t)(rank + 1);
    size_t bytes;

    off[0] = off[1] = 0;
    count[0] = ROWS;
    count[1] = COLS;
    off[cols] = rank * (int64_t)(cols ? COLS : ROWS) / size;
    count[cols] = (rank + 1) * (int64_t)(cols ? COLS : ROWS) / size - off[cols];
    bytes = (size_t)count[0] * (size_t)count[1] * 2;
    for (int t = 0; bufs != NULL && t < n; t++) {
        if ((bufs[t] = malloc(bytes)) == NULL)
            fail(rank, "allocating the model");
        for (size_t b = 0; b < bytes; b++) {
            s = s * 6364136223846793005u + 1442695040888963407u;
            bufs[t][b] = (unsigned char)(s >> 56);
        }
    }
    if (bufs == NULL)
        fail(rank, "allocating the model");
    return bufs;
}

/* The sharded save of the model into `shards`. */
static void save_shards(const char *shards, unsigned char **bufs, int n,
                        const int64_t *off, const int64_t *count,
                        int no_checksums, int rank)
{
    int64_t shape[2] = {ROWS, COLS};
    hfdcp_save_options so;
    hfdcp_writer *w = NULL;

    hfdcp_save_options_init(&so);
    so.save_sharded = 1;
    so.no_checksums = no_checksums;
    if (hfdcp_writer_open(MPI_COMM_WORLD, shards, &so, &w) != HFDCP_OK)
        fail(rank, "opening the writer");
    for (int t = 0; t < n; t++) {
        char name[32];
        snprintf(name, sizeof name, "t%03d", t);
        if (hfdcp_writer_add(w, name, HFDCP_BF16, 2, shape, off, count,
                             bufs[t]) != HFDCP_OK)
            fail(rank, "adding a tensor");
    }
    if (hfdcp_writer_commit(w) != HFDCP_OK)
        fail(rank, "the sharded save");
    hfdcp_writer_free(w);
}

/* Rank 0: the medians of times[2][reps] and cpus[2][reps] (sorted). */
static void medians(const char *what, double **times, double **cpus,
                    int reps)
{
    for (int k = 0; k < 2; k++) {
        qsort(times[k], (size_t)reps, sizeof *times[k], cmp_double);
        qsort(cpus[k], (size_t)reps, sizeof *cpus[k], cmp_double);
    }
    printf("%s, medians of %d: checksums %.3f s, no_checksums %.3f s "
           "(%+.1f%%); CPU %.3f s against %.3f s (%+.1f%%)\n",
           what, reps, times[0][reps / 2], times[1][reps / 2],
           100.0 * (times[0][reps / 2] / times[1][reps / 2] - 1.0),
           cpus[0][reps / 2], cpus[1][reps / 2],
           100.0 * (cpus[0][reps / 2] / cpus[1][reps / 2] - 1.0));
}

int main(int argc, char **argv)
{
    int rank, size, n, reps, cols;
    int64_t off[2], count[2];
    char shards[4096], out[4096], what[128];
    double *times[2], *cpus[2];
    unsigned char **bufs;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 5 || atoi(argv[2]) < 8 || atoi(argv[3]) < 1 ||
        (strcmp(argv[4], "rows") && strcmp(argv[4], "cols"))) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np N consolidate_checksums DIR "
                            "MIB REPS rows|cols\n");
        MPI_Finalize();
        return 2;
    }
    snprintf(shards, sizeof shards, "%s/shards", argv[1]);
    snprintf(out, sizeof out, "%s/out", argv[1]);
    n = atoi(argv[2]) / 8;
    reps = atoi(argv[3]);
    cols = strcmp(argv[4], "cols") == 0;
    for (int k = 0; k < 2; k++) {
        times[k] = calloc((size_t)reps, sizeof *times[k]);
        cpus[k] = calloc((size_t)reps, sizeof *cpus[k]);
    }
    bufs = make_model(n, cols, rank, size, off, count);

    /* Step 0: sharded saves, the last with checksums; step 1:
     * consolidations of it. */
    for (int step = 0; step < 2; step++) {
        for (int r = 0; r < reps; r++) {
            for (int k = 0; k < 2; k++) {
                int nosums = (r + k + (step == 0 ? reps % 2 : 0)) % 2;
                hfdcp_consolidate_options co;
                double t, tmax, c, csum;
                MPI_Barrier(MPI_COMM_WORLD);
                c = cpu_seconds();
                t = MPI_Wtime();
                if (step == 0) {
                    save_shards(shards, bufs, n, off, count, nosums, rank);
                } else {
                    hfdcp_consolidate_options_init(&co);
                    co.no_checksums = nosums;
                    if (hfdcp_consolidate(MPI_COMM_WORLD, shards, out, NULL,
                                          &co) != HFDCP_OK)
                        fail(rank, "consolidating");
                }
                t = MPI_Wtime() - t;
                c = cpu_seconds() - c;
                MPI_Reduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, 0,
                           MPI_COMM_WORLD);
                MPI_Reduce(&c, &csum, 1, MPI_DOUBLE, MPI_SUM, 0,
                           MPI_COMM_WORLD);
                times[nosums][r] = tmax;
                cpus[nosums][r] = csum;
                if (rank == 0)
                    printf("%s %s: %.3f s, CPU %.3f s\n",
                           step ? "consolidation" : "sharded save ",
                           nosums ? "no_checksums" : "checksums   ", tmax,
                           csum);
                fflush(stdout);
            }
        }
        snprintf(what, sizeof what, "%s of %d MiB by %s at %d ranks",
                 step ? "consolidation" : "sharded save", n * 8, argv[4],
                 size);
        if (rank == 0)
            medians(what, times, cpus, reps);
    }
    for (int t = 0; t < n; t++)
        free(bufs[t]);
    free(bufs);
    for (int k = 0; k < 2; k++) {
        free(times[k]);
        free(cpus[k]);
    }
    MPI_Finalize();
    return 0;
}
