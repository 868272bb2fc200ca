/*
 * writer_direct.c - the direct save's writing: every file of the plan,
 * under a temporary name in the target directory, one collective transfer
 * per rank combining all of its chunks in that file (rank 0 adds the
 * header), then set size, sync, close, the files one after another.
 *
 * With thread_count > 1 the sync is not collective: after the close, each
 * rank hands the file to helper threads that fsync it while the calling
 * thread writes the next file (helper threads make no MPI call).
 *
 * Also what the writer's other files share (writer_internal.h): this
 * rank's chunks grouped by file, collapse, the parts of the tensors'
 * CRC-32C this rank writes, and the outcome of a job run by a helper
 * thread.  It calls neither writer.c nor writer_shards.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "writer_internal.h"

const int64_t hfdcp__zeros[HFDCP_MAX_NDIM] = {0};

int hfdcp__collapse(int ndim, const int64_t *shape, const int64_t *off,
                    const int64_t *size, int64_t *cshape, int64_t *coff,
                    int64_t *csize)
{
    int64_t rs[HFDCP_MAX_NDIM], ro[HFDCP_MAX_NDIM], rz[HFDCP_MAX_NDIM];
    int64_t s, o, z;
    int m = 0;

    if (ndim == 0)
        return 0;
    s = shape[ndim - 1];
    o = off[ndim - 1];
    z = size[ndim - 1];
    for (int d = ndim - 2; d >= 0; d--) {
        if (z == s) { /* the inner block is whole: fold dim d into it */
            o = off[d] * s;
            z = size[d] * s;
            s = shape[d] * s;
        } else {
            rs[m] = s;
            ro[m] = o;
            rz[m] = z;
            m++;
            s = shape[d];
            o = off[d];
            z = size[d];
        }
    }
    rs[m] = s;
    ro[m] = o;
    rz[m] = z;
    m++;
    for (int i = 0; i < m; i++) {
        cshape[i] = rs[m - 1 - i];
        coff[i] = ro[m - 1 - i];
        csize[i] = rz[m - 1 - i];
    }
    return m;
}

/* Adds chunk c's runs to r, in tensor order: after collapse, the last
 * dimension is a run in memory and in the tensor (whole bytes: the
 * writer refuses sub-byte boxes that are not). */
static void add_runs(const hfdcp__wchunk *c, hfdcp__crc32c_runs *r)
{
    int64_t shape[HFDCP_MAX_NDIM], off[HFDCP_MAX_NDIM], size[HFDCP_MAX_NDIM];
    int64_t idx[HFDCP_MAX_NDIM] = {0};
    int bits = hfdcp_dtype_bits(c->dtype);
    int m = hfdcp__collapse(c->ndim, c->shape, c->offsets, c->sizes, shape,
                            off, size);
    const unsigned char *mem = c->data;
    uint64_t run;

    if (m == 0) { /* a scalar */
        hfdcp__crc32c_runs_add(r, 0, mem, (size_t)((bits + 7) / 8));
        return;
    }
    for (int d = 0; d < m; d++)
        if (size[d] == 0)
            return;
    run = (uint64_t)size[m - 1] * (uint64_t)bits / 8;
    for (;;) {
        uint64_t at = 0; /* the run's first element in the tensor */
        int d;
        for (d = 0; d < m; d++)
            at = at * (uint64_t)shape[d] + (uint64_t)(off[d] + idx[d]);
        hfdcp__crc32c_runs_add(r, at * (uint64_t)bits / 8, mem, (size_t)run);
        mem += run;
        for (d = m - 2; d >= 0 && ++idx[d] == size[d]; d--)
            idx[d] = 0;
        if (d < 0)
            return;
    }
}

void hfdcp__crc_parts(const hfdcp__wplan *plan, const hfdcp__wchunk *chunks,
                      const bool *mask, bool want, uint32_t *parts)
{
    for (size_t i = 0; i < plan->n_assign; i++) {
        const hfdcp__wassign *a = &plan->assign[i];
        hfdcp__crc32c_runs r = {0};
        if (!a->write || (mask != NULL && mask[i] != want))
            continue;
        add_runs(&chunks[i], &r);
        /* A tensor's length from its chunk: dtype x shape. */
        uint64_t n = (uint64_t)hfdcp_dtype_bits(chunks[i].dtype);
        for (int d = 0; d < chunks[i].ndim; d++)
            n *= (uint64_t)chunks[i].shape[d];
        parts[a->tensor] ^= hfdcp__crc32c_runs_part(&r, (n + 7) / 8);
    }
}

