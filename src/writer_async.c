/*
 * writer_async.c - the asynchronous commit.
 *
 * hfdcp_writer_commit_async takes the commit's steps (writer_commit.c)
 * up to a snapshot of the chunks this rank writes, then returns:
 *   1. the checks, the plan and the names, as a commit's;
 *   2. the bound: walking this rank's chunks from the last one in file
 *      order, the chunks that fit in snapshot_max_bytes (all of them
 *      when it is 0) are copied; the ones before them are written now,
 *      not synced (direct save: collective MPI-IO, as a commit writes
 *      them; sharded: whole shard files with POSIX writes), so the copy
 *      never exceeds the bound;
 *   3. the copy: one buffer per rank holding the data of the copied
 *      chunks (direct save: with the file runs each one is written to;
 *      rank 0's headers are the plan's, kept with it);
 *   4. one helper thread that writes the copies with POSIX pwrite into
 *      the files created in 2, then fsyncs each file this rank wrote in
 *      (sharded: the shard files, up to thread_count at once, then those
 *      written in 2).  It makes no MPI call, so the
 *      application's thread level does not matter.
 * With checksums (direct save), the CRC parts of the chunks written in 2
 * are computed before commit_async returns, those of the copies by the
 * helper thread after writing them; the headers are written with
 * placeholders, and hfdcp_writer_wait combines the parts and writes the
 * values (hfdcp__commit_put_crcs), as a commit does.
 * hfdcp_writer_wait joins the thread, agrees on its outcome, and
 * publishes as a commit does (renames, index last; after a sharded save
 * the consolidation), or removes every file of this commit.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hfdcp_testing.h"
#include "writer_internal.h"

int hfdcp__async_fault_file = -1;
int hfdcp__async_fault_step = 0;

/* One contiguous run of file bytes and where the copy holds them. */
typedef struct {
    uint64_t off, len;
    const unsigned char *mem;
} run_t;

/* Direct save: the runs this rank writes in one file, and whether it
 * syncs the file (it wrote in it, now or later). */
typedef struct {
    run_t *runs;
    size_t n, cap;
    bool sync;
} file_runs_t;

struct hfdcp__async {
    hfdcp__commit c;
    bool sharded;
    int rank;
    unsigned char *copy;      /* the snapshot */
    uint64_t copy_bytes;
    file_runs_t *files;       /* direct save: per plan file */
    bool *copied;             /* direct save: per chunk, in the snapshot */
    hfdcp__wchunk *snap;      /* direct save with checksums: the chunks,
                                 those copied pointing into the copy */
    uint32_t *parts;          /* direct save with checksums: this rank's
                                 CRC parts (hfdcp__crc_parts), or NULL */
    hfdcp__shards now, later; /* sharded save: the files written before
                                 commit_async returns, and after */
    hfdcp__wjob job;          /* sharded save: the background's job */
    int fault_file, fault_step; /* test hooks, as commit_async found them */
    pthread_t thread;
    bool started;
    atomic_int done;
    hfdcp__outcome out;
};

/* ---- the background ---- */

/* Direct save: the runs of every file, each file then synced.  `j`
 * counts the files this rank writes in (for the test hooks). */
static int write_runs(const struct hfdcp__async *a)
{
    const hfdcp__paths *paths = &a->c.paths;
    int rc = HFDCP_OK, j = -1;

    for (size_t f = 0; rc == HFDCP_OK && f < paths->n; f++) {
        const file_runs_t *fr = &a->files[f];
        int fault, fd;

        if (!fr->sync)
            continue;
        j++;
        fault = j == a->fault_file ? a->fault_step : 0;
        if ((fd = open(paths->tmp[f], O_WRONLY | O_CLOEXEC)) < 0)
            return hfdcp__os_error(HFDCP_ERR_IO, errno,
                                   "opening '%s' on rank %d", paths->tmp[f],
                                   a->rank);
        if (fault == 1)
            rc = hfdcp__os_error(HFDCP_ERR_IO, EIO,
                                 "writing '%s' on rank %d (test fault)",
                                 paths->tmp[f], a->rank);
        for (size_t k = 0; rc == HFDCP_OK && k < fr->n; k++)
            rc = hfdcp__pwrite_all(fd, fr->runs[k].mem, fr->runs[k].len,
                                   fr->runs[k].off, paths->tmp[f], a->rank);
        if (close(fd) != 0 && rc == HFDCP_OK)
            rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                                 "closing '%s' on rank %d", paths->tmp[f],
                                 a->rank);
        if (rc == HFDCP_OK)
            rc = hfdcp__flush_file(paths->tmp[f], a->rank, fault == 2);
    }
    return rc;
}

