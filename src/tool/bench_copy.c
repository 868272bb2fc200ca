/*
 * bench_copy.c - the plain copy that `hfdcp bench`'s sharded peer measures
 * a consolidation against (issue #22): the same shard bytes read and
 * written into one file, then synced, with nothing of the format done.
 * Every rank copies the shard files of its turn (file i of the sorted
 * listing to rank i mod P) to their offsets in the concatenation with
 * read()/pwrite() through one buffer of 128 KiB, then fsyncs; as
 * `cat shard-* > out; sync` does, spread over the ranks as a
 * consolidation is.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"

/* The copy's buffer per rank: cat's.  Note: on the development VM a
 * 32 MiB buffer made the same copy 3-4 times slower (docs/benchmarks.md,
 * "Consolidation against a plain copy"): the peer is the fast copy. */
#define COPY_BUFFER ((size_t)128 << 10)

/* Copies the file `path` to offset `at` of the open file `out`.  0, or -1
 * on an error. */
static int copy_file(const char *path, int out, off_t at, char *buf)
{
    int fd = open(path, O_RDONLY);
    ssize_t got = 0;

    if (fd < 0)
        return -1;
    while ((got = read(fd, buf, COPY_BUFFER)) > 0) {
        for (ssize_t put = 0, w; put < got; put += w)
            if ((w = pwrite(out, buf + put, (size_t)(got - put), at + put)) <= 0) {
                close(fd);
                return -1;
            }
        at += got;
    }
    close(fd);
    return got == 0 ? 0 : -1;
}

/* This rank's share of the copy of every shard-* file of `dir` into
 * `copy`.  0, or -1 on an error. */
static int copy_share(const bench_ctx *c, const char *dir, const char *copy)
{
    struct dirent **names = NULL;
    char path[8192], *buf = malloc(COPY_BUFFER);
    int n = scandir(dir, &names, NULL, alphasort), out = -1, err = buf == NULL;
    off_t at = 0;

    if (!err && (out = open(copy, O_WRONLY | O_CREAT, 0644)) < 0)
        err = 1;
    for (int i = 0, k = 0; i < n; i++) {
        struct stat st;
        if (!err && strncmp(names[i]->d_name, "shard-", 6) == 0) {
            snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
            if (stat(path, &st) != 0)
                err = 1;
            else if (k++ % c->nranks == c->rank && copy_file(path, out, at, buf) != 0)
                err = 1;
            at += st.st_size;
        }
        free(names[i]);
    }
    if (out >= 0 && (fsync(out) != 0 || close(out) != 0))
        err = 1;
    free(names);
    free(buf);
    return n < 0 || err ? -1 : 0;
}

int bench_shard_copy(const bench_ctx *c, const char *shards, const char *copy,
                     bench_result *r)
{
    bench_timer t;
    uint64_t bad;

    bench_rmtree(c, copy);
    bench_start(c, &t);
    if (c->rank == 0) /* created before any rank writes into it */
        close(open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0644));
    MPI_Barrier(c->comm);
    bad = bench_sum(c, copy_share(c, shards, copy) != 0);
    bench_stop(c, &t, c->m->total, r);
    bench_rmtree(c, copy);
    return bad == 0 ? 0 : -1;
}