int hfdcp__wbuckets_make(const hfdcp__wplan *plan, size_t n,
                         hfdcp__wbuckets *b)
{
    size_t nf = plan->n_files;

    b->first = calloc(nf + 1, sizeof *b->first);
    b->by_file = malloc((n ? n : 1) * sizeof *b->by_file);
    if (b->first == NULL || b->by_file == NULL)
        return hfdcp__nomem("the write lists");
    for (size_t i = 0; i < n; i++)
        b->first[plan->assign[i].file + 1]++;
    for (size_t f = 0; f < nf; f++)
        b->first[f + 1] += b->first[f];
    {
        size_t *at = malloc((nf ? nf : 1) * sizeof *at);
        if (at == NULL)
            return hfdcp__nomem("the write lists");
        memcpy(at, b->first, nf * sizeof *at);
        for (size_t i = 0; i < n; i++)
            b->by_file[at[plan->assign[i].file]++] = i;
        free(at);
    }
    return HFDCP_OK;
}

/* ---- one file, collectively ---- */

/* The pieces this rank writes in file f: its chunks there that it was
 * chosen to write (straight from the chunks' memory, trailing whole
 * dimensions merged), and on rank 0 the header at offset 0. */
static int build_pieces(const hfdcp__wjob *job, size_t f,
                        hfdcp__piece **out, int64_t **out_dims,
                        size_t *out_n)
{
    const hfdcp__wplan *plan = job->plan;
    const hfdcp__wbuckets *b = &job->by_file;
    size_t a = b->first[f], e = b->first[f + 1], np = 0, nd = 0;
    hfdcp__piece *pieces = malloc((e - a + 1) * sizeof *pieces);
    int64_t *dims;

    for (size_t k = a; k < e; k++)
        nd += 3 * (size_t)(job->chunks[b->by_file[k]].ndim);
    dims = malloc((nd + 3) * sizeof *dims);
    if (pieces == NULL || dims == NULL) {
        free(pieces);
        free(dims);
        return hfdcp__nomem("the write pieces");
    }
    nd = 0;
    if (job->rank == 0 && plan->headers != NULL) {
        dims[0] = (int64_t)plan->header_lens[f];
        hfdcp__piece_bytes(&pieces[np++], 0, plan->headers[f], &dims[0]);
        nd = 1;
    }
    for (size_t k = a; k < e; k++) {
        size_t i = b->by_file[k];
        const hfdcp__wchunk *c = &job->chunks[i];
        hfdcp__piece *p;
        bool empty = false;

        if (!plan->assign[i].write)
            continue;
        for (int d = 0; d < c->ndim; d++)
            empty = empty || c->sizes[d] == 0;
        if (empty)
            continue;
        p = &pieces[np++];
        p->file_offset = plan->assign[i].offset;
        p->mem = (void *)c->data; /* only read from: this is a write */
        p->bits = hfdcp_dtype_bits(c->dtype);
        p->ndim = hfdcp__collapse(c->ndim, c->shape, c->offsets, c->sizes,
                                  dims + nd, dims + nd + c->ndim,
                                  dims + nd + 2 * c->ndim);
        p->fshape = dims + nd;
        p->fstart = dims + nd + c->ndim;
        p->count = p->mshape = dims + nd + 2 * c->ndim;
        p->mstart = hfdcp__zeros;
        nd += 3 * (size_t)c->ndim;
    }
    *out = pieces;
    *out_dims = dims;
    *out_n = np;
    return HFDCP_OK;
}

/* Collective: writes file f under its temporary name, sets its size and
 * closes it; with `sync`, MPI_File_sync before the close (otherwise the
 * caller makes the file durable).  Agreed status. */