static void *background(void *arg)
{
    struct hfdcp__async *a = arg;
    int rc = a->sharded ? hfdcp__shards_write(&a->job, &a->later)
                        : write_runs(a);

    if (rc == HFDCP_OK && a->parts != NULL) /* the copied chunks' CRCs */
        hfdcp__crc_parts(&a->c.plan, a->snap, a->copied, true, a->parts);

    if (rc == HFDCP_OK && a->sharded)
        rc = hfdcp__shards_sync(&a->job, &a->now);

    hfdcp__outcome_set(&a->out, rc);
    atomic_store(&a->done, 1);
    return NULL;
}

/* Starts the helper thread; where none can be started, does its work on
 * the calling thread (the same files, no overlap).  Local. */
static void start(struct hfdcp__async *a)
{
    atomic_init(&a->done, 0);
    a->started = pthread_create(&a->thread, NULL, background, a) == 0;
    if (!a->started)
        background(a);
}

/* ---- the snapshot: direct save ---- */

static bool chunk_empty(const hfdcp__wchunk *c)
{
    for (int d = 0; d < c->ndim; d++)
        if (c->sizes[d] == 0)
            return true;
    return false;
}

/* Bytes of chunk i if this rank writes it, else 0. */
static uint64_t written_bytes(const hfdcp__commit *c, size_t i)
{
    const hfdcp__wchunk *ch = &c->job.chunks[i];
    uint64_t n = 0;

    if (!c->plan.assign[i].write || chunk_empty(ch))
        return 0;
    (void)hfdcp__tensor_bytes(ch->dtype, ch->ndim, ch->sizes, ch->name, &n);
    return n;
}

/* Marks in copied[] the chunks that are copied: from the last one in file
 * order back, as long as they fit in `bound` (0: all).  *bytes: theirs. */
static void choose_copies(const hfdcp__commit *c, uint64_t bound,
                          bool *copied, uint64_t *bytes)
{
    const hfdcp__wbuckets *b = &c->job.by_file;
    uint64_t sum = 0;

    for (size_t k = b->first[c->plan.n_files]; k-- > 0;) {
        size_t i = b->by_file[k];
        uint64_t n = written_bytes(c, i);
        if (bound != 0 && sum + n > bound)
            break;
        sum += n;
        copied[i] = true;
    }
    *bytes = sum;
}

static int push_run(file_runs_t *fr, uint64_t off, uint64_t len,
                    const unsigned char *mem)
{
    HFDCP_TRY(hfdcp__grow(&fr->runs, &fr->cap, fr->n, sizeof *fr->runs,
                          "the snapshot's file runs"));
    fr->runs[fr->n++] = (run_t){off, len, mem};
    fr->sync = true;
    return HFDCP_OK;
}

/* The file runs of chunk i, copied to `mem`: one per row of its box
 * (after merging the dimensions it covers whole).  Sub-byte dtypes need
 * every run on whole bytes, as for a commit (HFDCP_ERR_UNSUPPORTED). */
