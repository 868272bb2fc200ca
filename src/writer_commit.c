/*
 * writer_commit.c - the steps of a commit, shared by the synchronous
 * commit (writer.c) and the asynchronous one (writer_async.c): the checks
 * before it, the plan and the names, the writing (and, direct save, the
 * tensors' CRC-32C written into the headers last), the publication and
 * the consolidation that may follow, and the removal of this commit's
 * files after a failure.  Each step ends with an agreement: the same
 * status everywhere, the first failing rank's message on every rank.
 *
 * It uses writer_shards.c and writer_direct.c, never writer.c or
 * writer_async.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hfdcp_testing.h"
#include "writer_internal.h"

int hfdcp__writer_fault_file = -1;

/* Rank 0: consolidated_output_path must not be the shard directory under
 * another name (its publication would remove the shards). */
static int check_output_dir(const hfdcp_writer *w, const char *who)
{
    struct stat a, b;

    if (w->consolidated == NULL || stat(w->path, &a) != 0 ||
        stat(w->consolidated, &b) != 0)
        return HFDCP_OK;
    if (a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "%s: consolidated_output_path '%s' is the shard "
                            "directory '%s' itself",
                            who, w->consolidated, w->path);
    return HFDCP_OK;
}

int hfdcp__commit_check(hfdcp_writer *w, const char *who)
{
    int rc;

    if (w->committed)
        rc = hfdcp__error(HFDCP_ERR_ARG,
                          "%s: the writer has already committed", who);
    else if (w->first_error != HFDCP_OK)
        rc = hfdcp__error(w->first_error, "%s",
                          w->first_message ? w->first_message
                                           : "an earlier hfdcp_writer_add "
                                             "failed");
    else
        rc = w->rank == 0 ? check_output_dir(w, who) : HFDCP_OK;
    w->committed = true;
    return rc;
}

/* The commit's tag (rank 0 draws it), the files' temporary names, the
 * job and, sharded, this rank's shard files and headers.  Local. */
static int name_files(const hfdcp_writer *w, hfdcp__commit *c)
{
    uint64_t tag = 0;
    int rc, mpi_rc;

    c->job.plan = &c->plan;
    c->job.chunks = w->chunks;
    c->job.rank = w->rank;
    c->job.thread_count = w->thread_count;
    c->job.fault_file = hfdcp__writer_fault_file;
    c->job.fault_step = 2;
    c->job.checksums = w->checksums;
    if (w->rank == 0)
        tag = hfdcp__random_tag();
    mpi_rc = MPI_Bcast(&tag, 1, MPI_UINT64_T, 0, w->comm);
    rc = mpi_rc == MPI_SUCCESS
             ? HFDCP_OK
             : hfdcp__mpi_error(mpi_rc, "broadcasting the commit's tag");
    if (rc == HFDCP_OK)
        rc = hfdcp__paths_make(w->path, &c->plan, tag, &c->paths);
    if (rc == HFDCP_OK)
        rc = hfdcp__wbuckets_make(&c->plan, w->n, &c->job.by_file);
    if (rc == HFDCP_OK && w->sharded)
        rc = hfdcp__shards_make(&c->job, w->path, w->align, c->paths.tag,
                                &c->shards);
    return rc;
}

/* Rank 0: the headers, their CRC-32C filled in, written over the
 * placeholders of the files written and synced, which are synced again. */
static int rewrite_headers(const hfdcp__commit *c, int rank)
{
    int rc = HFDCP_OK;

    for (size_t f = 0; rc == HFDCP_OK && f < c->plan.n_files; f++) {
        const char *path = c->paths.tmp[f];
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return hfdcp__os_error(HFDCP_ERR_IO, errno,
                                   "opening '%s' on rank %d to write its "
                                   "checksums", path, rank);
        rc = hfdcp__pwrite_all(fd, c->plan.headers[f], c->plan.header_lens[f],
                               0, path, rank);
        if (close(fd) != 0 && rc == HFDCP_OK)
            rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                                 "closing '%s' on rank %d", path, rank);
        if (rc == HFDCP_OK)
            rc = hfdcp__flush_file(path, rank, false);
    }
    return rc;
}

int hfdcp__commit_put_crcs(const hfdcp_writer *w, hfdcp__commit *c,
                           const uint32_t *parts)
{
    size_t n = c->plan.n_tensors;
    uint32_t *sum = NULL;
    int rc = HFDCP_OK, mpi_rc;

    if (n > (size_t)INT_MAX)
        rc = hfdcp__error(HFDCP_ERR_RANGE, "%zu tensors: more checksums "
                          "than an MPI count", n);
    else if (w->rank == 0 && (sum = malloc((n ? n : 1) * sizeof *sum)) == NULL)
        rc = hfdcp__nomem("the tensors' checksums");
    HFDCP_TRY(hfdcp__agree(w->comm, rc));
    mpi_rc = MPI_Reduce(parts, sum, (int)n, MPI_UINT32_T, MPI_BXOR, 0,
                        w->comm);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "combining the tensors' checksums");
    if (rc == HFDCP_OK && w->rank == 0) {
        hfdcp__wplan_put_crcs(&c->plan, sum);
        rc = rewrite_headers(c, w->rank);
    }
    free(sum);
    return hfdcp__agree(w->comm, rc);
}

