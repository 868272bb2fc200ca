/*
 * consolidate_buffers.c - consolidation time against the staging buffer's
 * size, side by side in one process (why the default buffer_bytes is
 * 32 MiB: docs/design.md, "Consolidation").
 *
 * Saves a model of 100 BF16 tensors of 2048 x 2560 (1.05 GB), split by
 * columns over the ranks, as per-rank shard files once, then consolidates
 * it REPS times with each of two buffer sizes, alternating which goes
 * first, and prints the time of each (slowest rank).
 *
 * Build: mpicc -O2 -Iinclude -o consolidate_buffers \
 *            scripts/consolidate_buffers.c -Lbuild -lhfdcp
 * Use:   mpirun -np 2 consolidate_buffers DIR MIB_A MIB_B REPS
 * DIR is a scratch directory; DIR/shards and DIR/out are written there.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfdcp.h"

#define TENSORS 100
#define ROWS 2048
#define COLS 2560

/* Prints the last error on rank 0 and stops every rank. */
static void fail(int rank, const char *what)
{
    if (rank == 0)
        fprintf(stderr, "consolidate_buffers: %s: %s\n", what,
                hfdcp_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
}

int main(int argc, char **argv)
{
    int rank, size;
    char shards[4096], out[4096];

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 5 || atoi(argv[2]) < 1 || atoi(argv[3]) < 1 ||
        atoi(argv[4]) < 1 || COLS % size != 0) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np N consolidate_buffers DIR "
                            "MIB_A MIB_B REPS (N dividing %d)\n", COLS);
        MPI_Finalize();
        return 2;
    }
    snprintf(shards, sizeof shards, "%s/shards", argv[1]);
    snprintf(out, sizeof out, "%s/out", argv[1]);
    int mib[2] = {atoi(argv[2]), atoi(argv[3])}, reps = atoi(argv[4]);

    /* The shards, saved once. */
    int64_t lc = COLS / size;
    size_t bytes = (size_t)ROWS * (size_t)lc * 2;
    unsigned char **bufs = calloc(TENSORS, sizeof *bufs);
    hfdcp_save_options so;
    hfdcp_writer *w = NULL;
    hfdcp_save_options_init(&so);
    so.save_sharded = 1;
    if (bufs == NULL ||
        hfdcp_writer_open(MPI_COMM_WORLD, shards, &so, &w) != HFDCP_OK)
        fail(rank, "opening the writer");
    for (int t = 0; t < TENSORS; t++) {
        char name[32];
        int64_t shape[2] = {ROWS, COLS}, off[2] = {0, rank * lc},
                count[2] = {ROWS, lc};
        snprintf(name, sizeof name, "t%03d", t);
        if ((bufs[t] = malloc(bytes)) == NULL)
            fail(rank, "allocating the model");
        memset(bufs[t], t + rank, bytes);
        if (hfdcp_writer_add(w, name, HFDCP_BF16, 2, shape, off, count,
                             bufs[t]) != HFDCP_OK)
            fail(rank, "adding a tensor");
    }
    if (hfdcp_writer_commit(w) != HFDCP_OK)
        fail(rank, "the sharded save");
    hfdcp_writer_free(w);

    /* Consolidations, alternating. */
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < 2; k++) {
            int m = mib[(r + k) % 2];
            hfdcp_consolidate_options co;
            double t, tmax;
            hfdcp_consolidate_options_init(&co);
            co.buffer_bytes = (uint64_t)m << 20;
            MPI_Barrier(MPI_COMM_WORLD);
            t = MPI_Wtime();
            if (hfdcp_consolidate(MPI_COMM_WORLD, shards, out, NULL, &co) !=
                HFDCP_OK)
                fail(rank, "consolidating");
            t = MPI_Wtime() - t;
            MPI_Reduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
            if (rank == 0)
                printf("buffer %4d MiB: %.3f s\n", m, tmax);
            fflush(stdout);
        }
    }
    for (int t = 0; t < TENSORS; t++)
        free(bufs[t]);
    free(bufs);
    MPI_Finalize();
    return 0;
}