static int chunk_runs(const hfdcp__commit *c, size_t i,
                      const unsigned char *mem, file_runs_t *fr)
{
    const hfdcp__wchunk *ch = &c->job.chunks[i];
    int64_t sh[HFDCP_MAX_NDIM], st[HFDCP_MAX_NDIM], n[HFDCP_MAX_NDIM];
    int64_t idx[HFDCP_MAX_NDIM] = {0};
    uint64_t bits = (uint64_t)hfdcp_dtype_bits(ch->dtype);
    int nd = hfdcp__collapse(ch->ndim, ch->shape, ch->offsets, ch->sizes, sh,
                             st, n);

    if (nd == 0) /* a scalar */
        return push_run(fr, c->plan.assign[i].offset, bits / 8, mem);
    for (;;) {
        uint64_t el = 0, len = (uint64_t)n[nd - 1] * bits;
        for (int d = 0; d < nd; d++)
            el = el * (uint64_t)sh[d] + (uint64_t)(st[d] + idx[d]);
        if ((el * bits) % 8 != 0 || len % 8 != 0)
            return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                                "tensor '%s': a %d-bit chunk whose rows do "
                                "not start and end on whole bytes",
                                ch->name, (int)bits);
        HFDCP_TRY(push_run(fr, c->plan.assign[i].offset + el * bits / 8,
                           len / 8, mem));
        mem += len / 8;
        int d = nd - 2;
        while (d >= 0 && ++idx[d] == n[d])
            idx[d--] = 0;
        if (d < 0)
            return HFDCP_OK;
    }
}

/* Copies the chosen chunks into a->copy and lists their runs per file;
 * rank 0 adds the headers unless `headers_written`.  Local. */
static int copy_direct(struct hfdcp__async *a, const bool *copied,
                       bool headers_written)
{
    const hfdcp__commit *c = &a->c;
    const hfdcp__wbuckets *b = &c->job.by_file;
    unsigned char *at = a->copy;

    for (size_t f = 0; f < c->plan.n_files; f++) {
        if (a->rank == 0 && !headers_written && c->plan.headers != NULL)
            HFDCP_TRY(push_run(&a->files[f], 0, c->plan.header_lens[f],
                               (unsigned char *)c->plan.headers[f]));
        for (size_t k = b->first[f]; k < b->first[f + 1]; k++) {
            size_t i = b->by_file[k];
            uint64_t n = written_bytes(c, i);
            if (!copied[i] || n == 0)
                continue;
            memcpy(at, c->job.chunks[i].data, n);
            if (a->snap != NULL)
                a->snap[i].data = at;
            HFDCP_TRY(chunk_runs(c, i, at, &a->files[f]));
            at += n;
        }
    }
    return HFDCP_OK;
}

/* Collective: the chunks not copied written now, not synced, by a
 * commit's transfers (from a plan in which only they are this rank's to
 * write), which also creates every file; without any such chunk on any
 * rank, the files are only created.  *headers_written: rank 0 wrote the
 * headers.  The files this rank wrote in are marked to be synced by the
 * helper thread.  Agreed. */
static int write_now(const hfdcp_writer *w, struct hfdcp__async *a,
                     const bool *copied, bool *headers_written)
{
    hfdcp__commit *c = &a->c;
    int any = 0, all = 0, rc = HFDCP_OK;

    for (size_t i = 0; i < w->n; i++)
        if (!copied[i] && written_bytes(c, i) > 0) {
            any = 1;
            a->files[c->plan.assign[i].file].sync = true;
        }
    if (MPI_Allreduce(&any, &all, 1, MPI_INT, MPI_MAX, w->comm) !=
        MPI_SUCCESS)
        rc = hfdcp__error(HFDCP_ERR_MPI, "agreeing on the snapshot's bound");
    HFDCP_TRY(hfdcp__agree(w->comm, rc));
    *headers_written = all != 0;
    for (size_t f = 0; all != 0 && w->rank == 0 && f < c->plan.n_files; f++)
        a->files[f].sync = true;
    if (all == 0) {
        for (size_t f = 0; rc == HFDCP_OK && f < c->plan.n_files; f++)
            rc = hfdcp__create_shared(w->comm, c->paths.tmp[f],
                                      c->plan.file_sizes[f]);
        return rc;
    }
    hfdcp__wplan now = c->plan;
    hfdcp__wjob job = c->job;
    now.assign = malloc((w->n ? w->n : 1) * sizeof *now.assign);
    if (now.assign != NULL) {
        memcpy(now.assign, c->plan.assign, w->n * sizeof *now.assign);
        for (size_t i = 0; i < w->n; i++)
            now.assign[i].write = now.assign[i].write && !copied[i];
    }
    rc = hfdcp__agree(w->comm, now.assign != NULL
                                   ? HFDCP_OK
                                   : hfdcp__nomem("the snapshot's plan"));
    job.plan = &now;
    if (rc == HFDCP_OK)
        rc = hfdcp__write_files(w->comm, w->info, &job, &c->paths, false);
    free(now.assign);
    return rc;
}