static int write_file(MPI_Comm comm, MPI_Info info, const hfdcp__wjob *job,
                      const hfdcp__paths *paths, size_t f, bool sync)
{
    const hfdcp__wplan *plan = job->plan;
    hfdcp__piece *pieces = NULL;
    int64_t *dims = NULL;
    size_t np = 0;
    hfdcp__mfile *mf = NULL;
    int rc, rc2;

    rc = hfdcp__agree(comm, build_pieces(job, f, &pieces, &dims, &np));
    if (rc == HFDCP_OK)
        rc = hfdcp__create_shared(comm, paths->tmp[f], plan->file_sizes[f]);
    if (rc == HFDCP_OK)
        rc = hfdcp__mfile_open(comm, paths->tmp[f], true, info, &mf);
    if (rc == HFDCP_OK) {
        rc = hfdcp__mfile_transfer(mf, true, pieces, np);
        if (rc == HFDCP_OK)
            rc = hfdcp__mfile_set_size(mf, plan->file_sizes[f]);
        if (rc == HFDCP_OK && sync)
            rc = hfdcp__mfile_sync(mf);
        rc2 = hfdcp__mfile_close(mf);
        if (rc == HFDCP_OK)
            rc = rc2;
    }
    free(pieces);
    free(dims);
    return rc;
}

/* ---- helper threads (no MPI calls in them) ---- */

void hfdcp__outcome_set(hfdcp__outcome *o, int status)
{
    o->status = status;
    if (status != HFDCP_OK)
        o->message = hfdcp__strdup(hfdcp_last_error());
}

int hfdcp__outcome_collect(hfdcp__outcome *o, size_t n)
{
    int rc = HFDCP_OK;

    for (size_t i = 0; i < n; i++) {
        if (rc == HFDCP_OK && o[i].status != HFDCP_OK)
            rc = hfdcp__error(o[i].status, "%s",
                              o[i].message ? o[i].message
                                           : "a helper thread failed (no "
                                             "memory for its message)");
        free(o[i].message);
        o[i].message = NULL;
    }
    return rc;
}

int hfdcp__pwrite_all(int fd, const void *data, uint64_t len, uint64_t off,
                      const char *path, int rank)
{
    const char *p = data;

    while (len > 0) {
        size_t n = len > ((uint64_t)1 << 30) ? (size_t)1 << 30 : (size_t)len;
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return hfdcp__os_error(HFDCP_ERR_IO, errno,
                                   "writing %zu bytes at offset %" PRIu64
                                   " of '%s' on rank %d",
                                   n, off, path, rank);
        if (k == 0)
            return hfdcp__error(HFDCP_ERR_IO,
                                "writing '%s' on rank %d: no progress at "
                                "offset %" PRIu64,
                                path, rank, off);
        p += k;
        off += (uint64_t)k;
        len -= (uint64_t)k;
    }
    return HFDCP_OK;
}

/* What MPI_File_sync does for this process's writes, and more. */
int hfdcp__flush_file(const char *path, int rank, bool fault)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC), rc = HFDCP_OK;

    if (fd < 0)
        return hfdcp__os_error(HFDCP_ERR_IO, errno,
                               "opening '%s' to sync it on rank %d", path,
                               rank);
    if (fault)
        rc = hfdcp__os_error(HFDCP_ERR_IO, EIO,
                             "syncing '%s' on rank %d (test fault)", path,
                             rank);
    else if (fsync(fd) != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "syncing '%s' on rank %d",
                             path, rank);
    if (close(fd) != 0 && rc == HFDCP_OK)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "closing '%s' on rank %d",
                             path, rank);
    return rc;
}

/* Direct save with thread_count > 1: files closed by the calling thread
 * wait here to be flushed by n_threads helper threads.  At most n_threads
 * files are queued or being flushed: the caller blocks before handing
 * over one more, so thread_count files are in flight per rank. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    int n_threads;
    int rank;
    int fault_file;       /* the file whose flush fails (test hook), or -1 */
    const char **paths;   /* per file (the commit's temporary paths) */
    hfdcp__outcome *outcomes; /* per file */
    size_t *queue;        /* file indices; head..tail */
    size_t head, tail;
    size_t busy;          /* queued + being flushed */
    bool closing;
} flusher_t;

static void *flusher_main(void *arg)
{
    flusher_t *fl = arg;

    pthread_mutex_lock(&fl->mu);
    for (;;) {
        size_t f;
        int rc;
        while (fl->head == fl->tail && !fl->closing)
            pthread_cond_wait(&fl->cv, &fl->mu);
        if (fl->head == fl->tail)
            break;
        f = fl->queue[fl->head++];
        pthread_mutex_unlock(&fl->mu);
        rc = hfdcp__flush_file(fl->paths[f], fl->rank,
                        (int64_t)f == (int64_t)fl->fault_file);
        pthread_mutex_lock(&fl->mu);
        hfdcp__outcome_set(&fl->outcomes[f], rc);
        fl->busy--;
        pthread_cond_broadcast(&fl->cv);
    }
    pthread_mutex_unlock(&fl->mu);
    return NULL;
}

