/*
 * consolidate_copy.c - a consolidation against a plain copy of the same
 * shard bytes (issue #22), side by side in one process: docs/benchmarks.md
 * ("Consolidation against a plain copy").
 *
 * Saves a model of BF16 tensors of 2048 x 2048 (8 MiB each), MIB MiB in
 * all, split by rows or by columns over the ranks, as per-rank shard
 * files; then REPS times, alternating which goes first: a consolidation
 * (default options), and a plain copy, rank 0 alone reading every shard
 * file in turn into one output file through a 128 KiB buffer (cat's)
 * and syncing it (what `cat shard-* > out; sync` does).  Cold: before
 * each, every shard file is synced and evicted from the page cache
 * (POSIX_FADV_DONTNEED); warm: not.  The previous outputs are removed
 * before each run, untimed.  Prints each time (slowest rank) and
 * the medians, and their ratio.  Run with HFDCP_CONSOLIDATE_TIMES=1 for
 * the phase timers of every consolidation.
 *
 * Build: mpicc -O2 -Iinclude -o consolidate_copy \
 *            scripts/consolidate_copy.c -Lbuild -lhfdcp
 * Use:   mpirun -np N consolidate_copy DIR MIB REPS rows|cols cold|warm
 * DIR is a scratch directory; DIR/shards, DIR/out, DIR/copy are written.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hfdcp.h"

#define ROWS 2048
#define COLS 2048
#define COPY_BUF ((size_t)128 << 10)

static void fail(int rank, const char *what)
{
    if (rank == 0)
        fprintf(stderr, "consolidate_copy: %s: %s\n", what,
                hfdcp_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
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

static void save_shards(const char *shards, unsigned char **bufs, int n,
                        const int64_t *off, const int64_t *count, int rank)
{
    int64_t shape[2] = {ROWS, COLS};
    hfdcp_save_options so;
    hfdcp_writer *w = NULL;

    hfdcp_save_options_init(&so);
    so.save_sharded = 1;
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

/* Calls fn(path, arg) for every shard-* file of `dir`, in name order. */
static void each_shard(const char *dir, void (*fn)(const char *, void *),
                       void *arg)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    char path[8192];

    for (int i = 0; i < n; i++) {
        if (strncmp(names[i]->d_name, "shard-", 6) == 0) {
            snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
            fn(path, arg);
        }
        free(names[i]);
    }
    free(n >= 0 ? names : NULL);
}

static void evict_one(const char *path, void *arg)
{
    int fd = open(path, O_RDONLY);
    (void)arg;
    if (fd >= 0) {
        (void)fdatasync(fd);
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

static void copy_one(const char *path, void *arg)
{
    int *out = arg, fd = open(path, O_RDONLY);
    static char *buf;
    ssize_t got;

    if (buf == NULL && (buf = malloc(COPY_BUF)) == NULL)
        abort();
    while (fd >= 0 && (got = read(fd, buf, COPY_BUF)) > 0)
        if (write(*out, buf, (size_t)got) != got)
            abort();
    if (fd >= 0)
        close(fd);
}

/* Rank 0: the plain copy of every shard file into `copy`, synced. */
static void plain_copy(const char *shards, const char *copy)
{
    int out = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0)
        abort();
    each_shard(shards, copy_one, &out);
    if (fsync(out) != 0)
        abort();
    close(out);
}

/* Rank 0: the previous run's outputs, removed before the next is timed
 * (freeing their blocks is no part of either). */
static void remove_outputs(const char *out, const char *copy)
{
    struct dirent **names;
    int n = scandir(out, &names, NULL, alphasort);
    char path[8192];

    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", out, names[i]->d_name);
        if (names[i]->d_name[0] != '.')
            (void)unlink(path);
        free(names[i]);
    }
    free(n >= 0 ? names : NULL);
    (void)unlink(copy);
    sync();
}

int main(int argc, char **argv)
{
    int rank, size, n, reps, cols, cold;
    int64_t off[2], count[2];
    char shards[4096], out[4096], copy[4096];
    double *times[2];
    unsigned char **bufs;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 6 || atoi(argv[2]) < 8 || atoi(argv[3]) < 1 ||
        (strcmp(argv[4], "rows") && strcmp(argv[4], "cols"))) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np N consolidate_copy DIR MIB "
                            "REPS rows|cols cold|warm\n");
        MPI_Finalize();
        return 2;
    }
    snprintf(shards, sizeof shards, "%s/shards", argv[1]);
    snprintf(out, sizeof out, "%s/out", argv[1]);
    snprintf(copy, sizeof copy, "%s/copy", argv[1]);
    n = atoi(argv[2]) / 8;
    reps = atoi(argv[3]);
    cols = strcmp(argv[4], "cols") == 0;
    cold = strcmp(argv[5], "cold") == 0;
    for (int k = 0; k < 2; k++)
        times[k] = calloc((size_t)reps, sizeof *times[k]);
    bufs = make_model(n, cols, rank, size, off, count);
    save_shards(shards, bufs, n, off, count, rank);
    for (int t = 0; t < n; t++)
        free(bufs[t]);
    free(bufs);

    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < 2; k++) {
            int is_copy = (r + k) % 2;
            double t, tmax;
            if (rank == 0)
                remove_outputs(out, copy);
            if (rank == 0 && cold)
                each_shard(shards, evict_one, NULL);
            MPI_Barrier(MPI_COMM_WORLD);
            t = MPI_Wtime();
            if (is_copy) {
                if (rank == 0)
                    plain_copy(shards, copy);
            } else if (hfdcp_consolidate(MPI_COMM_WORLD, shards, out, NULL,
                                         NULL) != HFDCP_OK) {
                fail(rank, "consolidating");
            }
            t = MPI_Wtime() - t;
            MPI_Reduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
            times[is_copy][r] = tmax;
            if (rank == 0)
                printf("%s: %.3f s\n", is_copy ? "plain copy   " :
                                                 "consolidation", tmax);
            fflush(stdout);
        }
    }
    if (rank == 0) {
        double c, p;
        for (int k = 0; k < 2; k++)
            qsort(times[k], (size_t)reps, sizeof *times[k], cmp_double);
        c = times[0][reps / 2];
        p = times[1][reps / 2];
        printf("%d MiB by %s at %d ranks, %s, medians of %d: consolidation "
               "%.3f s, plain copy %.3f s: %.2fx the copy's speed\n",
               n * 8, argv[4], size, cold ? "cold" : "warm", reps, c, p,
               p / c);
    }
    for (int k = 0; k < 2; k++)
        free(times[k]);
    MPI_Finalize();
    return 0;
}