/* With checksums: the CRC parts of the chunks written now, from the
 * user's buffers before they may change; those of the copied chunks are
 * the helper thread's, from the copy (a->snap). */
static int crc_setup(const hfdcp_writer *w, struct hfdcp__async *a)
{
    size_t n = a->c.plan.n_tensors;

    if (!hfdcp__commit_checksums(w))
        return HFDCP_OK;
    a->parts = calloc(n ? n : 1, sizeof *a->parts);
    a->snap = malloc((w->n ? w->n : 1) * sizeof *a->snap);
    if (a->parts == NULL || a->snap == NULL)
        return hfdcp__nomem("the tensors' checksums");
    memcpy(a->snap, a->c.job.chunks, w->n * sizeof *a->snap);
    return HFDCP_OK;
}

/* Collective: steps 2 and 3 of the first comment, direct save.  Agreed. */
static int snapshot_direct(const hfdcp_writer *w, struct hfdcp__async *a)
{
    bool *copied = calloc(w->n + 1, sizeof *copied), headers = false;
    int rc = copied != NULL ? HFDCP_OK : hfdcp__nomem("the snapshot");

    a->copied = copied;
    a->files = calloc(a->c.plan.n_files + 1, sizeof *a->files);
    if (rc == HFDCP_OK && a->files == NULL)
        rc = hfdcp__nomem("the snapshot's file runs");
    if (rc == HFDCP_OK)
        rc = crc_setup(w, a);

    if (rc == HFDCP_OK)
        choose_copies(&a->c, w->snapshot_max_bytes, copied, &a->copy_bytes);
    if (rc == HFDCP_OK && a->copy_bytes > 0 &&
        (a->copy = malloc(a->copy_bytes)) == NULL)
        rc = hfdcp__error(HFDCP_ERR_NOMEM,
                          "hfdcp_writer_commit_async: no memory for the "
                          "snapshot of rank %d (%llu bytes; the save "
                          "option snapshot_max_bytes bounds it)",
                          w->rank, (unsigned long long)a->copy_bytes);
    rc = hfdcp__agree(w->comm, rc);
    if (rc == HFDCP_OK)
        rc = write_now(w, a, copied, &headers);
    if (rc == HFDCP_OK && a->parts != NULL)
        hfdcp__crc_parts(&a->c.plan, a->c.job.chunks, copied, false,
                         a->parts);
    if (rc == HFDCP_OK)
        rc = hfdcp__agree(w->comm, copy_direct(a, copied, headers));
    return rc;
}

/* ---- the snapshot: sharded save ---- */

/* Collective: the same for the shard files, by whole files: the last
 * ones that fit in the bound are copied, the others written now.
 * Agreed. */