/* Starts up to n helper threads for n_files files.  If no thread can be
 * started, files are flushed by the caller in flusher_add (same result,
 * no overlap).  Local. */
static int flusher_start(flusher_t *fl, int n, const hfdcp__wjob *job,
                         char *const *paths, size_t n_files)
{
    memset(fl, 0, sizeof *fl);
    fl->rank = job->rank;
    fl->fault_file = job->fault_file;
    fl->paths = (const char **)paths;
    fl->outcomes = calloc(n_files ? n_files : 1, sizeof *fl->outcomes);
    fl->queue = malloc((n_files ? n_files : 1) * sizeof *fl->queue);
    fl->threads = malloc((size_t)n * sizeof *fl->threads);
    if (fl->outcomes == NULL || fl->queue == NULL || fl->threads == NULL) {
        free(fl->outcomes);
        free(fl->queue);
        free(fl->threads);
        return hfdcp__nomem("the flushing threads");
    }
    pthread_mutex_init(&fl->mu, NULL);
    pthread_cond_init(&fl->cv, NULL);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&fl->threads[i], NULL, flusher_main, fl) != 0)
            break;
        fl->n_threads++;
    }
    return HFDCP_OK;
}

/* Hands file f (closed) over to be flushed; waits while the helper
 * threads already have as many files as there are threads. */
static void flusher_add(flusher_t *fl, size_t f)
{
    if (fl->n_threads == 0) {
        hfdcp__outcome_set(&fl->outcomes[f],
                           hfdcp__flush_file(fl->paths[f], fl->rank,
                                      (int64_t)f ==
                                          (int64_t)fl->fault_file));
        return;
    }
    pthread_mutex_lock(&fl->mu);
    while (fl->busy >= (size_t)fl->n_threads)
        pthread_cond_wait(&fl->cv, &fl->mu);
    fl->queue[fl->tail++] = f;
    fl->busy++;
    pthread_cond_broadcast(&fl->cv);
    pthread_mutex_unlock(&fl->mu);
}

/* Waits for every flush, stops the threads, and returns the first failure
 * (in file order) on the calling thread.  Local. */
static int flusher_finish(flusher_t *fl, size_t n_files)
{
    int rc;

    pthread_mutex_lock(&fl->mu);
    fl->closing = true;
    pthread_cond_broadcast(&fl->cv);
    pthread_mutex_unlock(&fl->mu);
    for (int i = 0; i < fl->n_threads; i++)
        pthread_join(fl->threads[i], NULL);
    rc = hfdcp__outcome_collect(fl->outcomes, n_files);
    pthread_cond_destroy(&fl->cv);
    pthread_mutex_destroy(&fl->mu);
    free(fl->threads);
    free(fl->queue);
    free(fl->outcomes);
    return rc;
}

/* ---- every file ---- */

/* With thread_count > 1, file f is flushed to disk by helper threads while
 * file f+1 is written; every flush has ended (and its outcome is agreed)
 * when this returns. */
int hfdcp__write_files(MPI_Comm comm, MPI_Info info, const hfdcp__wjob *job,
                       const hfdcp__paths *paths, bool durable)
{
    const hfdcp__wplan *plan = job->plan;
    flusher_t fl;
    bool threaded = durable && job->thread_count > 1;
    int rc = HFDCP_OK, frc;

    if (threaded) {
        int local = flusher_start(&fl, job->thread_count - 1, job,
                                  paths->tmp, plan->n_files);
        rc = hfdcp__agree(comm, local);
        if (rc != HFDCP_OK) {
            if (local == HFDCP_OK) /* another rank failed: stop ours */
                (void)flusher_finish(&fl, 0);
            return rc;
        }
    }
    for (size_t f = 0; f < plan->n_files && rc == HFDCP_OK; f++) {
        rc = write_file(comm, info, job, paths, f, durable && !threaded);
        if (rc == HFDCP_OK && threaded)
            flusher_add(&fl, f);
    }
    if (threaded) {
        frc = flusher_finish(&fl, plan->n_files);
        if (rc == HFDCP_OK)
            rc = hfdcp__agree(comm, frc);
    }
    return rc;
}