/* The CRC parts of the chunks this rank writes, computed by a helper
 * thread while the calling thread writes them (no MPI call in it). */
typedef struct {
    const hfdcp__wplan *plan;
    const hfdcp__wchunk *chunks;
    uint32_t *parts;
} crc_job;

static void *crc_main(void *arg)
{
    crc_job *j = arg;
    hfdcp__crc_parts(j->plan, j->chunks, NULL, false, j->parts);
    return NULL;
}

/* Direct save with checksums: the files written while a helper thread
 * computes this rank's CRC parts (on the calling thread afterwards when
 * none can be started), then the values written into the headers. */
static int write_with_crcs(const hfdcp_writer *w, hfdcp__commit *c)
{
    size_t n = c->plan.n_tensors;
    crc_job job = {&c->plan, w->chunks, calloc(n ? n : 1, sizeof(uint32_t))};
    pthread_t th;
    bool started = false;
    int rc;

    rc = hfdcp__agree(w->comm, job.parts != NULL
                                   ? HFDCP_OK
                                   : hfdcp__nomem("the tensors' checksums"));
    if (rc == HFDCP_OK) {
        started = pthread_create(&th, NULL, crc_main, &job) == 0;
        rc = hfdcp__write_files(w->comm, w->info, &c->job, &c->paths, true);
        if (started)
            pthread_join(th, NULL);
        else
            crc_main(&job);
    }
    if (rc == HFDCP_OK)
        rc = hfdcp__commit_put_crcs(w, c, job.parts);
    free(job.parts);
    return rc;
}

int hfdcp__commit_prepare(const hfdcp_writer *w, hfdcp__commit *c)
{
    int rc;

    HFDCP_TRY(hfdcp__wplan_make(w->comm, w->chunks, w->n,
                                hfdcp__file_map_files(w->file_map),
                                w->max_shard_bytes, w->align,
                                hfdcp__commit_checksums(w), &c->plan));
    HFDCP_TRY(hfdcp__agree(w->comm, name_files(w, c)));
    rc = w->rank == 0 ? hfdcp__make_dir(w->path) : HFDCP_OK;
    return hfdcp__agree(w->comm, rc);
}

int hfdcp__commit_write(const hfdcp_writer *w, hfdcp__commit *c)
{
    if (w->sharded)
        return hfdcp__agree(w->comm,
                            hfdcp__shards_write(&c->job, &c->shards));
    if (hfdcp__commit_checksums(w))
        return write_with_crcs(w, c);
    return hfdcp__write_files(w->comm, w->info, &c->job, &c->paths, true);
}

/* The files renamed into place (and the index, direct save).  Agreed
 * status. */
static int publish(const hfdcp_writer *w, hfdcp__commit *c)
{
    int rc;

    if (w->sharded)
        return hfdcp__shards_publish(w, &c->shards, c->paths.tag);
    rc = w->rank == 0 ? hfdcp__publish(w->path, &c->plan, &c->paths)
                      : HFDCP_OK;
    return hfdcp__agree(w->comm, rc);
}

/* After a failure before or during the publication: removes this commit's
 * files (temporary, or renamed by a failed sharded publication), then lets
 * no rank return before they are gone (a failing barrier changes nothing:
 * the commit has failed already). */
void hfdcp__commit_remove(const hfdcp_writer *w, const hfdcp__commit *c)
{
    if (w->rank == 0 && !w->sharded)
        for (size_t f = 0; f < c->paths.n; f++)
            unlink(c->paths.tmp[f]);
    hfdcp__shards_remove(&c->shards);
    (void)MPI_Barrier(w->comm);
}

int hfdcp__commit_finish(const hfdcp_writer *w, hfdcp__commit *c, int rc)
{
    rc = hfdcp__agree(w->comm, rc);
    if (rc == HFDCP_OK)
        rc = publish(w, c);
    if (rc != HFDCP_OK) {
        hfdcp__commit_remove(w, c);
        return rc;
    }
    /* Published: a failed consolidation keeps the shards. */
    if (w->consolidated != NULL)
        rc = hfdcp__consolidate_shards(w, &c->plan);
    return rc;
}

void hfdcp__commit_free(hfdcp__commit *c)
{
    free(c->job.by_file.first);
    free(c->job.by_file.by_file);
    hfdcp__shards_free(&c->shards);
    hfdcp__paths_free(&c->paths);
    hfdcp__wplan_free(&c->plan);
}