static int snapshot_sharded(const hfdcp_writer *w, struct hfdcp__async *a)
{
    hfdcp__shards *s = &a->c.shards;
    hfdcp__wjob job = a->c.job;
    size_t k = s->n;
    uint64_t sum = 0;
    int rc;

    while (k > 0) {
        uint64_t n = hfdcp__shards_data_bytes(s, k - 1);
        if (w->snapshot_max_bytes != 0 && sum + n > w->snapshot_max_bytes)
            break;
        sum += n;
        k--;
    }
    a->copy_bytes = sum;
    hfdcp__shards_range(s, 0, k, &a->now);
    hfdcp__shards_range(s, k, s->n, &a->later);
    job.no_sync = true;
    rc = hfdcp__agree(w->comm, hfdcp__shards_write(&job, &a->now));
    if (rc == HFDCP_OK && sum > 0 && (a->copy = malloc(sum)) == NULL)
        rc = hfdcp__nomem("the snapshot of the shard files");
    if (rc == HFDCP_OK)
        for (size_t i = k, at = 0; i < s->n; i++) {
            hfdcp__shards_copy_data(s, i, a->copy + at);
            at += hfdcp__shards_data_bytes(s, i);
        }
    a->job = a->c.job;
    a->job.fault_file = a->fault_file;
    a->job.fault_step = a->fault_step;
    return hfdcp__agree(w->comm, rc);
}

/* ---- the API ---- */

static void async_free(struct hfdcp__async *a)
{
    if (a->files != NULL)
        for (size_t f = 0; f < a->c.plan.n_files; f++)
            free(a->files[f].runs);
    free(a->files);
    free(a->copied);
    free(a->snap);
    free(a->parts);
    free(a->copy);
    hfdcp__commit_free(&a->c);
    free(a);
}

int hfdcp_writer_commit_async(hfdcp_writer *w)
{
    struct hfdcp__async *a;
    int rc;

    if (w == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_commit_async: writer is NULL");
    a = calloc(1, sizeof *a);
    rc = hfdcp__commit_check(w, "hfdcp_writer_commit_async");
    if (rc == HFDCP_OK && a == NULL)
        rc = hfdcp__nomem("the asynchronous commit");
    rc = hfdcp__agree(w->comm, rc);
    if (rc != HFDCP_OK) {
        free(a);
        return rc;
    }
    a->sharded = w->sharded;
    a->rank = w->rank;
    a->fault_file = hfdcp__async_fault_file;
    a->fault_step = hfdcp__async_fault_step;
    rc = hfdcp__commit_prepare(w, &a->c);
    if (rc == HFDCP_OK) {
        rc = w->sharded ? snapshot_sharded(w, a) : snapshot_direct(w, a);
        if (rc != HFDCP_OK)
            hfdcp__commit_remove(w, &a->c);
    }
    if (rc != HFDCP_OK) {
        async_free(a);
        return rc;
    }
    w->snapshot_bytes = a->copy_bytes;
    w->async = a;
    start(a);
    return HFDCP_OK;
}

int hfdcp_writer_wait(hfdcp_writer *w)
{
    struct hfdcp__async *a;
    int rc;

    if (w == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_writer_wait: writer is NULL");
    if ((a = w->async) == NULL)
        return hfdcp__agree(
            w->comm, hfdcp__error(HFDCP_ERR_ARG, "%s",
                                  w->async_waited
                                      ? "hfdcp_writer_wait: the asynchronous "
                                        "commit was waited for already"
                                      : "hfdcp_writer_wait: no asynchronous "
                                        "commit to wait for "
                                        "(hfdcp_writer_commit_async was not "
                                        "called, or failed)"));
    w->async = NULL;
    w->async_waited = true;
    if (a->started)
        pthread_join(a->thread, NULL);
    rc = hfdcp__outcome_collect(&a->out, 1);
    if (a->parts != NULL) {
        rc = hfdcp__agree(w->comm, rc);
        if (rc == HFDCP_OK)
            rc = hfdcp__commit_put_crcs(w, &a->c, a->parts);
    }
    rc = hfdcp__commit_finish(w, &a->c, rc);
    async_free(a);
    return rc;
}

int hfdcp_writer_test(hfdcp_writer *w, int *done)
{
    if (w == NULL || done == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_writer_test: %s is NULL",
                            w == NULL ? "writer" : "done");
    if (w->async == NULL && !w->async_waited)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_test: no asynchronous commit was "
                            "started");
    *done = w->async == NULL || atomic_load(&w->async->done);
    return HFDCP_OK;
}

uint64_t hfdcp__writer_snapshot_bytes(const hfdcp_writer *w)
{
    return w->snapshot_bytes;
}
